"""Before and after: tuned-proxy at another git revision against this tree, side by side.

A change to the request path is measured against the revision before it, under the same load
at the same time: nginx as the upstream, the zero-logic forwarder, and two tuned-proxy
processes (the revision's `proxy` package and this tree's), all as run.py's load part sets
them up. For each repetition and mode, wrk drives the three at c=32 one after the other, so
a drift of the machine hits all alike. The steadiest figure on a shared machine is the CPU
time per request; its ratio between the two revisions is what a change gained or lost.

Both use this tree's policies and fixtures; only the `proxy` package differs. The modes are
load.py's: chat (`json`, `sse`) by default; the Responses API's (`responses-json`,
`responses-sse`, `bridged-json`, `bridged-sse`) need a base that serves `/v1/responses`. The
forwarder passes each mode's request to the upstream path the proxy would use, so for a bridged
mode its answer is the upstream's chat answer, untranslated.

`--capture` makes this tree's routes capture every exchange (`sample: 1.0`, into the run's
folder): with `--base HEAD`, the cost of capture on the same code. `--trace-sample S` makes
this tree's process trace its requests (`tracing.sample: S`) to nginx standing in for an
OTLP/HTTP collector: what tracing costs, against a base that does not trace.

Usage: python tests/bench/ab.py [--base REV] [--reps N] [--duration S] [--modes json,sse]
       [--variant slim|identical] [--capture] [--trace-sample S]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
from contextlib import ExitStack
from io import BytesIO
from pathlib import Path
from typing import IO, Any

from harness import (
    BENCH,
    LOOPBACK,
    PROXY_CPU,
    BenchError,
    check_tools,
    free_port,
    median,
    pin_self_to_load_cpu,
    processes,
    progress,
    raise_open_files_limit,
    start_forwarder,
    start_nginx,
    start_tuned_proxy,
)
from load import (
    FLOOR,
    MODES,
    LoadSettings,
    Sample,
    Target,
    check_target,
    measure,
    proxy_routes,
    wrk,
)

CONNECTIONS = 32
REPO = BENCH.parents[1]


def export_package(revision: str, into: Path) -> Path:
    """The `proxy` package as it is at `revision`, written under `into`."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", revision, "proxy"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise BenchError(f"git archive {revision}: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def start_all(
    run_dir: Path,
    stack: ExitStack,
    base_source: Path,
    variant: str,
    modes: list[str],
    capture: bool = False,
    trace_sample: float | None = None,
) -> list[Target]:
    """nginx, the forwarder and the two tuned-proxy processes: [forwarder, base, this tree]."""
    group = stack.enter_context(processes(run_dir))
    nginx_port = free_port()
    start_nginx(group, nginx_port)
    upstream = f"http://{LOOPBACK}:{nginx_port}"
    floor_port = free_port()
    floor = start_forwarder(group, floor_port, upstream)
    # Only the routes of the modes measured: a chat-only config is read by any revision.
    config = proxy_routes(upstream, modes)
    targets = [Target(FLOOR, f"http://{LOOPBACK}:{floor_port}", "-", floor.pid, PROXY_CPU)]
    for name, source in (("base", base_source), ("this tree", None)):
        port = free_port()
        log = stack.enter_context((run_dir / f"{name.replace(' ', '-')}.log").open("ab"))
        served = config
        if source is None:  # this tree
            served = with_capture(served, run_dir / "captured") if capture else served
            served = with_tracing(served, upstream, trace_sample)
        try:
            tuned = start_tuned_proxy(group, port, served, log, source=source)
        except BenchError as exc:
            # The run's folder goes with the run: say what the proxy said (a base from before
            # the Responses API refuses the `responses` setting of those modes' upstreams).
            said = Path(log.name).read_text(errors="replace").strip()[-600:]
            raise BenchError(f"{exc}; tuned-proxy ({name}) said: {said}") from None
        targets.append(Target(name, f"http://{LOOPBACK}:{port}", variant, tuned.pid, PROXY_CPU))
    return targets


