"""Soak: a long run of mixed traffic through `tuned-proxy serve`, with nothing lost.

    .venv/bin/python tests/bench/soak.py                      # 100,000 requests
    .venv/bin/python tests/bench/soak.py --requests 20000 --concurrency 16

The proxy runs alone on the proxy CPU (taskset), in front of the built-in fake model served
as its own process (`tuned-proxy mock-upstream`) on the load CPU, where this script drives
it. The traffic cycles through JSON and streamed answers, tool calls under two policies,
upstream errors (429, a 503 with a fallback, a stream cut mid-way, a body that is not
JSON) and client errors (unknown model, invalid JSON). Every answer is checked against
what its kind must get. Along the way the proxy's resident memory and open file descriptors
are sampled; at the end its `/metrics` and its request log are compared with what was sent.

Bounded: at most `--requests` requests and `--max-minutes` minutes, to 127.0.0.1 only; every
process it starts is stopped when it ends. It prints a Markdown report and exits 1 when an
answer was unexpected or a count disagrees.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from harness import (
    LOAD_CPU,
    LOOPBACK,
    POLICIES,
    PROXY_CPU,
    check_tools,
    free_port,
    pin_self_to_load_cpu,
    processes,
    progress,
    raise_open_files_limit,
    rss_bytes,
    start_tuned_proxy,
    wait_for_port,
)
from prometheus_client.parser import text_string_to_metric_families

from proxy.logs import FLUSH_INTERVAL_S

CLIENT_KEY = "sk-soak-client"
UPSTREAM_KEY = "sk-soak-upstream"
SUPPORT_TOOLS = json.loads((POLICIES / "support.tools.json").read_text())
LOOKUP = [{"role": "user", "content": "Can you look up the status of my order ORD-842131?"}]
HELLO = [{"role": "user", "content": "Hello there, how are you?"}]


# ----------------------------------------------------------------------------- the traffic


@dataclass(frozen=True)
class Kind:
    """One kind of request and what its answer must be."""

    name: str
    route: str  # the route label it is counted under ("" before routing)
    status: int
    body: dict[str, Any] | bytes
    ends: str = ""  # for streams: "done" ([DONE]) or "error" (a final error event)

    @property
    def stream(self) -> bool:
        return bool(self.ends)


def ask(route: str, messages: list[dict[str, str]] = HELLO, **fields: Any) -> dict[str, Any]:
    return {"model": route, "messages": messages, **fields}


KINDS = {
    kind.name: kind
    for kind in (
        Kind("json", "chat", 200, ask("chat")),
        Kind("stream", "chat", 200, ask("chat", stream=True), "done"),
        Kind("tools", "support", 200, ask("support", LOOKUP, tools=SUPPORT_TOOLS)),
        Kind(
            "tools-stream",
            "support",
            200,
            ask("support", LOOKUP, tools=SUPPORT_TOOLS, stream=True),
            "done",
        ),
        Kind("rate-limited", "limited", 429, ask("limited")),
        Kind("fallback", "flaky", 200, ask("flaky")),
        Kind("cut-stream", "cut", 200, ask("cut", stream=True), "error"),
        Kind("not-json", "garbage", 502, ask("garbage")),
        Kind("unknown-model", "", 404, ask("no-such-route")),
        Kind("invalid-json", "", 400, b'{"model": "chat", "messages": ['),
    )
}
# One cycle of the mix: mostly answers, one request in five an error of some kind.
SCHEDULE = (
    ["json"] * 4 + ["stream"] * 4 + ["tools"] * 3 + ["tools-stream"] * 3
    + ["rate-limited", "fallback", "cut-stream", "not-json", "unknown-model", "invalid-json"]
)  # fmt: skip


def soak_config() -> dict[str, Any]:
    def variant(name: str, model: str, policy: str | None = None) -> dict[str, Any]:
        spec = {"name": name, "upstream": "fake", "model": model}
        return {**spec, "policy": policy} if policy else spec

    return {
        "client_keys_env": "SOAK_CLIENT_KEYS",
        "policies_dir": str(POLICIES),
        "upstreams": {},  # filled in with the fake's address
        "routes": {
            "chat": {"variants": [variant("plain", "ft-plain")]},
            "support": {
                "variants": [
                    variant("full", "ft-support-full", "support-full"),
                    variant("slim", "ft-support-slim", "support-slim"),
                ]
            },
            "limited": {"variants": [variant("v", "ft-error-429")]},
            "flaky": {
                "variants": [variant("v", "ft-error-503")],
                "fallback": [{"upstream": "fake", "model": "ft-backup"}],
            },
            "cut": {"variants": [variant("v", "ft-stream-cut")]},
            "garbage": {"variants": [variant("v", "ft-bad-json")]},
        },
    }


def unexpected(kind: Kind, status: int, raw: bytes) -> str | None:
    """Why an answer is not what its kind must get, or None."""
    if status != kind.status:
        return f"HTTP {status}"
    if status >= 400:
        error = json.loads(raw).get("error")
        return None if isinstance(error, dict) and error.get("message") else "no OpenAI error"
    if not kind.stream:
        answer = json.loads(raw)
        return None if answer.get("choices") else "no choices"
    last = [event for event in raw.split(b"\n\n") if event.startswith(b"data: ")][-1]
    ended = "done" if last == b"data: [DONE]" else "error" if b'"error"' in last else "cut"
    return None if ended == kind.ends else f"stream ended with {ended}"


# ----------------------------------------------------------------------------- the run


@dataclass
class Sample:
    done: int
    seconds: float
    rss: int
    fds: int


@dataclass
class Run:
    sent: Counter[str] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    samples: list[Sample] = field(default_factory=list)  # under load, every `--sample-every`
    before: Sample = field(default_factory=lambda: Sample(0, 0.0, 0, 0))  # at rest, first
    after: Sample = field(default_factory=lambda: Sample(0, 0.0, 0, 0))  # at rest again, last
    seconds: float = 0.0

    @property
    def done(self) -> int:
        return sum(self.sent.values())


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def drive(
    url: str, pid: int, total: int, concurrency: int, deadline: float, every: int
) -> Run:
    """`total` requests from `concurrency` workers (or until `deadline`), checked one by one."""
    run = Run()
    started = time.monotonic()
    counter = iter(range(total))
    headers = {"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"}
    encoded = {
        name: kind.body if isinstance(kind.body, bytes) else json.dumps(kind.body).encode()
        for name, kind in KINDS.items()
    }

    def sample() -> Sample:
        return Sample(run.done, time.monotonic() - started, rss_bytes(pid), fd_count(pid))

    async def worker(session: aiohttp.ClientSession) -> None:
        for number in counter:
            if time.monotonic() > deadline:
                return
            kind = KINDS[SCHEDULE[number % len(SCHEDULE)]]
            async with session.post(url, data=encoded[kind.name], headers=headers) as response:
                raw = await response.read()
            problem = unexpected(kind, response.status, raw)
            if problem is not None:
                run.problems[f"{kind.name}: {problem}"] += 1
            run.sent[kind.name] += 1
            if run.done % every == 0:
                run.samples.append(sample())
                progress(f"{run.done:,} requests, RSS {run.samples[-1].rss / 2**20:.1f} MiB")

    run.before = sample()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    run.seconds = time.monotonic() - started
    # The proxy's idle upstream connections expire after aiohttp's 15 s keep-alive: wait for
    # that, then the descriptors must be what they were before the first request.
    for _ in range(300):
        if fd_count(pid) <= run.before.fds:
            break
        await asyncio.sleep(0.1)
    run.after = sample()
    return run


# ----------------------------------------------------------------------------- the checks


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    import urllib.request

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def counted(samples: dict[Any, float], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def count_checks(
    run: Run, samples: dict[Any, float], log_lines: int
) -> list[tuple[str, float, float]]:
    """(what, expected, counted) for each count the proxy must agree on."""
    by_route: Counter[tuple[str, int]] = Counter()
    for name, number in run.sent.items():
        by_route[(KINDS[name].route, KINDS[name].status)] += number
    checks = [("requests_total, all", run.done, counted(samples, "tuned_proxy_requests_total"))]
    for (route, status), number in sorted(by_route.items()):
        value = counted(samples, "tuned_proxy_requests_total", route=route, code=str(status))
        checks.append((f"requests_total{{route={route!r},code={status}}}", number, value))
    checks += [
        (
            "fallbacks_total{route='flaky'}",
            run.sent["fallback"],
            counted(samples, "tuned_proxy_fallbacks_total", route="flaky"),
        ),
        (
            "upstream_errors_total{reason='status_429'}",
            run.sent["rate-limited"],
            counted(samples, "tuned_proxy_upstream_errors_total", reason="status_429"),
        ),
        (
            "upstream_errors_total{reason='broken_stream'}",
            run.sent["cut-stream"],
            counted(samples, "tuned_proxy_upstream_errors_total", reason="broken_stream"),
        ),
        (
            "upstream_errors_total{reason='invalid_response'}",
            run.sent["not-json"],
            counted(samples, "tuned_proxy_upstream_errors_total", reason="invalid_response"),
        ),
        ("in_flight_requests", 0, counted(samples, "tuned_proxy_in_flight_requests")),
        ("request log lines", run.done, log_lines),
    ]
    return checks


def request_log_lines(path: Path) -> int:
    """The proxy's per-request log lines (every line must be JSON)."""
    lines = 0
    with path.open("rb") as log:
        for raw in log:
            if json.loads(raw).get("event") == "request":
                lines += 1
    return lines


