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
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import yaml
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client.parser import text_string_to_metric_families

from proxy.fake.model import HUGE_MB, Behavior, parse_behavior
from proxy.fake.server import LEAKY_HEADERS, build_mock_app
from proxy.server import bound_port, start_site
from proxy.state import STATE
from tests.conftest import (
    CLIENT_KEY,
    UPSTREAM_KEY,
    Blackhole,
    FakeUpstream,
    RunningProxy,
    StartProxy,
    basic_config,
    closed_port,
    eventually,
    open_connections,
)
from tests.support.pool import pool_counts

MESSAGES = [{"role": "user", "content": "Hello"}]
GOOD = {"model": "chat", "messages": MESSAGES}
HUGE_BYTES = HUGE_MB * 1024 * 1024
KEY_TAIL = UPSTREAM_KEY[-4:]  # what OpenAI's 401 (and the fake's) shows of a refused key
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

# route -> (upstream, model): the model's words steer the fake upstream.
FAULT_ROUTES = {
    "dead": ("dead", "m"),
    "blackhole": ("blackhole", "m"),
    "reset": ("fake", "ft-reset"),
    "cut": ("fake", "ft-stream-cut"),
    "stall": ("impatient", "ft-stall"),
    "stream-stall": ("impatient", "ft-stream-stall"),
    "slow": ("hasty", "ft-slow-150"),  # about 1.6 s of events, against 0.6 s
    "bad-json": ("fake", "ft-bad-json"),
    "malformed-json": ("fake", "ft-malformed-json"),
    "stream-error": ("fake", "ft-stream-error"),
    "huge": ("fake", "ft-huge"),
    "err401": ("fake", "ft-error-401"),
    "err429": ("fake", "ft-error-429"),
    "err500": ("fake", "ft-error-500"),
    "err502": ("fake", "ft-error-502"),
    "err503": ("fake", "ft-error-503"),
}


def fault_config(upstream_url: str, blackhole_port: int) -> dict[str, Any]:
    """The route `chat`, and one route per fault on upstreams with short timeouts."""
    config = basic_config(upstream_url)
    # Every scrape renders anew: a test reads the counts before and after one request.
    config["server"] = {"metrics_cache_s": 0}
    fake = config["upstreams"]["fake"]
    config["upstreams"].update(
        {
            "impatient": {**fake, "idle_timeout_s": 0.3},  # first byte and between chunks
            "hasty": {**fake, "timeout_s": 0.6},  # the whole exchange
            "dead": {"kind": "compatible", "base_url": f"http://127.0.0.1:{closed_port()}/v1"},
            "blackhole": {
                "kind": "compatible",
                "base_url": f"http://127.0.0.1:{blackhole_port}/v1",
                "connect_timeout_s": 0.3,
            },
        }
    )
    for route, (upstream, model) in FAULT_ROUTES.items():
        config["routes"][route] = {
            "variants": [{"name": "v", "upstream": upstream, "model": model}]
        }
    return config


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


@dataclass(frozen=True)
class Outcome:
    status: int
    headers: CIMultiDict[str]
    body: bytes


async def exchange(url: str, body: dict[str, Any], request_id: str | None = None) -> Outcome:
    """One request on a connection of its own, read to the end and closed."""
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    if request_id is not None:
        headers["x-request-id"] = request_id
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as response,
    ):
        return Outcome(response.status, response.headers.copy(), await response.read())


def data_events(raw: bytes) -> list[bytes]:
    return [event[6:] for event in raw.split(b"\n\n") if event.startswith(b"data: ")]


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
    if fault.code is not None:
        assert error["code"] == fault.code


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


def parse_samples(text: str) -> Samples:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


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


def samples_of(proxy: RunningProxy) -> Samples:
    return parse_samples(proxy.app[STATE].metrics.render()[0].decode())


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
    return await start_proxy(fault_config(fake_upstream.url, blackhole.port))


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


