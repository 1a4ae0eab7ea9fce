"""Streaming benchmark: the time to first byte a proxy adds, and a thousand slow streams at once.

1. TTFB: sequential streaming requests, interleaved over direct-to-upstream, the zero-logic
   forwarder and tuned-proxy (slim); the upstream sends its first event at once and the rest a
   moment later. Added TTFB = a proxy's p50 minus direct p50.
2. Slow streams: STREAMS concurrent streams through each proxy, every one trickled by the
   upstream for EVENTS × INTERVAL seconds. Reports the proxy's peak RSS, RSS per stream over
   its idle RSS, errors, and whether every stream arrived whole (all events, then [DONE]).

The proxies run on the proxy CPU; the trickle upstream and this client on the load CPU.

Usage: python tests/bench/bench_streams.py [--quick] [--streams N] [--events N] [--interval S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from harness import (
    FIXTURES,
    LOAD_CPU,
    LOOPBACK,
    BenchError,
    Processes,
    check_tools,
    free_port,
    percentile,
    pin_self_to_load_cpu,
    processes,
    progress,
    proxy_config,
    raise_open_files_limit,
    rss_bytes,
    start_forwarder,
    start_tuned_proxy,
    wait_for_port,
)

from proxy import jsonutil

RAMP_BATCH = 100  # streams opened together, then a short pause: a burst, not a SYN flood
RAMP_PAUSE_S = 0.05
RSS_SAMPLE_S = 0.2
VARIANT = "slim"


@dataclass(frozen=True)
class StreamSettings:
    ttfb_samples: int = 300
    streams: int = 1000
    events: int = 30
    interval_s: float = 1.0

    @classmethod
    def quick(cls) -> StreamSettings:
        return cls(ttfb_samples=100, events=5)


@dataclass(frozen=True)
class Endpoint:
    """Where a client sends one kind of streaming request to one target."""

    name: str
    url: str
    body: bytes
    headers: dict[str, str]
    pid: int


@dataclass
class StreamsRun:
    """The outcome of the slow streams through one proxy."""

    target: str
    streams: int
    completed: int = 0
    errors: list[str] = field(default_factory=list)
    most_open: int = 0
    idle_rss: int = 0
    peak_rss: int = 0
    seconds: float = 0.0

    @property
    def kib_per_stream(self) -> float:
        return (self.peak_rss - self.idle_rss) / 1024 / max(self.most_open, 1)


@dataclass
class StreamsReport:
    settings: StreamSettings
    ttfb_p50_us: dict[str, float] = field(default_factory=dict)
    ttfb_p99_us: dict[str, float] = field(default_factory=dict)
    runs: list[StreamsRun] = field(default_factory=list)

    def added_ttfb_us(self, target: str) -> float:
        return self.ttfb_p50_us[target] - self.ttfb_p50_us["direct"]


def request_body(model: str) -> bytes:
    body = jsonutil.loads((FIXTURES / "request-stream.json").read_bytes())
    body["model"] = model
    return jsonutil.dumps(body)


def endpoints(
    kind: str, trickle: int, forwarder: int, proxy: int, pids: list[int]
) -> list[Endpoint]:
    """direct, forwarder and tuned-proxy endpoints for `kind` (ttfb or trickle)."""
    path = f"/{kind}/v1/chat/completions"
    body = request_body(f"bench-{kind}")
    plain = {"Content-Type": "application/json"}
    return [
        Endpoint("direct", f"http://{LOOPBACK}:{trickle}{path}", body, plain, pids[0]),
        Endpoint("forwarder", f"http://{LOOPBACK}:{forwarder}{path}", body, plain, pids[1]),
        Endpoint(
            "tuned-proxy",
            f"http://{LOOPBACK}:{proxy}/v1/chat/completions",
            body,
            {**plain, "x-tuned-proxy-variant": VARIANT},
            pids[2],
        ),
    ]


async def first_byte_seconds(session: aiohttp.ClientSession, endpoint: Endpoint) -> float:
    started = time.perf_counter()
    async with session.post(endpoint.url, data=endpoint.body, headers=endpoint.headers) as answer:
        if answer.status != 200:
            raise BenchError(f"{endpoint.name}: TTFB request answered {answer.status}")
        await answer.content.readany()
        elapsed = time.perf_counter() - started
        await answer.read()  # the rest, so the connection is reused
    return elapsed


async def measure_ttfb(targets: list[Endpoint], samples: int, report: StreamsReport) -> None:
    timeout = aiohttp.ClientTimeout(total=30)
    timings: dict[str, list[float]] = {target.name: [] for target in targets}
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for target in targets:  # warm-up: connections, caches, lazy imports
            for _ in range(5):
                await first_byte_seconds(session, target)
        for _ in range(samples):
            for target in targets:
                timings[target.name].append(await first_byte_seconds(session, target))
    for name, values in timings.items():
        report.ttfb_p50_us[name] = percentile(values, 0.5) * 1e6
        report.ttfb_p99_us[name] = percentile(values, 0.99) * 1e6


@dataclass
class OpenCount:
    now: int = 0
    most: int = 0

    def opened(self) -> None:
        self.now += 1
        self.most = max(self.most, self.now)

    def closed(self) -> None:
        self.now -= 1


async def one_stream(
    session: aiohttp.ClientSession, target: Endpoint, expected_events: int, open_count: OpenCount
) -> str | None:
    """None when the stream arrived whole, else what went wrong."""
    async with session.post(target.url, data=target.body, headers=target.headers) as answer:
        if answer.status != 200:
            return f"status {answer.status}"
        open_count.opened()
        try:
            events, done = 0, False
            async for line in answer.content:
                if line.startswith(b"data: [DONE]"):
                    done = True
                elif line.startswith(b"data: "):
                    events += 1
                    if line.startswith(b'data: {"error"'):
                        return "error event"
        finally:
            open_count.closed()
    if not done or events != expected_events:
        return (
            f"incomplete: {events}/{expected_events} events, [DONE] {'seen' if done else 'missing'}"
        )
    return None


async def sample_peak_rss(pid: int, run: StreamsRun) -> None:
    while True:
        run.peak_rss = max(run.peak_rss, rss_bytes(pid))
        await asyncio.sleep(RSS_SAMPLE_S)


async def guarded(stream: Awaitable[str | None]) -> str | None:
    """A failed stream is counted as an error, not a reason to stop the others."""
    try:
        return await stream
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"


async def slow_streams(target: Endpoint, settings: StreamSettings) -> StreamsRun:
    run = StreamsRun(target.name, settings.streams, idle_rss=rss_bytes(target.pid))
    run.peak_rss = run.idle_rss
    expected = settings.events + 3  # role chunk, content chunks, finish chunk, usage chunk
    bound_s = settings.events * settings.interval_s + 120
    connector = aiohttp.TCPConnector(limit=0)
    open_count = OpenCount()
    started = time.perf_counter()
    async with (
        aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=bound_s)
        ) as session,
        asyncio.timeout(bound_s + 10),
    ):
        sampler = asyncio.create_task(sample_peak_rss(target.pid, run))
        tasks = []
        for index in range(settings.streams):
            if index and index % RAMP_BATCH == 0:
                await asyncio.sleep(RAMP_PAUSE_S)
            stream = one_stream(session, target, expected, open_count)
            tasks.append(asyncio.create_task(guarded(stream)))
        outcomes = await asyncio.gather(*tasks)
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler  # re-raises if sampling failed (the proxy died)
    run.seconds = time.perf_counter() - started
    run.most_open = open_count.most
    run.errors = [outcome for outcome in outcomes if outcome is not None]
    run.completed = settings.streams - len(run.errors)
    return run


def start_targets(group: Processes, settings: StreamSettings) -> tuple[int, int, int, list[int]]:
    trickle = free_port()
    command = [
        sys.executable, str(Path(__file__).with_name("trickle_upstream.py")),
        "--port", str(trickle), "--events", str(settings.events),
        "--interval", str(settings.interval_s),
    ]  # fmt: skip
    upstream = group.start("trickle", command, LOAD_CPU)
    wait_for_port(trickle, upstream)
    forwarder, proxy = free_port(), free_port()
    floor = start_forwarder(group, forwarder, f"http://{LOOPBACK}:{trickle}")
    config = proxy_config(
        {
            "bench-ttfb": f"http://{LOOPBACK}:{trickle}/ttfb/v1",
            "bench-trickle": f"http://{LOOPBACK}:{trickle}/trickle/v1",
        }
    )
    log = (group.run_dir / "tuned-proxy-streams.log").open("ab")
    tuned = start_tuned_proxy(group, proxy, config, log)
    return trickle, forwarder, proxy, [upstream.pid, floor.pid, tuned.pid]


def run_streams(settings: StreamSettings, verbose: bool = True) -> StreamsReport:
    """Start the upstream and both proxies, measure, stop them; nothing is left running."""
    report = StreamsReport(settings)
    with ExitStack() as stack:
        run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-streams-")))
        group = stack.enter_context(processes(run_dir))
        trickle, forwarder, proxy, pids = start_targets(group, settings)
        if verbose:
            progress(f"streams: TTFB, {settings.ttfb_samples} samples per target")
        ttfb = endpoints("ttfb", trickle, forwarder, proxy, pids)
        asyncio.run(measure_ttfb(ttfb, settings.ttfb_samples, report))
        for target in endpoints("trickle", trickle, forwarder, proxy, pids)[1:]:
            if verbose:
                seconds = settings.events * settings.interval_s
                progress(f"streams: {settings.streams} streams × {seconds:g} s via {target.name}")
            report.runs.append(asyncio.run(slow_streams(target, settings)))
    return report


RUN_ROWS: dict[str, Callable[[StreamsRun], str]] = {
    "streams complete": lambda run: f"{run.completed}/{run.streams}",
    "errors": lambda run: str(len(run.errors)),
    "most open at once": lambda run: str(run.most_open),
    "idle RSS MB": lambda run: f"{run.idle_rss / 1e6:.1f}",
    "peak RSS MB": lambda run: f"{run.peak_rss / 1e6:.1f}",
    "RSS per open stream KiB": lambda run: f"{run.kib_per_stream:.1f}",
    "wall time s": lambda run: f"{run.seconds:.1f}",
}


def table(report: StreamsReport) -> str:
    settings = report.settings
    targets = ("direct", "forwarder", "tuned-proxy")
    lines = [
        f"TTFB: {settings.ttfb_samples} sequential streams per target, interleaved. Then "
        f"{settings.streams} concurrent streams of {settings.events} chunks "
        f"{settings.interval_s:g} s apart through each proxy.",
        "",
        "| figure | direct | forwarder | tuned-proxy slim |",
        "| --- | ---: | ---: | ---: |",
        "| TTFB p50 µs | " + " | ".join(f"{report.ttfb_p50_us[t]:.0f}" for t in targets) + " |",
        "| TTFB p99 µs | " + " | ".join(f"{report.ttfb_p99_us[t]:.0f}" for t in targets) + " |",
        "| added TTFB p50 µs | – | "
        + " | ".join(f"{report.added_ttfb_us(t):.0f}" for t in targets[1:])
        + " |",
    ]
    runs = {run.target: run for run in report.runs}
    for label, show in RUN_ROWS.items():
        cells = [show(runs[t]) if t in runs else "–" for t in targets[1:]]
        lines.append(f"| {label} | – | {' | '.join(cells)} |")
    for run in report.runs:
        for error in sorted(set(run.errors))[:5]:
            lines.append(f"\n{run.target}: {run.errors.count(error)} × {error}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 TTFB samples, 5 s streams")
    parser.add_argument("--streams", type=int, help="concurrent slow streams (default 1000)")
    parser.add_argument("--events", type=int, help="chunks per slow stream")
    parser.add_argument("--interval", type=float, help="seconds between chunks")
    args = parser.parse_args()
    settings = StreamSettings.quick() if args.quick else StreamSettings()
    settings = StreamSettings(
        ttfb_samples=settings.ttfb_samples,
        streams=args.streams or settings.streams,
        events=args.events or settings.events,
        interval_s=args.interval or settings.interval_s,
    )
    try:
        check_tools(["taskset"])
    except BenchError as exc:
        sys.exit(str(exc))
    pin_self_to_load_cpu()
    raise_open_files_limit()
    print(table(run_streams(settings)))


if __name__ == "__main__":
    main()
