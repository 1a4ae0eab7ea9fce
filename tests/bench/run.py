"""The benchmark in one command: set up, measure, print a Markdown table ready to paste.

    .venv/bin/python tests/bench/run.py [--quick] [--reps N] [--duration S] [--parts P,…]

Parts (all by default):
- load: nginx (a fixed answer and a fixed SSE stream) as the upstream; the zero-logic aiohttp
  forwarder and tuned-proxy (support-slim and support-full, 20 tools, request log and metrics
  on) pinned to CPU 0; wrk and nginx on CPU 1. wrk drives direct, forwarder, slim and
  identical in turn, at c=1, 32 and 128, JSON and streaming, for N repetitions; medians.
- responses: the same set-up, tuned-proxy alone at c=32: the chat request, the same request in
  the Responses API to an upstream that speaks it, and bridged to a chat upstream, JSON and
  streaming, for each policy; CPU per request and req/s against the chat path's.
- rewrite: the rewrite alone, µs per request for 1, 20 and 128 tools (bench_rewrite.py).
- streams: added time to first byte, and 1,000 concurrent slow streams (bench_streams.py).

Every load is bounded in time and count and goes to 127.0.0.1 only. Needs nginx, wrk and
taskset (it says how to install whichever is missing) and 2 CPUs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import bench_rewrite
import bench_streams
from harness import (
    BenchError,
    check_tools,
    machine_summary,
    pin_self_to_load_cpu,
    progress,
    raise_open_files_limit,
)
from load import LoadSettings, run_load, run_responses
from report import LoadResults, Report

PARTS = ("load", "responses", "rewrite", "streams")
NEEDS_WRK = ("load", "responses")


@dataclass(frozen=True)
class Settings:
    load: LoadSettings
    parts: tuple[str, ...]
    quick: bool


def parse_settings(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition of 2 s, short streams")
    parser.add_argument("--reps", type=int, help="repetitions (default 3; quick 1)")
    parser.add_argument(
        "--duration", type=int, help="whole seconds per wrk run (default 5; quick 2)"
    )
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}"
    )
    args = parser.parse_args(argv)
    parts = tuple(part.strip() for part in args.parts.split(",") if part.strip())
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s): {', '.join(unknown)}")
    reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    duration = args.duration if args.duration is not None else (2 if args.quick else 5)
    if reps < 1 or duration <= 0:
        parser.error("--reps must be at least 1 and --duration positive")
    load = LoadSettings(reps, duration, warmup_s=1)
    return Settings(load, parts, args.quick)


def context(settings: Settings) -> str:
    load = settings.load
    run = "quick" if settings.quick else "full"
    return (
        f"{machine_summary()}. Run: {run}; {load.reps} repetition(s) of {load.duration_s} s "
        "per wrk run, medians over repetitions. Proxies pinned to CPU 0; wrk, nginx, the "
        "trickle upstream and the clients to CPU 1."
    )


def run(settings: Settings) -> Report:
    needs_wrk = any(part in NEEDS_WRK for part in settings.parts)
    check_tools(["nginx", "wrk", "taskset"] if needs_wrk else ["taskset"])
    pin_self_to_load_cpu()
    raise_open_files_limit()
    report = Report("tuned-proxy benchmark", context(settings))
    if "load" in settings.parts:
        with tempfile.TemporaryDirectory(prefix="bench-load-") as run_dir:
            samples, metrics = run_load(settings.load, Path(run_dir))
        report = replace(report, load=(LoadResults(samples), metrics))
    if "responses" in settings.parts:
        with tempfile.TemporaryDirectory(prefix="bench-responses-") as run_dir:
            samples, metrics = run_responses(settings.load, Path(run_dir))
        report = replace(report, responses=(LoadResults(samples), metrics))
    if "rewrite" in settings.parts:
        progress("rewrite: micro-benchmark")
        report = replace(report, rewrite=bench_rewrite.measure(settings.quick))
    if "streams" in settings.parts:
        streams = bench_streams.StreamSettings
        chosen = streams.quick() if settings.quick else streams()
        report = replace(report, streams=bench_streams.run_streams(chosen))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(argv)
    started = time.monotonic()
    try:
        report = run(settings)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    progress(f"done in {time.monotonic() - started:.0f} s")
    print(report.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
