"""What every benchmark script needs: tools, pinned processes, ports, /proc readings, configs.

The machine is split in two: the process under test runs alone on `PROXY_CPU`; the load
generator, the upstream and the harness itself share `LOAD_CPU`. Every process a benchmark
starts is stopped by the `Processes` that started it, whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parents[1]
FIXTURES = BENCH / "fixtures"
POLICIES = REPO / "policies"
LOOPBACK = "127.0.0.1"

PROXY_CPU = 0
LOAD_CPU = 1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# How to get each outside tool, for the message when one is missing.
INSTALL_HINTS = {
    "nginx": "apt-get update && apt-get install -y nginx-light",
    "wrk": "apt-get update && apt-get install -y wrk",
    "taskset": "apt-get install -y util-linux",
}


class BenchError(RuntimeError):
    """A set-up or sanity problem that makes the figures meaningless: the run stops."""


def check_tools(names: Sequence[str]) -> None:
    """Fail with the install command of every missing tool, and on a machine too small."""
    missing = [name for name in names if shutil.which(name) is None]
    problems = [f"{name} is missing; install it with: {INSTALL_HINTS[name]}" for name in missing]
    if (os.cpu_count() or 1) < 2:
        problems.append("the benchmark needs 2 CPUs: one for the proxy, one for the load")
    if problems:
        raise BenchError("\n".join(problems))


def pin_self_to_load_cpu() -> None:
    """Keep the harness (and every client it runs in process) off the proxy's CPU."""
    os.sched_setaffinity(0, {LOAD_CPU})


def raise_open_files_limit(wanted: int = 65536) -> None:
    """Thousands of concurrent streams need thousands of sockets, in every process started."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def progress(message: str) -> None:
    """A timestamped line on stderr: the report itself goes to stdout."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """Return once something accepts on `port`; fail early if `process` died on the way."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{process.args!r} exited with {process.returncode} on start-up")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return
        time.sleep(0.05)
    raise BenchError(f"nothing listens on port {port} after {timeout_s:g} s: {process.args!r}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, its threads and its waited-for children."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may contain spaces: fields are counted after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return (utime + stime + cutime + cstime) / CLOCK_TICKS


def cpu_busy_seconds(cpu: int) -> float:
    """Time CPU `cpu` has not been idle since boot: every process, interrupts, steal."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, line.split()[1:9])
            return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS
    raise BenchError(f"no cpu{cpu} line in /proc/stat")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for process {pid}")


@dataclass
class Processes:
    """The processes a benchmark started, each pinned to a CPU; `stop_all` ends exactly them."""

    run_dir: Path
    started: list[subprocess.Popen[bytes]]

    def start(
        self,
        name: str,
        command: Sequence[str],
        cpu: int,
        stderr: IO[bytes] | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        with contextlib.ExitStack() as stack:
            # The child gets its own copy of the descriptor: ours can close at once.
            log = stderr or stack.enter_context((self.run_dir / f"{name}.log").open("ab"))
            process = subprocess.Popen(
                ["taskset", "-c", str(cpu), *command],
                cwd=self.run_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
            )
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if process in self.started:
            self.started.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self.started)):
            self.stop(process)


@contextlib.contextmanager
def processes(run_dir: Path) -> Iterator[Processes]:
    group = Processes(run_dir, [])
    try:
        yield group
    finally:
        group.stop_all()


def start_nginx(group: Processes, port: int) -> subprocess.Popen[bytes]:
    """nginx on the load CPU, answering from the fixtures (see nginx.conf.template)."""
    template = (BENCH / "nginx.conf.template").read_text(encoding="utf-8")
    config = (
        template.replace("@RUN_DIR@", str(group.run_dir))
        .replace("@PORT@", str(port))
        .replace("@FIXTURES@", str(FIXTURES))
    )
    path = group.run_dir / "nginx.conf"
    path.write_text(config, encoding="utf-8")
    nginx = shutil.which("nginx") or "nginx"
    process = group.start("nginx", [nginx, "-p", str(group.run_dir), "-c", str(path)], LOAD_CPU)
    wait_for_port(port, process)
    return process


def start_forwarder(group: Processes, port: int, upstream: str) -> subprocess.Popen[bytes]:
    """The zero-logic floor on the proxy CPU."""
    command = [
        sys.executable,
        str(BENCH / "forwarder.py"),
        "--port",
        str(port),
        "--upstream",
        upstream,
    ]
    process = group.start("forwarder", command, PROXY_CPU)
    wait_for_port(port, process)
    return process


def start_tuned_proxy(
    group: Processes,
    port: int,
    config: dict[str, Any],
    log: IO[bytes],
    source: Path | None = None,
) -> subprocess.Popen[bytes]:
    """tuned-proxy on the proxy CPU as an operator runs it: info level, JSON request log.

    `source`: a folder holding another revision's `proxy` package, run instead of this one.
    """
    config_path = group.run_dir / f"tuned-proxy-{port}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    command = [
        sys.executable, "-m", "proxy", "serve", "-c", str(config_path),
        "--host", LOOPBACK, "--port", str(port), "--log-level", "info", "--log-format", "json",
    ]  # fmt: skip
    env = None if source is None else {**os.environ, "PYTHONPATH": str(source)}
    process = group.start("tuned-proxy", command, PROXY_CPU, stderr=log, env=env)
    wait_for_port(port, process)
    return process


def proxy_config(
    base_urls: dict[str, str], responses: dict[str, str] | None = None
) -> dict[str, Any]:
    """A tuned-proxy config with one route per upstream: route name -> upstream base URL.

    Every route offers the variants `slim` (support-slim: the 20 tools slimmed) and `identical`
    (support-full: the 20 tools made identical to training), pinned per request with
    `x-tuned-proxy-variant`. `responses` sets how a route's upstream takes Responses API
    requests (`native` or `bridge`); the others say nothing about it, so a revision from
    before the Responses API reads the config too. Everything else is the shipped default.
    """
    variants = [
        {"name": "slim", "model": "support-ft-slim", "policy": "support-slim"},
        {"name": "identical", "model": "support-ft-full", "policy": "support-full"},
    ]
    responses = responses or {}
    return {
        "server": {"host": LOOPBACK, "port": 0},
        "policies_dir": str(POLICIES),
        "upstreams": {
            route: {
                "kind": "compatible",
                "base_url": base_url,
                **({"responses": responses[route]} if route in responses else {}),
            }
            for route, base_url in base_urls.items()
        },
        "routes": {
            route: {
                "allow_variant_override": True,
                "variants": [{**variant, "upstream": route} for variant in variants],
            }
            for route in base_urls
        },
    }


def http_get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            return int(answer.status), bytes(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_post(
    url: str, body: bytes, headers: dict[str, str], timeout_s: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return int(answer.status), dict(answer.headers.items()), bytes(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def tool_version(command: Sequence[str]) -> str:
    """The first line a tool prints about its version ('' when it prints nothing)."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else ""


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def machine_summary() -> str:
    """One line for the report: when, on what, with which versions."""
    nginx = tool_version(["nginx", "-v"]).removeprefix("nginx version: ")
    wrk = tool_version(["wrk", "--version"]).split(" [")[0]
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {os.cpu_count()} × {cpu_model()} · "
        f"Python {platform.python_version()} · {nginx} · {wrk} · load average "
        f"{os.getloadavg()[0]:.2f} at start"
    )


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if not ordered:
        return float("nan")
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (`fraction` in [0, 1])."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, round(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]