# ----------------------------------------------------------------------------- the report


def report(run: Run, checks: list[tuple[str, float, float]], concurrency: int) -> str:
    warm = next(s for s in run.samples if s.done >= run.done // 10)
    last = run.samples[-1]
    peak_rss = max(s.rss for s in run.samples)
    peak_fds = max(s.fds for s in run.samples)
    before, after = run.before, run.after
    mib = 2**20
    lines = [
        "## Soak",
        "",
        f"- {run.done:,} requests in {run.seconds:.1f} s ({run.done / run.seconds:,.0f} req/s), "
        f"{concurrency} concurrent, the proxy pinned to CPU {PROXY_CPU}",
        "- mix: " + ", ".join(f"{name} {number:,}" for name, number in sorted(run.sent.items())),
        f"- unexpected answers: {sum(run.problems.values())}"
        + "".join(f"\n  - {problem}: {number}" for problem, number in run.problems.items()),
        "",
        f"| | before, idle | at {warm.done:,} | at {last.done:,} | peak | growth "
        f"{warm.done:,} → {last.done:,} | after, idle |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| RSS MiB | {before.rss / mib:.1f} | {warm.rss / mib:.1f} | {last.rss / mib:.1f} "
        f"| {peak_rss / mib:.1f} | {(last.rss - warm.rss) / mib:+.1f} | {after.rss / mib:.1f} |",
        f"| open fds | {before.fds} | {warm.fds} | {last.fds} | {peak_fds} "
        f"| {last.fds - warm.fds:+d} | {after.fds} |",
        "",
        "| count | sent | the proxy counted | |",
        "| --- | --- | --- | --- |",
    ]
    for what, expected, value in checks:
        verdict = "ok" if expected == value else "DIFFERS"
        lines.append(f"| {what} | {expected:,.0f} | {value:,.0f} | {verdict} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-minutes", type=float, default=30.0)
    parser.add_argument("--sample-every", type=int, default=5_000)
    args = parser.parse_args(argv)

    check_tools(["taskset"])
    pin_self_to_load_cpu()
    raise_open_files_limit()
    os.environ["SOAK_CLIENT_KEYS"] = CLIENT_KEY
    os.environ["SOAK_UPSTREAM_KEY"] = UPSTREAM_KEY
    with (
        tempfile.TemporaryDirectory(prefix="tuned-proxy-soak-") as folder,
        processes(Path(folder)) as group,
    ):
        run_dir = Path(folder)
        upstream_port, proxy_port = free_port(), free_port()
        mock = group.start(
            "mock-upstream",
            [
                sys.executable,
                "-m",
                "proxy",
                "mock-upstream",
                "--host",
                LOOPBACK,
                "--port",
                str(upstream_port),
            ],
            LOAD_CPU,
        )
        wait_for_port(upstream_port, mock)
        config = soak_config()
        config["upstreams"]["fake"] = {
            "kind": "compatible",
            "base_url": f"http://{LOOPBACK}:{upstream_port}/v1",
            "api_key_env": "SOAK_UPSTREAM_KEY",
        }
        log_path = run_dir / "proxy.log"
        with log_path.open("ab") as log:
            proxy = start_tuned_proxy(group, proxy_port, config, log)
        url = f"http://{LOOPBACK}:{proxy_port}"
        progress(f"soak: {args.requests:,} requests, {args.concurrency} at a time, to {url}")
        deadline = time.monotonic() + args.max_minutes * 60
        run = asyncio.run(
            drive(
                f"{url}/v1/chat/completions",
                proxy.pid,
                args.requests,
                args.concurrency,
                deadline,
                args.sample_every,
            )
        )
        samples = scrape(url)
        time.sleep(2 * FLUSH_INTERVAL_S)  # the proxy's last request lines are still buffered
        checks = count_checks(run, samples, request_log_lines(log_path))
    print(report(run, checks, args.concurrency))
    agreed = all(expected == value for _, expected, value in checks)
    at_rest = run.after.fds <= run.before.fds
    return 0 if agreed and at_rest and not run.problems and run.done == args.requests else 1


if __name__ == "__main__":
    sys.exit(main())
