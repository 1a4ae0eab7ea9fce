"""Limits: a cap on requests in flight that refuses at once instead of queueing, and each
upstream's own connect, first-byte (idle) and total timeouts."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator

import aiohttp
import pytest

from proxy.state import STATE
from tests.support.configs import basic_config, blackholed_upstream, fault_config
from tests.support.http import GOOD, MESSAGES, data_events, exchange
from tests.support.keys import AUTH, CLIENT_KEY
from tests.support.metrics import samples_of, scrape, total
from tests.support.pool import pool_counts
from tests.support.processes import Live, live_process
from tests.support.servers import Blackhole, FakeUpstream, RunningProxy, StartProxy
from tests.support.waiting import eventually

# ----------------------------------------------------------------------------- in flight


@pytest.fixture
async def capped(fake_upstream: FakeUpstream, start_proxy: StartProxy) -> RunningProxy:
    config = fault_config(
        fake_upstream.url,
        server={"max_in_flight": 2},
        routes={"held": ("fake", "ft-stream-stall-30000")},  # 30 s mid-stream
    )
    return await start_proxy(config)


async def test_beyond_max_in_flight_the_proxy_refuses_at_once(
    capped: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    state = capped.app[STATE]
    held = {"model": "held", "messages": MESSAGES, "stream": True}
    async with aiohttp.ClientSession() as session:
        streams = [
            await session.post(f"{capped.url}/v1/chat/completions", json=held, headers=AUTH)
            for _ in range(2)
        ]
        for stream in streams:
            assert data_events(await stream.content.readuntil(b"\n\n"))
        assert state.in_flight == 2
        forwarded = len(fake_upstream.received)

        # Both slots are taken for 30 s: a queued request would wait that long (the guard
        # turns a wait into a failure); a refused one is answered while they are still held.
        async with asyncio.timeout(5):
            refused = await exchange(capped.url, GOOD)
        assert refused.status == 503
        assert refused.headers["retry-after"] == "1"
        error = json.loads(refused.body)["error"]
        assert error["code"] == "too_many_requests_in_flight"
        assert len(fake_upstream.received) == forwarded  # never forwarded
        during = await scrape(capped.url)  # the operations paths are not capped
        assert total(during, "tuned_proxy_in_flight_requests") == 2
        assert total(during, "tuned_proxy_requests_total", code="503") == 1
        async with session.get(f"{capped.url}/healthz") as health:
            assert health.status == 200

        for stream in streams:
            stream.close()
    await eventually(lambda: state.in_flight == 0, "the held streams are let go")
    assert (await exchange(capped.url, GOOD)).status == 200


async def test_connections_that_send_no_body_take_no_slot(capped: RunningProxy) -> None:
    """70 connections send their headers and never their body: the requests that do send one
    are served meanwhile (a slot is taken once the body is in, not before)."""
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: p\r\n"
        f"Authorization: Bearer {CLIENT_KEY}\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n"
    ).encode()
    silent = []
    for _ in range(70):
        _, writer = await asyncio.open_connection("127.0.0.1", int(capped.url.rsplit(":")[-1]))
        writer.write(head)
        silent.append(writer)
    try:
        async with asyncio.timeout(5):
            outcomes = [await exchange(capped.url, GOOD) for _ in range(3)]
        assert [outcome.status for outcome in outcomes] == [200, 200, 200]
        assert capped.app[STATE].in_flight == 0
    finally:
        for writer in silent:
            writer.close()


async def test_bodies_in_flight_are_bounded_in_bytes(
    fake_upstream: FakeUpstream, start_proxy: StartProxy
) -> None:
    """Two bodies of 400 KB arriving slowly hold 800 KB of a 1 MB budget: a third is refused
    (503) as its bytes arrive, and once they are gone the budget is whole again."""
    config = basic_config(fake_upstream.url)
    config["server"] = {"max_body_bytes": 512 * 1024, "max_bytes_in_flight": 1024 * 1024}
    proxy = await start_proxy(config)
    port = int(proxy.url.rsplit(":")[-1])
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: p\r\n"
        f"Authorization: Bearer {CLIENT_KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {500 * 1024}\r\n\r\n"
    ).encode()
    state = proxy.app[STATE]
    held = []
    for _ in range(2):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head + b'{"model": "chat", "x": "' + b"a" * 400 * 1024)
        held.append((reader, writer))
    await eventually(lambda: state.bytes_in_flight.held >= 800 * 1024, "800 KB held")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + b'{"model": "chat", "x": "' + b"a" * 400 * 1024)
    async with asyncio.timeout(5):
        status_line = await reader.readline()
    assert b" 503 " in status_line
    writer.close()
    for _, other in held:
        other.close()
    await eventually(lambda: state.bytes_in_flight.held == 0, "the bodies are let go")
    assert (await exchange(proxy.url, GOOD)).status == 200


# ----------------------------------------------------------------------------- timeouts


@pytest.fixture
async def timed(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, blackhole: Blackhole
) -> RunningProxy:
    """Pairs of upstreams on the same fake, one timeout apart."""
    config = fault_config(
        fake_upstream.url,
        upstreams={
            "quick": {"idle_timeout_s": 0.2},
            "patient": {"idle_timeout_s": 5},
            "brief": {"timeout_s": 0.5},
            "long": {"timeout_s": 10},
            "hole": blackholed_upstream(
                blackhole.port, connect_timeout_s=0.2, idle_timeout_s=10, timeout_s=20
            ),
        },
        routes={
            "quick-stall": ("quick", "ft-stall-600"),  # 0.6 s before the status line
            "patient-stall": ("patient", "ft-stall-600"),
            "brief-slow": ("brief", "ft-slow-100"),  # a chunk every 100 ms, about 1.1 s
            "long-slow": ("long", "ft-slow-100"),
            "hole": ("hole", "m"),
        },
    )
    return await start_proxy(config)


async def test_the_first_byte_timeout_is_the_upstreams_own(timed: RunningProxy) -> None:
    quick = await exchange(timed.url, {"model": "quick-stall", "messages": MESSAGES})
    assert quick.status == 504
    assert json.loads(quick.body)["error"]["code"] == "upstream_timeout"
    patient = await exchange(timed.url, {"model": "patient-stall", "messages": MESSAGES})
    assert patient.status == 200
    samples = samples_of(timed)
    assert total(samples, "tuned_proxy_upstream_errors_total", upstream="quick") == 1
    assert total(samples, "tuned_proxy_upstream_errors_total", upstream="patient") == 0


async def test_the_total_timeout_is_the_upstreams_own(timed: RunningProxy) -> None:
    """No pause is long, but the whole stream outlasts `timeout_s`: it ends with an error."""
    brief = await exchange(timed.url, {"model": "brief-slow", "messages": MESSAGES, "stream": True})
    assert brief.status == 200
    events = data_events(brief.body)
    assert json.loads(events[-1])["error"]["code"] == "upstream_timeout"
    full = await exchange(timed.url, {"model": "long-slow", "messages": MESSAGES, "stream": True})
    assert data_events(full.body)[-1] == b"[DONE]"
    samples = samples_of(timed)
    assert total(samples, "tuned_proxy_upstream_errors_total", upstream="brief", reason="timeout")
    assert total(samples, "tuned_proxy_upstream_errors_total", upstream="long") == 0


async def test_the_connect_timeout_is_the_upstreams_own(timed: RunningProxy) -> None:
    """The connection never completes; the connect timeout (0.2 s) answers, not the idle (10 s)
    or total (20 s) ones: the guard below fails the test long before those."""
    async with asyncio.timeout(5):
        outcome = await exchange(timed.url, {"model": "hole", "messages": MESSAGES})
    assert outcome.status == 504
    assert json.loads(outcome.body)["error"]["code"] == "upstream_timeout"
    samples = samples_of(timed)
    assert total(samples, "tuned_proxy_upstream_errors_total", upstream="hole", reason="timeout")
    assert pool_counts(timed.app[STATE].upstreams) == (0, 0)


# ----------------------------------------------------------------------------- memory under abuse


def rss(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as status:
        kilobytes = next(line.split()[1] for line in status if line.startswith(f"{field}:"))
    return int(kilobytes) * 1024


def schema_request(index: int, properties: int) -> bytes:
    """A new function of `properties` empty properties, its call forced: the fake model
    answers it, so the proxy checks the arguments against this schema."""
    name = f"f{index}"
    parameters = {"type": "object", "properties": {f"p{i}_{index}": {} for i in range(properties)}}
    tool = {"type": "function", "function": {"name": name, "parameters": parameters}}
    choice = {"type": "function", "function": {"name": name}}
    body = {"model": "chat", "messages": MESSAGES, "tools": [tool], "tool_choice": choice}
    return json.dumps(body).encode()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with live_process(tmp_path_factory.mktemp("limits")) as running:
        yield running


@pytest.mark.slow
async def test_distinct_client_schemas_do_not_grow_the_process(live: Live) -> None:
    """150 new 58 KB schemas, each checked: the validators' cache holds ~32 MB of them, where
    it used to keep 256 of any size (~2 MB each here: 300 MB)."""
    proxy = live.proxy
    headers = {**AUTH, "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        for warm in range(3):
            async with session.post(
                f"{proxy.url}/v1/chat/completions", data=schema_request(-warm, 10), headers=headers
            ) as answer:
                assert answer.status == 200
        before = rss(proxy.proc.pid)
        for index in range(150):
            async with session.post(
                f"{proxy.url}/v1/chat/completions",
                data=schema_request(index, 4000),
                headers=headers,
            ) as answer:
                assert answer.status == 200, await answer.text()
                assert (await answer.json())["choices"][0]["finish_reason"] == "tool_calls"
    grown = rss(proxy.proc.pid) - before
    assert grown < 96 * 1024 * 1024, f"{grown / 2**20:.0f} MB"


@pytest.mark.slow
async def test_a_burst_of_bodies_of_tiny_values_is_refused_before_it_is_parsed(live: Live) -> None:
    """16 bodies of 4 MB of `{}` at once (1.3 million values each, ~95 MB once parsed): each is
    a 400 before it is parsed, and the peak memory grows by about the bodies' bytes."""
    proxy = live.proxy
    count = (4 * 1024 * 1024 - 100) // 3
    tools = b"[" + b",".join([b"{}"] * count) + b"]"
    body = b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "tools": '
    body += tools + b"}"
    peak_before = rss(proxy.proc.pid, "VmHWM")
    connector = aiohttp.TCPConnector(limit=0)
    headers = {**AUTH, "Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post() -> tuple[int, str]:
            async with session.post(
                f"{proxy.url}/v1/chat/completions", data=io.BytesIO(body), headers=headers
            ) as answer:
                return answer.status, (await answer.json())["error"]["code"]

        outcomes = await asyncio.gather(*(post() for _ in range(16)))
        async with asyncio.timeout(5), session.get(f"{proxy.url}/healthz") as health:
            assert health.status == 200
    assert set(outcomes) == {(400, "too_many_json_values")}
    peak_grown = rss(proxy.proc.pid, "VmHWM") - peak_before
    assert peak_grown < 160 * 1024 * 1024, f"{peak_grown / 2**20:.0f} MB"
