"""Where tuned-proxy spends its CPU under load: py-spy on the proxy during a wrk run.

Sets up what run.py's load part does (nginx upstream, tuned-proxy on the proxy CPU), drives
one variant with wrk at c=32 and samples the proxy with `py-spy record` meanwhile. Prints, as
Markdown, the share of samples per package (of the frame on CPU), the top functions by own
time, and tuned-proxy's own functions by inclusive time (its stages). Idle time (waiting in
the event loop's selector) is left out.

Needs py-spy (`.venv/bin/pip install py-spy`); it is not a project dependency.

Usage: python tests/bench/profile_proxy.py [--variant slim|identical] [--mode json|sse|…]
       [--seconds S] [--top N]

The modes are load.py's: chat (`json`, `sse`) and the Responses API's (`responses-json`,
`responses-sse`, `bridged-json`, `bridged-sse`).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from harness import (
    BenchError,
    check_tools,
    pin_self_to_load_cpu,
    progress,
    raise_open_files_limit,
)
from load import FLOOR, MODES, TUNED, Target, check_target, start_targets, wrk

CONNECTIONS = 32
SAMPLE_RATE = 200  # per second
# "function (path/to/file.py:123)" as py-spy writes a frame
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
PACKAGE_ROOTS = ("site-packages/", "lib/python3.", "/proxy/")


@dataclass(frozen=True)
class Frame:
    function: str
    module: str  # dotted-ish path from the package root, e.g. aiohttp/web_protocol.py

    @property
    def package(self) -> str:
        return self.module.split("/", 1)[0].removesuffix(".py")

    def __str__(self) -> str:
        return f"{self.function} ({self.module})"


def short_module(file: str) -> str:
    """The file from its package on: aiohttp/web_protocol.py, proxy/relay.py, asyncio/…."""
    if "/proxy/" in file and "site-packages" not in file:
        return "proxy/" + file.rsplit("/proxy/", 1)[1]
    for root in ("site-packages/", "/lib/python3.11/", "/lib/python3.12/", "/lib/python3.13/"):
        if root in file:
            return file.rsplit(root, 1)[1]
    return file.rsplit("/", 1)[-1]


def parse_frame(text: str) -> Frame:
    match = FRAME.match(text.strip())
    if match is None:
        return Frame(text.strip(), "?")
    return Frame(match["function"], short_module(match["file"]))


def read_stacks(collapsed: str) -> list[tuple[list[Frame], int]]:
    """py-spy's raw (collapsed) output: `frame;frame;… count` per line, root first."""
    stacks = []
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            frames = [parse_frame(part) for part in stack.split(";")]
            # The first entry is the thread ("process 123:\"python\"" or similar): skip it.
            if frames and frames[0].module == "?":
                frames = frames[1:]
            stacks.append((frames, int(count)))
    return stacks


@dataclass(frozen=True)
class Profile:
    total: int
    own: Counter[Frame]
    inclusive: Counter[Frame]
    by_package: Counter[str]

    @classmethod
    def of(cls, stacks: Iterable[tuple[list[Frame], int]]) -> Profile:
        own: Counter[Frame] = Counter()
        inclusive: Counter[Frame] = Counter()
        by_package: Counter[str] = Counter()
        total = 0
        for frames, count in stacks:
            if not frames:
                continue
            total += count
            own[frames[-1]] += count
            by_package[frames[-1].package] += count
            for frame in set(frames):  # recursion counts once per sample
                inclusive[frame] += count
        return cls(total, own, inclusive, by_package)

    def table(self, counts: Counter[str] | Counter[Frame], top: int, label: str) -> str:
        lines = [f"| {label} | share of CPU samples |", "| --- | ---: |"]
        for key, count in counts.most_common(top):
            lines.append(f"| `{key}` | {100 * count / self.total:.1f} % |")
        return "\n".join(lines)


def record(pid: int, seconds: int, output: Path, native: bool) -> subprocess.Popen[bytes]:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise BenchError("py-spy is missing; install it with: .venv/bin/pip install py-spy")
    command = [
        py_spy, "record", "--pid", str(pid), "--duration", str(seconds),
        "--rate", str(SAMPLE_RATE), "--format", "raw", "--output", str(output), "--full-filenames",
        *(["--native"] if native else []),
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def profile(target: Target, mode: str, seconds: int, output: Path, native: bool) -> Profile:
    sampler = record(target.pid, seconds, output, native)
    # wrk runs a little longer than the sampling, so every sample is taken under load.
    wrk(target, mode, CONNECTIONS, seconds + 2)
    _, errors = sampler.communicate(timeout=60)
    if sampler.returncode != 0 or not output.exists():
        raise BenchError(f"py-spy failed ({sampler.returncode}): {errors.decode().strip()}")
    return Profile.of(read_stacks(output.read_text(encoding="utf-8")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variant",
        choices=["slim", "identical", "forwarder"],
        default="slim",
        help="a tuned-proxy variant, or the forwarder (to compare aiohttp's share)",
    )
    parser.add_argument("--mode", choices=list(MODES), default="json")
    parser.add_argument("--seconds", type=int, default=15, help="sampling time")
    parser.add_argument("--top", type=int, default=15, help="functions per table")
    parser.add_argument(
        "--native", action="store_true", help="C frames too (the garbage collector, orjson, …)"
    )
    parser.add_argument("--save", type=Path, help="also keep py-spy's raw stacks in this file")
    args = parser.parse_args()
    name = next(target for target in (*TUNED, FLOOR) if target.endswith(args.variant))
    try:
        check_tools(["nginx", "wrk", "taskset"])
        pin_self_to_load_cpu()
        raise_open_files_limit()
        with ExitStack() as stack:
            run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-prof-")))
            targets, _ = start_targets(run_dir, stack)
            target = next(t for t in targets if t.name == name)
            check_target(target, args.mode)
            wrk(target, args.mode, CONNECTIONS, 1)  # warm-up
            progress(f"profiling {name}, {args.mode}, c={CONNECTIONS}, {args.seconds} s")
            output = args.save or run_dir / "profile.txt"
            found = profile(target, args.mode, args.seconds, output, args.native)
    except BenchError as exc:
        print(f"profile: {exc}", file=sys.stderr)
        return 2
    print(f"## Profile of {name}, {args.mode}, c={CONNECTIONS}: {found.total} samples on CPU\n")
    print(found.table(found.by_package, args.top, "package (frame on CPU)") + "\n")
    print(found.table(found.own, args.top, "function, own time") + "\n")
    own_code = Counter({f: n for f, n in found.inclusive.items() if f.module.startswith("proxy/")})
    print(found.table(own_code, args.top * 2, "tuned-proxy function, inclusive time"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
