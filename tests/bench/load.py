"""The load part of the benchmark: wrk against direct nginx, the forwarder and tuned-proxy.

nginx (a fixed answer and a fixed SSE stream) is the upstream. The zero-logic aiohttp
forwarder and tuned-proxy (support-slim and support-full: 20 tools; request log on; metrics on
where the build has them) run on the proxy CPU; wrk and nginx on the load CPU. For each
repetition, mode (JSON, streaming) and concurrency (1, 32, 128), wrk drives the four targets
one after the other, so slow drifts of the machine hit all of them alike.

The responses part (`run_responses`) uses the same set-up: tuned-proxy alone at c=32, the same
exchange as a chat request, as a Responses request to an upstream that speaks the Responses
API, and as a Responses request bridged to a chat upstream, interleaved, for each policy.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

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


@dataclass(frozen=True)
class Mode:
    """One kind of exchange: the body wrk sends, the route it names, where each side takes it.

    The route's upstream is nginx's `/json/v1` or `/sse/v1`, by the kind of answer.
    """

    name: str
    label: str  # as the report names it
    request: str  # the fixture wrk sends
    route: str  # the body's `model`; the route's upstream has the same name
    api: Literal["chat", "responses"]  # what the client speaks
    stream: bool
    bridge: bool = False  # a Responses request to a chat-only upstream (`responses: bridge`)

    @property
    def proxy_path(self) -> str:
        return "/v1/chat/completions" if self.api == "chat" else "/v1/responses"

    @property
    def upstream_base(self) -> str:
        return "/sse/v1" if self.stream else "/json/v1"

    @property
    def upstream_api(self) -> Literal["chat", "responses"]:
        """What the upstream speaks, and the proxy sends it."""
        return "chat" if self.bridge else self.api

    @property
    def upstream_path(self) -> str:
        endpoint = "/chat/completions" if self.upstream_api == "chat" else "/responses"
        return self.upstream_base + endpoint

    @property
    def responses_setting(self) -> str | None:
        """The route upstream's `responses` setting (chat routes leave it out)."""
        if self.api == "chat":
            return None
        return "bridge" if self.bridge else "native"


# The route names are make_fixtures.py's.
_ALL_MODES = (
    Mode("json", "chat", "request.json", "bench-json", "chat", stream=False),
    Mode("sse", "chat", "request-stream.json", "bench-sse", "chat", stream=True),
    Mode("responses-json", "Responses, native upstream", "responses-request.json",
         "bench-responses-json", "responses", stream=False),
    Mode("responses-sse", "Responses, native upstream", "responses-request-stream.json",
         "bench-responses-sse", "responses", stream=True),
    Mode("bridged-json", "Responses, bridged to chat", "responses-bridge-request.json",
         "bench-bridge-json", "responses", stream=False, bridge=True),
    Mode("bridged-sse", "Responses, bridged to chat", "responses-bridge-request-stream.json",
         "bench-bridge-sse", "responses", stream=True, bridge=True),
)  # fmt: skip
MODES = {mode.name: mode for mode in _ALL_MODES}
# The load part's modes: the chat API, against every target at every concurrency.
CHAT_MODES = ("json", "sse")
# The responses part's modes, in the order of a repetition: each chat run just before the
# Responses runs compared with it.
RESPONSES_ORDER = ("json", "responses-json", "bridged-json", "sse", "responses-sse", "bridged-sse")
RESPONSES_CONNECTIONS = 32
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
    variant: str  # sent as x-tuned-proxy-variant; "-" for none: not tuned-proxy
    pid: int  # the process whose CPU time is this target's
    cpu: int  # the CPU it is pinned to

    @property
    def is_proxy(self) -> bool:
        return self.variant != "-"

    def path(self, mode: str) -> str:
        """Where this target takes `mode`: nginx and the forwarder at the upstream's path
        (the forwarder passes the path on), tuned-proxy at the API's."""
        spec = MODES[mode]
        return spec.proxy_path if self.is_proxy else spec.upstream_path


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
        "-s", str(BENCH / "wrk_post.lua"), target.base_url + target.path(mode),
        "--", str(FIXTURES / MODES[mode].request), target.variant, str(request_cap(duration_s)),
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
    spec = MODES[mode]
    body = (FIXTURES / spec.request).read_bytes()
    headers = {"Content-Type": "application/json"}
    if target.is_proxy:
        headers["x-tuned-proxy-variant"] = target.variant
    url = target.base_url + target.path(mode)
    status, answer_headers, answer = http_post(url, body, headers)
    problems = []
    if status != 200:
        problems.append(f"status {status}: {answer[:300]!r}")
    lowered = {name.lower(): value for name, value in answer_headers.items()}
    if target.is_proxy and lowered.get("x-tuned-proxy-variant") != target.variant:
        problems.append(f"variant {lowered.get('x-tuned-proxy-variant')!r}")
    # The client sees its own API; nginx and the forwarder give what the upstream answers.
    api = spec.api if target.is_proxy else spec.upstream_api
    problem = ANSWER_CHECKS[api, spec.stream](answer)
    if problem is not None:
        problems.append(problem)
    if problems:
        raise BenchError(f"{target.name} ({mode}) is not answering right: {'; '.join(problems)}")


def chat_answer_problem(answer: bytes) -> str | None:
    return None if b'"tool_calls"' in answer else "the answer has no tool call"


def chat_stream_problem(answer: bytes) -> str | None:
    if answer.rstrip().endswith(b"data: [DONE]"):
        return None
    return "the stream does not end with data: [DONE]"


