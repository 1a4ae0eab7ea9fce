"""The upstream fault matrix: the fake upstream misbehaves on purpose, one fault per case.

Each case runs twice. In process, the asyncio tasks and the upstream pool's connections are
counted before and after. Against the real process (`python -m proxy serve`), its log line,
its `/metrics` and its open file descriptors are read. Either way the client gets OpenAI's
error (or a stream's final error event), the fault is counted, nothing is left open, and the
next request is served.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import openai
import pytest

from proxy.fake.model import HUGE_MB, LINGER_MS, Behavior, parse_behavior
from proxy.fake.server import LEAKY_HEADERS
from proxy.state import STATE
from tests.support.configs import FAULT_ROUTES, fault_config, fault_matrix_config
from tests.support.http import GOOD, MESSAGES, Outcome, data_events, exchange
from tests.support.keys import CLIENT_KEY, KEY_TAIL, UPSTREAM_KEY
from tests.support.metrics import Samples, samples_of, scrape, total
from tests.support.pool import pool_counts
from tests.support.processes import Live, back_at_rest, live_process
from tests.support.servers import Blackhole, FakeUpstream, RunningProxy, StartProxy
from tests.support.waiting import eventually

HUGE_BYTES = HUGE_MB * 1024 * 1024


@dataclass(frozen=True)
class Fault:
    """One misbehaviour and what the client, the metrics and the log line must show."""

    route: str
    stream: bool
    status: int  # what the client gets
    code: str | None = None  # the error's code: in the body, or in the stream's last event
    reason: str | None = None  # its `upstream_errors_total` reason; None: not an upstream error
    says: str = ""  # what the log line's `error` says
    mid_stream: bool = False  # 200, some events, then a final `data: {"error": …}` event
    headers: tuple[tuple[str, str], ...] = ()  # response headers the client must get

    @property
    def id(self) -> str:
        return f"{self.route}-{'stream' if self.stream else 'json'}"

    @property
    def upstream(self) -> str:
        return FAULT_ROUTES[self.route][0]

    def body(self) -> dict[str, Any]:
        return {"model": self.route, "messages": MESSAGES, "stream": self.stream}


def _both(route: str, status: int, code: str, reason: str, says: str) -> list[Fault]:
    """A fault that strikes before the answer starts: the same plain error, streamed or not."""
    return [Fault(route, stream, status, code, reason, says) for stream in (False, True)]


RATE_LIMITED = {"headers": (("retry-after", "1"), ("retry-after-ms", "1000"))}
OVERLOADED = {"headers": (("retry-after", "1"),)}
FAULTS = [
    *_both("dead", 502, "upstream_error", "connect", "is unreachable"),
    *_both("reset", 502, "upstream_error", "disconnected", "closed the connection before"),
    Fault("cut", False, 502, "upstream_error", "broken_stream", "broke the connection"),
    Fault("cut", True, 200, "upstream_error", "broken_stream", "broke the connection", True),
    *_both("stall", 504, "upstream_timeout", "timeout", "timed out"),
    Fault("stream-stall", False, 504, "upstream_timeout", "timeout", "stopped sending"),
    Fault("stream-stall", True, 200, "upstream_timeout", "timeout", "stopped sending", True),
    Fault("slow", True, 200, "upstream_timeout", "timeout", "stopped sending", True),
    Fault("blackhole", False, 504, "upstream_timeout", "timeout", "timed out"),
    Fault("bad-json", False, 502, "upstream_error", "invalid_response", "not JSON"),
    Fault("bad-json", True, 200, "upstream_error", "invalid_response", "not JSON", True),
    Fault("malformed-json", False, 502, "upstream_error", "invalid_response", "not JSON"),
    Fault("malformed-json", True, 200, "upstream_error", "invalid_response", "not JSON", True),
    Fault("stream-error", True, 200, None, "error_event", "with an error event", True),
    Fault("huge", False, 200),
    Fault("huge", True, 200),
    Fault("err401", False, 502, "upstream_auth_failed", "auth", "refused the proxy's credentials"),
    *(Fault("err429", stream, 429, "rate_limit_exceeded", "status_429", "HTTP 429", **RATE_LIMITED)
      for stream in (False, True)),
    Fault("err500", False, 500, None, "status_5xx", "HTTP 500"),
    Fault("err502", False, 502, None, "status_5xx", "HTTP 502"),
    Fault("err503", False, 503, "overloaded", "status_5xx", "HTTP 503", **OVERLOADED),
]  # fmt: skip
FAULT_IDS = [fault.id for fault in FAULTS]


# ----------------------------------------------------------------------------- the exchange


def check_answer(fault: Fault, outcome: Outcome) -> None:
    """The client got OpenAI's error (or a final SSE error event), or the whole answer."""
    assert outcome.status == fault.status, outcome.body[:300]
    for name, value in fault.headers:
        assert outcome.headers.get(name) == value, name
    assert KEY_TAIL not in outcome.body.decode(errors="replace")
    assert all(KEY_TAIL not in value for value in outcome.headers.values())
    if fault.mid_stream:
        events = data_events(outcome.body)
        assert len(events) >= 2, "the stream had started before it broke"
        assert b"[DONE]" not in outcome.body
        error = json.loads(events[-1])["error"]
    elif fault.status >= 400:
        assert outcome.headers["Content-Type"].startswith("application/json")
        error = json.loads(outcome.body)["error"]
    else:
        check_whole_answer(fault, outcome.body)
        return
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["message"]
    assert error["code"] == fault.code  # None: the upstream's own null code, passed on