class ThreadedUpstream:
    """The fake upstream on an event loop of its own, in a thread, so that it outlives each
    test's event loop. Every answer closes its connection, so that the proxy pools none and
    its count of open file descriptors at rest is exact."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.runner: web.AppRunner | None = None
        self.url = ""
        started = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(started,), daemon=True)
        self.thread.start()
        if not started.wait(10):
            raise RuntimeError("the fake upstream did not start")

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        started.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        app = build_mock_app()
        app.on_response_prepare.append(_close_after_answer)
        self.runner = await start_site(app, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{bound_port(self.runner)}"

    @property
    def open_connections(self) -> int:
        return open_connections(self.runner)

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def _close_after_answer(request: web.Request, response: web.StreamResponse) -> None:
    # The header too: without it the proxy pools the connection, and its next request can
    # race the close (aiohttp's force_close alone does not say so to the client).
    response.headers["Connection"] = "close"
    response.force_close()


@dataclass
class LiveProxy:
    """`python -m proxy serve` in a subprocess; a thread collects its JSON log lines."""

    proc: subprocess.Popen[bytes]
    url: str = ""
    lines: list[dict[str, Any]] = field(default_factory=list)
    reader: threading.Thread | None = None

    @classmethod
    def start(cls, config_path: Path, env: dict[str, str]) -> LiveProxy:
        command = [sys.executable, "-m", "proxy", "serve", "-c", str(config_path), "--port", "0"]
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, env=env)
        live = cls(proc)
        live.reader = threading.Thread(target=live._collect, daemon=True)
        live.reader.start()
        listening = live.wait_line(lambda line: line.get("event") == "listening")
        live.url = f"http://127.0.0.1:{listening['port']}"
        return live

    def _collect(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            try:
                self.lines.append(json.loads(raw))
            except json.JSONDecodeError:
                self.lines.append({"event": "not json", "text": raw.decode(errors="replace")})

    def wait_line(self, wanted: Any, timeout_s: float = 20.0) -> dict[str, Any]:
        """The first log line `wanted` accepts (polled, from a sync fixture)."""
        for _ in range(int(timeout_s / 0.01)):
            found = next((line for line in self.lines if wanted(line)), None)
            if found is not None:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        raise AssertionError(f"no such log line; the process said: {self.lines[-5:]}")

    async def request_line(self, request_id: str) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next(
                (
                    line
                    for line in self.lines
                    if line.get("event") == "request" and line.get("request_id") == request_id
                ),
                None,
            )

        await eventually(lambda: find() is not None, f"a log line for {request_id}")
        line = find()
        assert line is not None
        return line

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kilobytes = next(line.split()[1] for line in status.splitlines() if line[:6] == "VmRSS:")
        return int(kilobytes) * 1024

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        if self.reader is not None:
            self.reader.join(10)  # it ends at the pipe's end of file
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@dataclass
class Live:
    proxy: LiveProxy
    upstream: ThreadedUpstream
    resting_fds: int = 0


def process_env() -> dict[str, str]:
    return {
        **os.environ,
        "TUNED_PROXY_TEST_KEYS": CLIENT_KEY,
        "TUNED_PROXY_TEST_UPSTREAM_KEY": UPSTREAM_KEY,
    }


async def scrape(url: str) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        assert response.status == 200
        return parse_samples(await response.text())


@contextmanager
def live_process(
    folder: Path, edit: Callable[[dict[str, Any]], None] | None = None
) -> Iterator[Live]:
    """A proxy process on the fault config (changed by `edit`), the fake upstream, a blackhole."""
    upstream = ThreadedUpstream()
    hole = Blackhole()
    config = fault_config(upstream.url, hole.port)
    if edit is not None:
        edit(config)
    path = folder / "tuned-proxy.yaml"
    path.write_text(yaml.safe_dump(config))
    proxy = LiveProxy.start(path, process_env())
    try:
        yield Live(proxy, upstream, resting_fds=resting_fds(proxy, upstream))
    finally:
        proxy.stop()
        hole.close()
        upstream.stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One proxy process for the whole matrix."""
    with live_process(tmp_path_factory.mktemp("faults")) as running:
        yield running


def resting_fds(proxy: LiveProxy, upstream: ThreadedUpstream) -> int:
    """The process's descriptors at rest after a first request: the fewest seen over 0.3 s.

    Synchronous (urllib): a module-scoped fixture runs outside every test's event loop.
    """
    request = urllib.request.Request(
        f"{proxy.url}/v1/chat/completions",
        data=json.dumps(GOOD).encode(),
        headers={"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    counts = []
    for _ in range(30):
        counts.append(proxy.fd_count())
        time.sleep(0.01)
    assert upstream.open_connections == 0
    return min(counts)


async def back_at_rest(live: Live) -> None:
    """No connection to the upstream is left, and no descriptor more than at rest."""
    await eventually(
        lambda: live.upstream.open_connections == 0, "no connection to the upstream is left"
    )
    await eventually(
        lambda: live.proxy.fd_count() <= live.resting_fds,
        f"the process is back to {live.resting_fds} open descriptors",
    )


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
    config = basic_config(fake_upstream.url.replace("127.0.0.1", "localhost"))
    config["routes"]["leaky"] = {
        "variants": [{"name": "v", "upstream": "fake", "model": "ft-leaky-headers"}]
    }
    proxy = await start_proxy(config)
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