def responses_answer_problem(answer: bytes) -> str | None:
    try:
        response = jsonutil.loads(answer)
    except jsonutil.JSONDecodeError:
        return "the answer is not JSON"
    return response_problem(response)


def responses_stream_problem(answer: bytes) -> str | None:
    last = answer.rstrip().rsplit(b"\n\n", 1)[-1]
    event, _, data = last.partition(b"\ndata: ")
    if event != b"event: response.completed":
        return f"the stream does not end with response.completed: {last[:80]!r}"
    try:
        event = jsonutil.loads(data)
    except jsonutil.JSONDecodeError:
        return "the response.completed event is not JSON"
    return response_problem(event.get("response") if isinstance(event, dict) else None)


def response_problem(response: Any) -> str | None:
    """What is wrong with a Response that should call a tool, if anything."""
    output = response.get("output") if isinstance(response, dict) else None
    if not output or not isinstance(output[0], dict):
        return "the answer is not a Response with output"
    kind = output[0].get("type")
    return None if kind == "function_call" else f"the Response's first output is a {kind}"


ANSWER_CHECKS = {
    ("chat", False): chat_answer_problem,
    ("chat", True): chat_stream_problem,
    ("responses", False): responses_answer_problem,
    ("responses", True): responses_stream_problem,
}


def proxy_routes(upstream: str, modes: Iterable[str]) -> dict[str, Any]:
    """A tuned-proxy config with the route of each mode, upstream at nginx's `upstream`."""
    specs = [MODES[mode] for mode in modes]
    base_urls = {spec.route: upstream + spec.upstream_base for spec in specs}
    settings = {spec.route: spec.responses_setting for spec in specs if spec.responses_setting}
    return proxy_config(base_urls, settings)


def start_targets(
    group_dir: Path, stack: ExitStack, modes: Iterable[str] = MODES
) -> tuple[list[Target], IO[bytes]]:
    """nginx, the forwarder and tuned-proxy with the routes of `modes`; the four targets."""
    group = stack.enter_context(processes(group_dir))
    nginx_port, forwarder_port, proxy_port = free_port(), free_port(), free_port()
    nginx = start_nginx(group, nginx_port)
    upstream = f"http://{LOOPBACK}:{nginx_port}"
    floor = start_forwarder(group, forwarder_port, upstream)
    log = stack.enter_context((group_dir / "tuned-proxy.log").open("ab"))
    tuned = start_tuned_proxy(group, proxy_port, proxy_routes(upstream, modes), log)
    proxy_url = f"http://{LOOPBACK}:{proxy_port}"
    forwarder_url = f"http://{LOOPBACK}:{forwarder_port}"
    targets = [
        Target(DIRECT, upstream, "-", nginx.pid, LOAD_CPU),
        Target(FLOOR, forwarder_url, "-", floor.pid, PROXY_CPU),
        Target(SLIM, proxy_url, "slim", tuned.pid, PROXY_CPU),
        Target(IDENTICAL, proxy_url, "identical", tuned.pid, PROXY_CPU),
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


def warm_up(
    part: str, targets: Iterable[Target], modes: Iterable[str], settings: LoadSettings
) -> None:
    """Check each target answers each mode right, then a short run of each."""
    targets, modes = list(targets), list(modes)
    for target in targets:
        for mode in modes:
            check_target(target, mode)
    progress(f"{part}: warm-up")
    for target in targets:
        for mode in modes:
            wrk(target, mode, WARMUP_CONNECTIONS, settings.warmup_s)


def run_load(settings: LoadSettings, run_dir: Path) -> tuple[list[Sample], str]:
    """Every sample, and a line on the state of the metrics endpoint."""
    with ExitStack() as stack:
        # Only the chat routes: the load part's proxy is configured as it always was.
        targets, log = start_targets(run_dir, stack, CHAT_MODES)
        warm_up("load", targets, CHAT_MODES, settings)
        request_log_lines(log)
        samples = []
        for rep in range(1, settings.reps + 1):
            for mode in CHAT_MODES:
                for connections in CONCURRENCY:
                    progress(f"load: rep {rep}/{settings.reps}, {mode}, c={connections}")
                    for target in targets:  # interleaved: drift and noise hit all alike
                        samples.append(measure(target, mode, connections, rep, settings, log))
        metrics = metrics_state(targets[2].base_url)
    return samples, metrics


def run_responses(settings: LoadSettings, run_dir: Path) -> tuple[list[Sample], str]:
    """tuned-proxy alone at c=32, each policy through each mode of `RESPONSES_ORDER`: every
    sample, and a line on the state of the metrics endpoint."""
    with ExitStack() as stack:
        targets, log = start_targets(run_dir, stack, RESPONSES_ORDER)
        tuned = [target for target in targets if target.name in TUNED]
        warm_up("responses", tuned, RESPONSES_ORDER, settings)
        request_log_lines(log)
        runs = [(target, mode) for target in tuned for mode in RESPONSES_ORDER]
        samples = []
        for rep in range(1, settings.reps + 1):
            progress(f"responses: rep {rep}/{settings.reps}, c={RESPONSES_CONNECTIONS}")
            # Every other repetition in reverse: a drift within one favours no mode.
            for target, mode in runs if rep % 2 else runs[::-1]:
                sample = measure(target, mode, RESPONSES_CONNECTIONS, rep, settings, log)
                samples.append(sample)
        metrics = metrics_state(tuned[0].base_url)
    return samples, metrics
