"""The client misbehaving: it leaves mid-stream, sends its body slowly, holds idle connections,
sends a huge body or huge headers, malformed HTTP, or valid JSON of the wrong shape.

Each answer is OpenAI's error format, counted, and leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import structlog
from aiohttp import web

from proxy.app import build_app
from proxy.config import load_config
from proxy.server import bound_port, start_site
from proxy.state import STATE
from tests.support.configs import basic_config, fault_config
from tests.support.http import (
    CHAT,
    MESSAGES,
    data_events,
    exchange,
    json_request,
    raw_exchange,
    request_head,
)
from tests.support.keys import AUTH, CLIENT_KEY, UPSTREAM_KEY
from tests.support.metrics import samples_of, scrape, total
from tests.support.pool import pool_counts
from tests.support.processes import Live, back_at_rest, live_process
from tests.support.servers import (
    FakeUpstream,
    RunningProxy,
    StartProxy,
    open_connections,
    start_fake_upstream,
)
from tests.support.waiting import eventually

FULL_POLICY_ROUTE = "full"  # support-full: identical tools, system prompt, parallel_tool_calls


@pytest.fixture
async def proxy(fake_upstream: FakeUpstream, start_proxy: StartProxy) -> RunningProxy:
    full_policy = {
        "variants": [{"name": "v", "upstream": "fake", "model": "m", "policy": "support-full"}]
    }
    config = fault_config(
        fake_upstream.url,
        server={"body_timeout_s": 0.3, "max_body_bytes": 64 * 1024},
        routes={
            "stalled": ("fake", "ft-stall-30000"),
            "stream-stalled": ("fake", "ft-stream-stall-30000"),
            FULL_POLICY_ROUTE: full_policy,
        },
    )
    return await start_proxy(config)


# ----------------------------------------------------------------------------- disconnects


async def test_a_client_leaving_mid_stream_cancels_the_upstream_request_at_once(
    proxy: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    """The upstream would stay silent for 30 s; its connection closes as soon as the client's."""
    state = proxy.app[STATE]
    tasks = len(asyncio.all_tasks())
    before = samples_of(proxy)
    body = {"model": "stream-stalled", "messages": MESSAGES, "stream": True}
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{proxy.url}{CHAT}", json=body, headers=AUTH)
        assert response.status == 200
        assert (await response.content.readuntil(b"\n\n")).startswith(b"data: {")
        assert state.in_flight == 1
        assert fake_upstream.open_connections == 1
        response.close()  # the client goes away with the stream half read

    await eventually(lambda: fake_upstream.open_connections == 0, "the upstream request ended")
    await eventually(lambda: state.in_flight == 0, "nothing in flight")
    assert pool_counts(state.upstreams) == (0, 0)
    after = samples_of(proxy)
    requests = total(after, "tuned_proxy_requests_total") - total(
        before, "tuned_proxy_requests_total"
    )
    assert requests == 1
    assert total(after, "tuned_proxy_requests_total", route="stream-stalled", code="200") == 1
    assert total(after, "tuned_proxy_upstream_errors_total") == 0  # the upstream did no wrong
    assert total(after, "tuned_proxy_in_flight_requests") == 0
    await eventually(lambda: len(asyncio.all_tasks()) <= tasks, "no task left behind")
    assert (await exchange(proxy.url, {"model": "chat", "messages": MESSAGES})).status == 200