def check_whole_answer(fault: Fault, raw: bytes) -> None:
    if not fault.stream:
        assert len(json.loads(raw)["choices"][0]["message"]["content"]) == HUGE_BYTES
        return
    events = data_events(raw)
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert len(text) == HUGE_BYTES


# ----------------------------------------------------------------------------- the counts


def check_counted(fault: Fault, before: Samples, after: Samples) -> None:
    """Exactly one request with the client's status, and the fault counted as its reason."""

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert grew("tuned_proxy_requests_total", route=fault.route, variant="v") == 1
    assert grew("tuned_proxy_requests_total", route=fault.route, code=str(fault.status)) == 1
    errors = grew("tuned_proxy_upstream_errors_total", upstream=fault.upstream)
    assert errors == (1 if fault.reason else 0)
    if fault.reason:
        assert grew("tuned_proxy_upstream_errors_total", reason=fault.reason) == 1


# ----------------------------------------------------------------------------- in process


async def at_rest(proxy: RunningProxy, upstream: FakeUpstream) -> None:
    """Nothing in flight, no client connection, at most the one pooled upstream connection."""
    state = proxy.app[STATE]

    def resting() -> bool:
        in_use, idle = pool_counts(state.upstreams)
        return (
            state.in_flight == 0
            and in_use == 0
            and idle <= 1
            and proxy.open_connections == 0
            and upstream.open_connections <= 1
        )

    await eventually(resting, "the proxy and its upstream pool are at rest")


@pytest.fixture
async def faulty(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, blackhole: Blackhole
) -> RunningProxy:
    return await start_proxy(fault_matrix_config(fake_upstream.url, blackhole.port))


@pytest.mark.parametrize("fault", FAULTS, ids=FAULT_IDS)
async def test_fault_in_process(
    fault: Fault, faulty: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    assert (await exchange(faulty.url, GOOD)).status == 200  # the pool holds a connection
    await at_rest(faulty, fake_upstream)
    tasks = len(asyncio.all_tasks())
    before = samples_of(faulty)

    check_answer(fault, await exchange(faulty.url, fault.body()))
    check_counted(fault, before, samples_of(faulty))

    assert (await exchange(faulty.url, GOOD)).status == 200
    await at_rest(faulty, fake_upstream)
    await eventually(lambda: len(asyncio.all_tasks()) <= tasks, "no task left behind")


@pytest.mark.parametrize("fault", [f for f in FAULTS if f.mid_stream], ids=lambda f: f.id)
async def test_the_sdk_raises_its_api_error_for_a_broken_stream(
    fault: Fault, faulty: RunningProxy
) -> None:
    """Not a JSON decoding error, nor a hang: OpenAI's `APIError`, as for any failed stream."""
    stream = await faulty.client().chat.completions.create(
        model=fault.route, messages=MESSAGES, stream=True
    )
    with pytest.raises(openai.APIError) as info:
        async for _ in stream:
            pass
    assert info.value.code == fault.code


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("ft-reset", Behavior(reset=True)),
        ("ft-huge", Behavior(answer_mb=HUGE_MB)),
        ("ft-huge-2", Behavior(answer_mb=2)),
        ("ft-malformed-json", Behavior(malformed_json=True)),
        ("ft-leaky-headers-slow-5", Behavior(leaky_headers=True, delay_ms=5)),
        ("ft-stream-error", Behavior(stream_error=True)),
        ("ft-linger", Behavior(linger_ms=LINGER_MS)),
        ("ft-linger-250", Behavior(linger_ms=250)),
    ],
)
def test_the_fault_words_of_the_fake_upstream(words: str, expected: Behavior) -> None:
    assert parse_behavior(words, None) == expected


