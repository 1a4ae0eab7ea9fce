"""The load part of the benchmark: wrk against direct nginx, the forwarder and tuned-proxy.

nginx (a fixed answer and a fixed SSE stream) is the upstream. The zero-logic aiohttp
forwarder and tuned-proxy (support-slim and support-full: 20 tools; request log on; metrics on
where the build has them) run on the proxy CPU; wrk and nginx on the load CPU. For each
repetition, mode (JSON, streaming) and concurrency (1, 32, 128), wrk drives the four targets
one after the other, so slow drifts of the machine hit all of them alike.
"""

from __future__ import annotations

import os
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from harness import (
    BENCH,
    FIXTURES,
    LOAD_CPU,
    LOOPBACK,
    PROXY_CPU,
    BenchError,
    cpu_busy_seconds,
    cpu_seconds,
    free_port,
    http_get,
    http_post,
    processes,
    progress,
    proxy_config,
    start_forwarder,
    start_nginx,
    start_tuned_proxy,
)

from proxy import jsonutil

MODES = {"json": "request.json", "sse": "request-stream.json"}
CONCURRENCY = (1, 32, 128)
DIRECT, FLOOR, SLIM, IDENTICAL = "direct", "forwarder", "tuned-proxy slim", "tuned-proxy identical"
TARGET_ORDER = (DIRECT, FLOOR, SLIM, IDENTICAL)
TUNED = (SLIM, IDENTICAL)
WRK_TIMEOUT_S = 10
WARMUP_CONNECTIONS = 8
# A count bound far above what any target here reaches in time (nginx alone: ~40k/s).
MAX_REQUESTS_PER_SECOND = 200_000
SETTLE_S = 0.2  # after wrk stops: let the target finish what was cut off, before reading CPU


@dataclass(frozen=True)
class LoadSettings:
    reps: int
    duration_s: int  # wrk takes whole seconds
    warmup_s: int


@dataclass(frozen=True)
class Target:
    name: str
    base_url: str
    paths: dict[str, str]  # mode -> path
    variant: str  # sent as x-tuned-proxy-variant; "-" for none
    pid: int  # the process whose CPU time is this target's
    cpu: int  # the CPU it is pinned to


@dataclass(frozen=True)
class Sample:
    rep: int
    target: str
    mode: str
    connections: int
    requests: int
    seconds: float
    p50_us: float
    p99_us: float
    errors: int
    cpu_us_per_request: float
    busy: float  # the target's CPU time over the run's wall time: 1.0 = one core saturated
    foreign: float  # share of the proxy CPU used by anything but the target (noise)
    capped: bool
    log_lines: int | None  # request log lines the proxy wrote during the run

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


# ----------------------------------------------------------------------------- one wrk run


@dataclass(frozen=True)
class WrkFigures:
    """What wrk_post.lua's done() prints."""

    requests: int
    seconds: float
    errors: int
    p50_us: float
    p99_us: float

    @classmethod
    def parse(cls, line: str) -> WrkFigures:
        raw = jsonutil.loads(line)
        return cls(
            requests=int(raw["requests"]),
            seconds=int(raw["duration_us"]) / 1e6,
            errors=sum(int(count) for count in raw["errors"].values()),
            p50_us=float(raw["latency_us"]["p50"]),
            p99_us=float(raw["latency_us"]["p99"]),
        )


def request_cap(duration_s: int) -> int:
    return max(1000, int(duration_s * MAX_REQUESTS_PER_SECOND))


def wrk(target: Target, mode: str, connections: int, duration_s: int) -> WrkFigures:
    """One wrk run against `target`, bounded in time and count."""
    command = [
        "taskset", "-c", str(LOAD_CPU), "wrk", "-t1", f"-c{connections}",
        f"-d{duration_s}s", f"--timeout={WRK_TIMEOUT_S}s",
        "-s", str(BENCH / "wrk_post.lua"), target.base_url + target.paths[mode],
        "--", str(FIXTURES / MODES[mode]), target.variant, str(request_cap(duration_s)),
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=duration_s + 60, check=False
    )
    for line in done.stdout.splitlines():
        if line.startswith('{"wrk":'):
            return WrkFigures.parse(line)
    raise BenchError(f"wrk printed no figures (exit {done.returncode}): {done.stderr.strip()}")


def request_log_lines(log: IO[bytes]) -> int:
    """Request lines the proxy logged since the last call; the file is emptied after reading."""
    path = Path(log.name)
    count = path.read_bytes().count(b'"request_id"')
    os.truncate(path, 0)  # the proxy appends (O_APPEND): it goes on at the new end
    return count