async def test_a_client_leaving_before_the_answer_is_counted_499(
    proxy: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    state = proxy.app[STATE]
    body = {"model": "stalled", "messages": MESSAGES}
    async with aiohttp.ClientSession() as session:
        request = asyncio.ensure_future(session.post(f"{proxy.url}{CHAT}", json=body, headers=AUTH))
        await eventually(lambda: fake_upstream.open_connections == 1, "the upstream is asked")
        request.cancel()  # the client gives up while the upstream says nothing
        with pytest.raises(asyncio.CancelledError):
            await request
    await eventually(lambda: fake_upstream.open_connections == 0, "the upstream request ended")
    await eventually(lambda: state.in_flight == 0, "nothing in flight")
    samples = samples_of(proxy)
    assert total(samples, "tuned_proxy_requests_total", route="stalled", code="499") == 1
    assert total(samples, "tuned_proxy_upstream_errors_total") == 0


# ----------------------------------------------------------------------------- slow and idle


async def test_a_body_sent_too_slowly_gets_408(
    proxy: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    """The headers promise 1000 bytes; 16 arrive, then nothing (`server.body_timeout_s`)."""
    answer = await raw_exchange(proxy.url, request_head(length=1000) + b'{"model": "chat"')
    assert answer.status == 408
    assert answer.error()["code"] == "request_timeout"
    assert fake_upstream.received == []
    samples = samples_of(proxy)
    assert total(samples, "tuned_proxy_requests_total", code="408") == 1


async def test_idle_and_trickling_connections_are_closed_and_block_nobody(
    fake_upstream: FakeUpstream, start_proxy: StartProxy
) -> None:
    """Connections that send nothing, or headers a byte at a time, are closed after the idle
    timeout; meanwhile the proxy serves everyone else."""
    running = await start_proxy(basic_config(fake_upstream.url))
    app = build_app(load_config(running.config_path))  # its own app, with a short idle timeout
    runner = await start_site(app, "127.0.0.1", 0, idle_timeout_s=1.0)
    url = f"http://127.0.0.1:{bound_port(runner)}"
    try:
        idle = [await asyncio.open_connection("127.0.0.1", bound_port(runner)) for _ in range(50)]
        _, trickler = idle[0]
        trickler.write(b"POST /v1/chat/completions HTTP/1.1\r\nHo")  # and never the rest
        await eventually(lambda: open_connections(runner) == 50, "50 connections open")
        assert (await exchange(url, {"model": "chat", "messages": MESSAGES})).status == 200
        async with asyncio.timeout(5):
            closed = [await reader.read() for reader, _ in idle]  # b"": the server closed it
        assert closed == [b""] * 50
        assert open_connections(runner) == 0
        for _, writer in idle:
            writer.close()
    finally:
        await runner.cleanup()


# ----------------------------------------------------------------------------- huge inputs


async def test_a_huge_declared_body_is_refused_before_it_is_read(
    proxy: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    answer = await raw_exchange(proxy.url, request_head(length=100 * 1024 * 1024))
    assert answer.status == 413
    assert answer.error()["code"] == "request_too_large"
    assert fake_upstream.received == []


async def test_a_huge_chunked_body_is_refused_past_the_limit(proxy: RunningProxy) -> None:
    async def megabytes() -> AsyncIterator[bytes]:
        for _ in range(16):
            yield b" " * (1024 * 1024)

    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{proxy.url}{CHAT}",
            data=megabytes(),
            headers=AUTH,
        ) as response,
    ):
        assert response.status == 413
        assert (await response.json())["error"]["code"] == "request_too_large"


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("one header over 8 KiB", request_head(headers={"x-big": "a" * 20_000}, length=0)),
        (
            "more than 128 headers",
            request_head(headers={f"x-h{n}": "1" for n in range(200)}, length=0),
        ),
        (
            "over 64 KiB in all",
            request_head(headers={f"x-h{n}": "a" * 8000 for n in range(12)}, length=0),
        ),
    ],
)
async def test_huge_headers_get_431_in_openai_format(
    proxy: RunningProxy, fake_upstream: FakeUpstream, name: str, head: bytes
) -> None:
    answer = await raw_exchange(proxy.url, head)
    assert answer.status == 431, name
    assert answer.error()["code"] == "request_header_fields_too_large"
    assert "aaaa" not in answer.error()["message"]  # nothing of the request is echoed
    assert answer.headers["x-request-id"].startswith("req_")
    assert fake_upstream.received == []
    assert total(samples_of(proxy), "tuned_proxy_requests_total", code="431") == 1


@pytest.mark.parametrize(
    "head",
    [
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: p\r\nx-request-id: a\rSet-Cookie: b\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: p\r\nx-request-id: a\nSet-Cookie: b\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: p\r\nx-request-id: a\x00b\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: p\r\nx-request-id: a\r\n folded\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all\r\n\r\n",
    ],
    ids=["bare-cr", "bare-lf", "nul", "obs-fold", "tls-hello"],
)
async def test_crlf_and_control_bytes_in_headers_are_refused(
    proxy: RunningProxy, fake_upstream: FakeUpstream, head: bytes
) -> None:
    answer = await raw_exchange(proxy.url, head)
    assert answer.status == 400
    assert answer.error()["code"] == "invalid_http_request"
    assert "set-cookie" not in answer.headers
    assert fake_upstream.received == []