def with_capture(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """`config` with every route capturing every exchange into `folder`."""
    routes = {
        name: {**route, "capture": {"dir": str(folder), "sample": 1.0}}
        for name, route in config["routes"].items()
    }
    return {**config, "routes": routes}


def with_tracing(config: dict[str, Any], upstream: str, sample: float | None) -> dict[str, Any]:
    """`config` tracing at `sample` to nginx's `/v1/traces` (a 200 for every batch), or as it
    is when `sample` is None."""
    if sample is None:
        return config
    return {**config, "tracing": {"otlp_endpoint": f"{upstream}/v1/traces", "sample": sample}}


def captured_lines(folder: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in folder.glob("*.jsonl"))


def compare(
    targets: list[Target], modes: list[str], settings: LoadSettings, log: IO[bytes]
) -> dict[tuple[str, str], list[Sample]]:
    """The runs of each (mode, target name), one per repetition."""
    figures: dict[tuple[str, str], list[Sample]] = {}
    for rep in range(1, settings.reps + 1):
        for mode in modes:
            progress(f"ab: rep {rep}/{settings.reps}, {mode}, c={CONNECTIONS}")
            # Every other repetition in reverse: a drift within one does not favour either side.
            for target in targets if rep % 2 else targets[::-1]:
                sample = measure(target, mode, CONNECTIONS, rep, settings, log)
                if sample.errors:
                    raise BenchError(f"{target.name} ({mode}): {sample.errors} errors")
                figures.setdefault((mode, target.name), []).append(sample)
    return figures


def report(
    figures: dict[tuple[str, str], list[Sample]],
    modes: list[str],
    base: str,
    trace_sample: float | None = None,
) -> str:
    runs = len(next(iter(figures.values())))
    traced = "" if trace_sample is None else f"; this tree traces at sample {trace_sample:g}"
    lines = [
        f"CPU µs per request at c={CONNECTIONS}, median of {runs} runs{traced}",
        "",
        f"| mode | forwarder | base ({base}) | this tree | this ÷ base "
        "| forwarder ÷ base | forwarder ÷ this |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    names = (FLOOR, "base", "this tree")
    for mode in modes:
        floor, before, after = (
            median(s.cpu_us_per_request for s in figures[(mode, name)]) for name in names
        )
        lines.append(
            f"| {mode} | {floor:.0f} | {before:.0f} | {after:.0f} | {after / before:.3f} "
            f"| {floor / before:.2f} | {floor / after:.2f} |"
        )
    lines += ["", f"req/s at c={CONNECTIONS}, median (forwarder / base / this tree):"]
    for mode in modes:
        rates = (median(s.rps for s in figures[(mode, name)]) for name in names)
        lines.append(f"  {mode}: " + " / ".join(f"{rate:.0f}" for rate in rates))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="the revision to compare with")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--duration", type=int, default=3, help="whole seconds per wrk run")
    parser.add_argument("--modes", default="json,sse", help="any of: " + ",".join(MODES))
    parser.add_argument("--variant", choices=["slim", "identical"], default="slim")
    parser.add_argument(
        "--capture", action="store_true", help="this tree's routes capture every exchange"
    )
    parser.add_argument(
        "--trace-sample", type=float, help="this tree traces its requests at this sample"
    )
    args = parser.parse_args()
    modes = [mode for mode in args.modes.split(",") if mode]
    settings = LoadSettings(reps=args.reps, duration_s=args.duration, warmup_s=1)
    try:
        if unknown := set(modes) - set(MODES):
            raise BenchError(f"unknown modes: {', '.join(sorted(unknown))}")
        check_tools(["nginx", "wrk", "taskset", "git"])
        pin_self_to_load_cpu()
        raise_open_files_limit()
        with ExitStack() as stack:
            run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-ab-")))
            source = export_package(args.base, run_dir / "base")
            targets = start_all(
                run_dir, stack, source, args.variant, modes, args.capture, args.trace_sample
            )
            for target in targets:
                for mode in modes:
                    check_target(target, mode)
                    wrk(target, mode, 8, settings.warmup_s)
            log = stack.enter_context((run_dir / "unused.log").open("ab"))
            figures = compare(targets, modes, settings, log)
            if args.capture:
                print(f"captured lines written: {captured_lines(run_dir / 'captured')}")
    except BenchError as exc:
        print(f"ab: {exc}", file=sys.stderr)
        return 2
    print(report(figures, modes, args.base, args.trace_sample))
    return 0


if __name__ == "__main__":
    sys.exit(main())