def measure(
    target: Target, mode: str, connections: int, rep: int, settings: LoadSettings, log: IO[bytes]
) -> Sample:
    started, cpu_before = time.monotonic(), cpu_seconds(target.pid)
    proxy_cpu_before = cpu_busy_seconds(PROXY_CPU)
    figures = wrk(target, mode, connections, settings.duration_s)
    time.sleep(SETTLE_S)
    cpu = cpu_seconds(target.pid) - cpu_before
    wall = time.monotonic() - started
    ours = cpu if target.cpu == PROXY_CPU else 0.0
    foreign = max(cpu_busy_seconds(PROXY_CPU) - proxy_cpu_before - ours, 0.0) / wall
    requests = figures.requests
    return Sample(
        rep=rep,
        target=target.name,
        mode=mode,
        connections=connections,
        requests=requests,
        seconds=figures.seconds,
        p50_us=figures.p50_us,
        p99_us=figures.p99_us,
        errors=figures.errors,
        cpu_us_per_request=cpu / requests * 1e6 if requests else float("nan"),
        busy=cpu / wall,
        foreign=foreign,
        capped=requests >= request_cap(settings.duration_s) - connections,
        log_lines=request_log_lines(log) if target.name in TUNED else None,
    )


# ----------------------------------------------------------------------------- the load part


def check_target(target: Target, mode: str) -> None:
    """One request by hand: the right status, variant and kind of answer, or the run stops."""
    body = (FIXTURES / MODES[mode]).read_bytes()
    headers = {"Content-Type": "application/json"}
    if target.variant != "-":
        headers["x-tuned-proxy-variant"] = target.variant
    status, answer_headers, answer = http_post(target.base_url + target.paths[mode], body, headers)
    problems = []
    if status != 200:
        problems.append(f"status {status}: {answer[:300]!r}")
    lowered = {name.lower(): value for name, value in answer_headers.items()}
    if target.variant != "-" and lowered.get("x-tuned-proxy-variant") != target.variant:
        problems.append(f"variant {lowered.get('x-tuned-proxy-variant')!r}")
    if mode == "sse" and not answer.rstrip().endswith(b"data: [DONE]"):
        problems.append("the stream does not end with data: [DONE]")
    if mode == "json" and b'"tool_calls"' not in answer:
        problems.append("the answer has no tool call")
    if problems:
        raise BenchError(f"{target.name} ({mode}) is not answering right: {'; '.join(problems)}")


def start_targets(group_dir: Path, stack: ExitStack) -> tuple[list[Target], IO[bytes]]:
    group = stack.enter_context(processes(group_dir))
    nginx_port, forwarder_port, proxy_port = free_port(), free_port(), free_port()
    nginx = start_nginx(group, nginx_port)
    upstream = f"http://{LOOPBACK}:{nginx_port}"
    floor = start_forwarder(group, forwarder_port, upstream)
    config = proxy_config({"bench-json": f"{upstream}/json/v1", "bench-sse": f"{upstream}/sse/v1"})
    log = stack.enter_context((group_dir / "tuned-proxy.log").open("ab"))
    tuned = start_tuned_proxy(group, proxy_port, config, log)
    upstream_paths = {mode: f"/{mode}/v1/chat/completions" for mode in MODES}
    proxy_paths = dict.fromkeys(MODES, "/v1/chat/completions")
    proxy_url = f"http://{LOOPBACK}:{proxy_port}"
    forwarder_url = f"http://{LOOPBACK}:{forwarder_port}"
    targets = [
        Target(DIRECT, upstream, upstream_paths, "-", nginx.pid, LOAD_CPU),
        Target(FLOOR, forwarder_url, upstream_paths, "-", floor.pid, PROXY_CPU),
        Target(SLIM, proxy_url, proxy_paths, "slim", tuned.pid, PROXY_CPU),
        Target(IDENTICAL, proxy_url, proxy_paths, "identical", tuned.pid, PROXY_CPU),
    ]
    return targets, log


def metrics_state(proxy_url: str) -> str:
    """Whether /metrics is there yet (another change adds it), and what it counted."""
    status, text = http_get(f"{proxy_url}/metrics")
    if status != 200:
        return f"metrics: `/metrics` answered {status} (not in this build)"
    counted = 0.0
    for line in text.decode().splitlines():
        if line.startswith("tuned_proxy_requests_total{"):
            counted += float(line.rsplit(" ", 1)[1])
    return f"metrics: on (`tuned_proxy_requests_total` summed to {counted:.0f})"


def run_load(settings: LoadSettings, run_dir: Path) -> tuple[list[Sample], str]:
    """Every sample, and a line on the state of the metrics endpoint."""
    with ExitStack() as stack:
        targets, log = start_targets(run_dir, stack)
        for target in targets:
            for mode in MODES:
                check_target(target, mode)
        progress("load: warm-up")
        for target in targets:
            for mode in MODES:
                wrk(target, mode, WARMUP_CONNECTIONS, settings.warmup_s)
        request_log_lines(log)
        samples = []
        for rep in range(1, settings.reps + 1):
            for mode in MODES:
                for connections in CONCURRENCY:
                    progress(f"load: rep {rep}/{settings.reps}, {mode}, c={connections}")
                    for target in targets:  # interleaved: drift and noise hit all alike
                        samples.append(measure(target, mode, connections, rep, settings, log))
        metrics = metrics_state(targets[2].base_url)
    return samples, metrics
