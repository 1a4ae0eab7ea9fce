"""Memory and latency under abuse: what a hostile key holder can make one proxy process hold.

Each scenario runs against a fresh `tuned-proxy serve` on the built-in mock upstream, for this
tree and, with `--base REV`, for another revision's `proxy` package, one after the other:

- **schemas**: sequential requests, each offering one new function with many empty properties
  and forcing a call of it; the fake model answers the call, so the proxy checks its arguments
  against the client's schema (the argument-check cache). RSS before and after.
- **bodies**: bursts of concurrent 4 MB bodies whose `tools` is a list of empty objects.
  Peak RSS (VmHWM) added, RSS after, and `/healthz` latency measured during the burst.
- **scrapes**: 16 scrapers of `/metrics` in a loop, with a normal request timed among them.
- **capture**: the route captures every exchange; bursts of concurrent 3 MB conversations,
  each answered in full and so each an example to write. Peak RSS added, RSS after, `/healthz`
  latency, and the captures written and dropped (this tree only: a base before capture
  has no such setting).

It prints figures; it asserts nothing. Usage:
    python tests/bench/abuse.py [--base REV] [--scenarios schemas,bodies,scrapes,capture]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
from ab import export_package
from harness import (
    LOOPBACK,
    PROXY_CPU,
    BenchError,
    Processes,
    free_port,
    median,
    percentile,
    processes,
    rss_bytes,
    wait_for_port,
)

KEY = "sk-abuse-bench"
MB = 1024 * 1024
MESSAGES = [{"role": "user", "content": "call it"}]


def config(capture_dir: Path | None = None) -> dict[str, Any]:
    route: dict[str, Any] = {"variants": [{"name": "v", "upstream": "mock", "model": "m"}]}
    if capture_dir is not None:
        route["capture"] = {"dir": str(capture_dir), "sample": 1.0}
    return {
        "client_keys_env": "ABUSE_KEYS",
        "upstreams": {"mock": {"kind": "mock"}},
        "routes": {"chat": route},
    }


def start(group: Processes, source: Path | None, name: str) -> tuple[int, int]:
    """A proxy process (this tree, or the package under `source`): (pid, port)."""
    import os

    port = free_port()
    path = group.run_dir / f"{name}.yaml"
    captured = group.run_dir / f"{name}-captured" if name.endswith("capture") else None
    path.write_text(json.dumps(config(captured)))
    env = {**os.environ, "ABUSE_KEYS": KEY}
    if source is not None:
        env["PYTHONPATH"] = str(source)
    command = [sys.executable, "-m", "proxy", "serve", "-c", str(path), "--port", str(port)]
    command += ["--log-level", "warning"]
    process = group.start(name, command, PROXY_CPU, env=env)
    wait_for_port(port, process)
    return process.pid, port


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmHWM for process {pid}")


def schema_body(index: int, properties: int) -> bytes:
    name = f"f{index}"
    parameters = {"type": "object", "properties": {f"p{i}_{index}": {} for i in range(properties)}}
    tool = {"type": "function", "function": {"name": name, "parameters": parameters}}
    choice = {"type": "function", "function": {"name": name}}
    body = {"model": "chat", "messages": MESSAGES, "tools": [tool], "tool_choice": choice}
    return json.dumps(body).encode()


def empty_objects_body(megabytes: int) -> bytes:
    count = (megabytes * MB - 100) // 3  # within the default 4 MiB body limit
    tools = b"[" + b",".join([b"{}"] * count) + b"]"
    return b'{"model":"chat","messages":[{"role":"user","content":"x"}],"tools":' + tools + b"}"


async def post(session: aiohttp.ClientSession, url: str, body: bytes) -> int:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    async with session.post(f"{url}/v1/chat/completions", data=body, headers=headers) as answer:
        await answer.read()
        return answer.status


async def schemas(pid: int, url: str, properties: int, count: int) -> str:
    async with aiohttp.ClientSession() as session:
        before = rss_bytes(pid)
        statuses: dict[int, int] = {}
        for index in range(count):
            status = await post(session, url, schema_body(index, properties))
            statuses[status] = statuses.get(status, 0) + 1
        after = rss_bytes(pid)
    size = len(schema_body(0, properties)) / 1024
    return (
        f"{count} × {size:.0f} KB schemas of {properties} properties: RSS {before / MB:.0f} → "
        f"{after / MB:.0f} MB; statuses {statuses}"
    )


async def pinged(url: str, stop: asyncio.Event) -> list[float]:
    """`/healthz` round trips in ms, one every 20 ms until `stop`."""
    times = []
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            started = time.perf_counter()
            async with session.get(f"{url}/healthz") as answer:
                await answer.read()
            times.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.02)
    return times


async def bodies(pid: int, url: str, concurrent: int) -> str:
    body = empty_objects_body(4)
    peak_before, before = peak_rss_bytes(pid), rss_bytes(pid)
    stop = asyncio.Event()
    pings = asyncio.create_task(pinged(url, stop))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        statuses = await asyncio.gather(*(post(session, url, body) for _ in range(concurrent)))
    stop.set()
    times = await pings
    peak, after = peak_rss_bytes(pid), rss_bytes(pid)
    return (
        f"{concurrent} × 4 MB bodies at once: peak RSS +{(peak - peak_before) / MB:.0f} MB, "
        f"RSS {before / MB:.0f} → {after / MB:.0f} MB; /healthz p50 {median(times):.1f} ms, "
        f"max {max(times):.1f} ms ({len(times)} pings); statuses {sorted(set(statuses))}"
    )


async def scrapes(pid: int, url: str, scrapers: int = 16, requests: int = 50) -> str:
    body = json.dumps({"model": "chat", "messages": MESSAGES}).encode()
    stop = asyncio.Event()

    async def scrape_loop(session: aiohttp.ClientSession) -> int:
        done = 0
        while not stop.is_set():
            async with session.get(f"{url}/metrics") as answer:
                await answer.read()
            done += 1
        return done

    async with aiohttp.ClientSession() as session:
        for _ in range(20):  # some series to render
            await post(session, url, body)
        started = time.perf_counter()
        async with session.get(f"{url}/metrics") as answer:
            size = len(await answer.read())
        one_scrape = (time.perf_counter() - started) * 1000
        quiet = [await timed(session, url, body) for _ in range(requests)]
        loops = [asyncio.create_task(scrape_loop(session)) for _ in range(scrapers)]
        await asyncio.sleep(0.2)
        busy = [await timed(session, url, body) for _ in range(requests)]
        stop.set()
        done = sum(await asyncio.gather(*loops))
    return (
        f"/metrics {size / 1024:.0f} KB in {one_scrape:.1f} ms; a request's p50 "
        f"{median(quiet):.1f} ms alone, {median(busy):.1f} ms (p90 {percentile(busy, 0.9):.1f}) "
        f"among {scrapers} scrapers ({done} scrapes)"
    )


async def captures(pid: int, url: str, concurrent: int, bursts: int = 3) -> str:
    text = "where is my order? " * (3 * MB // 19)
    body = json.dumps({"model": "chat", "messages": [{"role": "user", "content": text}]})
    peak_before, before = peak_rss_bytes(pid), rss_bytes(pid)
    stop = asyncio.Event()
    pings = asyncio.create_task(pinged(url, stop))
    connector = aiohttp.TCPConnector(limit=0)
    statuses: list[int] = []
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(bursts):
            asks = (post(session, url, body.encode()) for _ in range(concurrent))
            statuses += await asyncio.gather(*asks)
        await asyncio.sleep(2)  # the writer catches up
        async with session.get(f"{url}/metrics") as answer:
            metrics = await answer.text()
    stop.set()
    times = await pings
    peak, after = peak_rss_bytes(pid), rss_bytes(pid)
    outcomes = {
        line.split('outcome="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("tuned_proxy_capture_examples_total{")
    }
    return (
        f"{bursts} bursts of {concurrent} × 3 MB conversations captured: peak RSS "
        f"+{(peak - peak_before) / MB:.0f} MB, RSS {before / MB:.0f} → {after / MB:.0f} MB; "
        f"/healthz p50 {median(times):.1f} ms, max {max(times):.1f} ms; captures {outcomes}; "
        f"statuses {sorted(set(statuses))}"
    )


async def timed(session: aiohttp.ClientSession, url: str, body: bytes) -> float:
    started = time.perf_counter()
    await post(session, url, body)
    return (time.perf_counter() - started) * 1000


Scenario = Callable[[int, str], Awaitable[str]]
SCENARIOS: dict[str, list[Scenario]] = {
    "schemas": [
        lambda pid, url: schemas(pid, url, 50_000, 300),
        lambda pid, url: schemas(pid, url, 4_000, 300),
    ],
    "bodies": [lambda pid, url: bodies(pid, url, 16), lambda pid, url: bodies(pid, url, 40)],
    "scrapes": [scrapes],
    "capture": [lambda pid, url: captures(pid, url, 16)],
}


def run(label: str, source: Path | None, names: list[str], run_dir: Path) -> None:
    for name in names:
        for scenario in SCENARIOS[name]:
            with processes(run_dir) as group:
                pid, port = start(group, source, f"{label.replace(' ', '-')}-{name}")
                line = asyncio.run(scenario(pid, f"http://{LOOPBACK}:{port}"))
                print(f"{label} · {name}: {line}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="also measure this revision, first")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = parser.parse_args()
    names = [name for name in args.scenarios.split(",") if name]
    try:
        if unknown := set(names) - set(SCENARIOS):
            raise BenchError(f"unknown scenarios: {', '.join(sorted(unknown))}")
        with ExitStack() as stack:
            run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="abuse-")))
            if args.base:
                source = export_package(args.base, run_dir / "base")
                on_base = [name for name in names if name != "capture"]
                run(f"base {args.base}", source, on_base, run_dir)
            run("this tree", None, names, run_dir)
    except BenchError as exc:
        print(f"abuse: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