# ----------------------------------------------------------------------------- wrong shapes

TOOL = {"type": "function", "function": {"name": "lookup_order", "parameters": {}}}


def full(**fields: Any) -> dict[str, Any]:
    """A request to the route whose policy rewrites tools, tool choice and messages."""
    return {"model": FULL_POLICY_ROUTE, "messages": MESSAGES, **fields}


# Valid JSON of the wrong shape at each level the proxy reads, and the field its 400 names.
WRONG_SHAPES = [
    ([], None),
    ("chat", None),
    (None, None),
    (full(model=7), "model"),
    (full(model=["full"]), "model"),
    ({"model": FULL_POLICY_ROUTE}, "messages"),
    (full(messages="hello"), "messages"),
    (full(messages={"role": "user"}), "messages"),
    (full(messages=[1]), "messages[0]"),
    (full(messages=["hello"]), "messages[0]"),
    (full(stream="yes"), "stream"),
    (full(stream=1), "stream"),
    (full(stream=True, stream_options="x"), "stream_options"),
    (full(stream=True, stream_options={"include_usage": 1}), "stream_options.include_usage"),
    (full(tools="lookup_order"), "tools"),
    (full(tools={"type": "function"}), "tools"),
    (full(tools=[7]), "tools[0]"),
    (full(tools=[{"type": "function"}]), "tools[0].function"),
    (full(tools=[{"type": "function", "function": "x"}]), "tools[0].function"),
    (full(tools=[{"type": "function", "function": {"name": 5}}]), "tools[0].function.name"),
    (full(tools=[TOOL], tool_choice={"type": "function"}), "tool_choice.function"),
    (
        full(tools=[TOOL], tool_choice={"type": "function", "function": {"name": 1}}),
        "tool_choice.function.name",
    ),
    (full(functions="x"), "functions"),
    (full(functions=[5]), "functions[0]"),
    (full(functions=[{"name": "a"}], function_call=5), "function_call"),
]