async def test_a_stall_after_the_headers_of_a_json_answer(fake_upstream: FakeUpstream) -> None:
    """`stream-stall` on a JSON answer: the status line and half the body, then silence."""
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            f"{fake_upstream.url}/v1/chat/completions",
            json={"model": "ft-stream-stall-30000", "messages": MESSAGES},
        )
        assert response.status == 200
        first = await response.content.readany()
        assert first
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await response.content.readany()
        response.close()


# ----------------------------------------------------------------------------- the real process


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One proxy process for the whole matrix."""
    with live_process(tmp_path_factory.mktemp("faults")) as running:
        yield running


@pytest.fixture
async def live_proxy(live: Live) -> AsyncIterator[Live]:
    """The shared process, checked back at rest after each test."""
    yield live
    await back_at_rest(live)


@pytest.mark.slow
@pytest.mark.parametrize("fault", FAULTS, ids=FAULT_IDS)
async def test_fault_in_the_real_process(fault: Fault, live_proxy: Live) -> None:
    proxy = live_proxy.proxy
    request_id = f"fault-{fault.id}-{uuid.uuid4().hex[:8]}"
    before = await scrape(proxy.url)

    check_answer(fault, await exchange(proxy.url, fault.body(), request_id))
    line = await proxy.request_line(request_id)
    check_counted(fault, before, await scrape(proxy.url))

    assert line["status"] == fault.status
    assert (line["route"], line["variant"], line["upstream"]) == (fault.route, "v", fault.upstream)
    if fault.reason is None:
        assert "error" not in line
    else:
        assert fault.says in line["error"]
        assert line["attempts"][-1]["reason"] == fault.reason
    assert KEY_TAIL not in json.dumps(line)
    assert (await exchange(proxy.url, GOOD)).status == 200


# ----------------------------------------------------------------------------- credentials, headers


async def test_an_upstream_401_quotes_nothing_of_the_upstream_key(
    faulty: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    """The fake's 401, like OpenAI's, shows the end of the refused key; the proxy's 502 not."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{fake_upstream.url}/v1/chat/completions",
            json={"model": "ft-error-401", "messages": MESSAGES},
            headers={"Authorization": f"Bearer {UPSTREAM_KEY}"},
        ) as direct,
    ):
        assert KEY_TAIL in await direct.text()  # what the proxy has to keep to itself
    outcome = await exchange(faulty.url, {"model": "err401", "messages": MESSAGES})
    assert outcome.status == 502
    assert json.loads(outcome.body)["error"]["code"] == "upstream_auth_failed"
    assert KEY_TAIL not in outcome.body.decode()


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_headers_outside_the_safe_list_never_reach_the_client(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, stream: bool
) -> None:
    # By host name: a cookie jar would keep cookies from a name, not from an IP address.
    proxy = await start_proxy(
        fault_config(
            fake_upstream.url.replace("127.0.0.1", "localhost"),
            routes={"leaky": ("fake", "ft-leaky-headers")},
        )
    )
    outcome = await exchange(proxy.url, {"model": "leaky", "messages": MESSAGES, "stream": stream})
    assert outcome.status == 200
    assert fake_upstream.last.body["model"] == "ft-leaky-headers"
    for name in LEAKY_HEADERS:
        assert name not in outcome.headers, name
    assert "x-upstream-request-id" in outcome.headers  # the safe list still passes
    assert "x-ratelimit-remaining-requests" in outcome.headers
    # the upstream's cookie is not kept for the next client's request either
    await exchange(proxy.url, {"model": "leaky", "messages": MESSAGES, "stream": stream})
    assert "cookie" not in fake_upstream.last.headers


@pytest.mark.slow
async def test_the_upstream_key_is_in_no_log_line_metric_answer_or_header(
    live_proxy: Live,
) -> None:
    proxy = live_proxy.proxy
    seen = []
    for route in ("err401", "dead", "err429", "bad-json", "chat"):
        outcome = await exchange(proxy.url, {"model": route, "messages": MESSAGES})
        seen += [outcome.body.decode(errors="replace"), json.dumps(dict(outcome.headers))]
        await proxy.request_line(outcome.headers["x-request-id"])  # written after a moment
    async with aiohttp.ClientSession() as session, session.get(f"{proxy.url}/metrics") as metrics:
        seen.append(await metrics.text())
    seen += [json.dumps(line) for line in proxy.lines]
    everything = "\n".join(seen)
    assert UPSTREAM_KEY not in everything
    assert KEY_TAIL not in everything
    assert CLIENT_KEY not in everything