@pytest.mark.parametrize(("body", "param"), WRONG_SHAPES)
async def test_a_wrong_shape_is_a_400_naming_the_field(
    proxy: RunningProxy, fake_upstream: FakeUpstream, body: Any, param: str | None
) -> None:
    status, raw = await exchange_any(proxy.url, body)
    assert status == 400, raw[:300]
    error = json.loads(raw)["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert fake_upstream.received == []  # refused by the proxy, not by the upstream


# Shapes of fields the proxy does not own: passed on, and the upstream judges them. Whatever
# the answer, it is never a 5xx.
NOT_OURS = [
    {"temperature": "hot"},
    {"n": "x"},
    {"user": 5},
    {"logit_bias": [1]},
    {"messages": [{"role": 5}]},
    {"messages": [{"content": "no role"}]},
    {"messages": [{"role": "user", "content": {"nested": [1, 2]}}]},
    {"messages": [{"role": "assistant", "tool_calls": "x"}]},
    {"messages": [{"role": "assistant", "tool_calls": [{"function": 5}]}]},
    {"tools": [{"type": 5, "function": {"name": "x"}}]},
    {"tools": [{"type": "function", "function": {"name": "x", "parameters": "x"}}]},
    {"tools": [{"type": "function", "function": {"name": "x", "parameters": {"properties": 5}}}]},
    {"response_format": "json"},
    {"metadata": [1, 2]},
]


@pytest.mark.parametrize("route", ["chat", FULL_POLICY_ROUTE])
@pytest.mark.parametrize("fields", NOT_OURS)
async def test_other_wrong_shapes_are_never_a_5xx(
    proxy: RunningProxy, route: str, fields: dict[str, Any]
) -> None:
    body = {"model": route, "messages": MESSAGES, **fields}
    status, raw = await exchange_any(proxy.url, body)
    assert status < 500, raw[:300]
    if status >= 400:
        assert set(json.loads(raw)["error"]) >= {"message", "param", "code"}


async def exchange_any(url: str, body: Any) -> tuple[int, bytes]:
    """Post any JSON value (`exchange` only takes an object): the status and the body."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}{CHAT}", data=json.dumps(body), headers=AUTH) as response,
    ):
        return response.status, await response.read()


# ----------------------------------------------------------------------------- the real process


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    stalling_route = {"stream-stalled": ("fake", "ft-stream-stall-30000")}
    with live_process(tmp_path_factory.mktemp("client-faults"), stalling_route) as running:
        yield running


@pytest.fixture
async def live_proxy(live: Live) -> AsyncIterator[Live]:
    yield live
    await back_at_rest(live)


@pytest.mark.slow
async def test_a_client_leaving_mid_stream_in_the_real_process(live_proxy: Live) -> None:
    proxy = live_proxy.proxy
    body = {"model": "stream-stalled", "messages": MESSAGES, "stream": True}
    headers = {"Authorization": f"Bearer {CLIENT_KEY}", "x-request-id": "client-leaves-1"}
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{proxy.url}{CHAT}", json=body, headers=headers)
        assert data_events(await response.content.readuntil(b"\n\n"))
        response.close()
    line = await proxy.request_line("client-leaves-1")
    assert line["client_disconnected"] is True
    assert line["status"] == 200
    assert "error" not in line
    samples = await scrape(proxy.url)
    assert total(samples, "tuned_proxy_in_flight_requests") == 0
    assert total(samples, "tuned_proxy_upstream_errors_total") == 0


@pytest.mark.slow
async def test_many_idle_connections_in_the_real_process(live_proxy: Live) -> None:
    """300 connections that send nothing: each holds one descriptor, nobody waits on them,
    and closing them gives every descriptor back."""
    proxy = live_proxy.proxy
    address = urlsplit(proxy.url)
    idle = [await asyncio.open_connection(address.hostname, address.port) for _ in range(300)]
    await eventually(
        lambda: proxy.fd_count() >= live_proxy.resting_fds + 300, "one descriptor per connection"
    )
    assert (await exchange(proxy.url, {"model": "chat", "messages": MESSAGES})).status == 200
    for _, writer in idle:
        writer.close()


@pytest.mark.slow
async def test_huge_bodies_and_headers_in_the_real_process(live_proxy: Live) -> None:
    """192 MiB of bodies and a flood of headers: refused, counted, and the peak resident
    memory stays within a few times the 4 MiB body limit."""
    proxy = live_proxy.proxy
    peak_before = peak_rss(proxy.proc.pid)

    def refused_lines() -> list[dict[str, Any]]:
        return [line for line in proxy.lines if line.get("status") == 431]

    refused_before = len(refused_lines())

    async def megabytes() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b" " * (1024 * 1024)

    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.post(
                f"{proxy.url}{CHAT}",
                data=megabytes(),
                headers=AUTH,
            ) as response:
                assert response.status == 413
    huge_header = request_head(headers={"x-big": "a" * 60_000}, length=0)
    for _ in range(20):
        answer = await raw_exchange(proxy.url, huge_header)
        assert answer.status == 431
        assert answer.error()["code"] == "request_header_fields_too_large"
    assert peak_rss(proxy.proc.pid) - peak_before < 24 * 1024 * 1024
    samples = await scrape(proxy.url)
    assert total(samples, "tuned_proxy_requests_total", code="413") >= 3
    assert total(samples, "tuned_proxy_requests_total", code="431") >= 20
    # Each refusal's log line, written a moment after its answer.
    await eventually(lambda: len(refused_lines()) >= refused_before + 20, "a line per 431")
    refused = refused_lines()
    assert all("aaaa" not in json.dumps(line) for line in refused)


def peak_rss(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        kilobytes = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    return int(kilobytes) * 1024


@pytest.mark.slow
async def test_malformed_http_in_the_real_process(live_proxy: Live) -> None:
    proxy = live_proxy.proxy
    before = await scrape(proxy.url)
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: p\r\nx-request-id: a\rInjected: 1\r\n\r\n"
    answer = await raw_exchange(proxy.url, head)
    assert answer.status == 400
    assert answer.error()["code"] == "invalid_http_request"
    line = await proxy.request_line(answer.headers["x-request-id"])
    assert line["status"] == 400
    after = await scrape(proxy.url)
    counted = total(after, "tuned_proxy_requests_total", code="400") - total(
        before, "tuned_proxy_requests_total", code="400"
    )
    assert counted == 1


# ----------------------------------------------------------------------------- security

# Every header the upstream may see: the proxy's own, none of the client's.
PROXY_HEADERS = {
    "host",
    "content-type",
    "content-length",
    "accept",
    "accept-encoding",
    "user-agent",
    "x-request-id",
    "authorization",
}
CLIENT_EXTRAS = {
    "OpenAI-Organization": "org-client",
    "OpenAI-Project": "proj-client",
    "Cookie": "session=client-cookie",
    "X-Forwarded-For": "203.0.113.7",
    "X-Api-Key": "client-extra-key",
}


@pytest.mark.parametrize(
    "credential", [{"Authorization": f"Bearer {CLIENT_KEY}"}, {"api-key": CLIENT_KEY}]
)
async def test_no_client_header_reaches_the_upstream(
    proxy: RunningProxy, fake_upstream: FakeUpstream, credential: dict[str, str]
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{proxy.url}{CHAT}",
            json={"model": "chat", "messages": MESSAGES},
            headers={**credential, **CLIENT_EXTRAS},
        ) as response,
    ):
        assert response.status == 200
    sent = fake_upstream.last.headers
    assert set(sent) <= PROXY_HEADERS
    assert sent["authorization"] == f"Bearer {UPSTREAM_KEY}"
    for value in sent.values():
        assert CLIENT_KEY not in value
        assert all(extra not in value for extra in CLIENT_EXTRAS.values())


@pytest.fixture
async def decoy() -> AsyncIterator[FakeUpstream]:
    """A second fake upstream that no request may ever reach."""
    upstream = await start_fake_upstream()
    assert upstream.runner is not None
    yield upstream
    await upstream.runner.cleanup()


async def test_no_request_header_changes_which_upstream_is_reached(
    proxy: RunningProxy, fake_upstream: FakeUpstream, decoy: FakeUpstream
) -> None:
    there = urlsplit(decoy.url).netloc
    steering = {
        "X-Forwarded-Host": there,
        "X-Forwarded-Proto": "http",
        "Forwarded": f"host={there};proto=http",
        "X-Original-URL": f"{decoy.url}{CHAT}",
        "X-Rewrite-URL": f"{decoy.url}{CHAT}",
        "X-Tuned-Proxy-Variant": "main",
    }
    raw = json.dumps({"model": "chat", "messages": MESSAGES}).encode()
    direct = request_head(headers=steering, length=len(raw), host=there) + raw
    absolute = request_head(path=f"{decoy.url}{CHAT}", length=len(raw)) + raw  # absolute form
    for payload in (direct, absolute):
        assert (await raw_exchange(proxy.url, payload)).status == 200
    assert decoy.received == []
    assert len(fake_upstream.received) == 2
    assert {r.headers["host"] for r in fake_upstream.received} == {
        urlsplit(fake_upstream.url).netloc
    }


@pytest.mark.parametrize(
    ("given", "echoed"),
    [
        ("client-id.42:a/b+c=", True),
        ("has space", False),
        ("<script>alert(1)</script>", False),
        ("é-unicode", False),
        ("x" * 129, False),
    ],
)
async def test_only_a_safe_request_id_is_echoed(
    proxy: RunningProxy, given: str, echoed: bool
) -> None:
    request = json_request({"model": "chat", "messages": MESSAGES}, {"x-request-id": given})
    answer = await raw_exchange(proxy.url, request)
    assert answer.status == 200
    returned = answer.headers["x-request-id"]
    assert (returned == given) is echoed
    if not echoed:
        assert returned.startswith("req_")


async def test_a_handler_exception_no_middleware_answers_is_a_500_and_logged() -> None:
    """An app without the proxy's middleware (the mock upstream's) whose handler raises: the
    answer is OpenAI's 500, quoting nothing, and the traceback is in the log."""

    async def broken(request: web.Request) -> web.Response:
        raise TypeError("a secret-looking detail")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", broken)
    runner = await start_site(app, "127.0.0.1", 0)
    try:
        with structlog.testing.capture_logs() as logs:
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    f"http://127.0.0.1:{bound_port(runner)}/v1/chat/completions", json={}
                ) as answer,
            ):
                body = await answer.read()
    finally:
        await runner.cleanup()
    assert answer.status == 500
    assert json.loads(body)["error"]["code"] == "internal_error"
    assert b"secret-looking" not in body
    [logged] = [line for line in logs if line["event"] == "unhandled error"]
    assert isinstance(logged["exc_info"], TypeError)
