"""Micro-benchmark of the rewrite alone: µs per request, parse and serialise included.

For requests offering 1, 20 and 128 tools and each tools mode — passthrough (the built-in
policy: only `model` changes), identical (support-full) and slim (support-slim) — it times
what tuned-proxy does to a body before forwarding it: parse the client's bytes (the parse
stage's `parse_chat_body`), rewrite them with the policy, set the variant's model, serialise.
Twice: with tools the proxy has seen before (an application sends the same tools on every
request: their parse and rewrite come from the parse stage's cache and the policy's memo),
and with tools it has never seen (cache and memo emptied before each call: the cost of the
first request of each distinct tools list). The 128-tool policies train on the 20 support
tools plus renamed copies of them, so every offered tool is a training tool.

Usage: python tests/bench/bench_rewrite.py [--quick]   (taskset -c 0 … to pin it)
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from harness import FIXTURES, POLICIES

from proxy import jsonutil
from proxy.policies import load_policy
from proxy.request import ToolLists, parse_chat_body
from proxy.rewrite import rewrite
from proxy.rewrite.policy import PASSTHROUGH, Policy, build_policy

TOOL_COUNTS = (1, 20, 128)
MODES = ("passthrough", "identical", "slim")
VARIANT_MODEL = "support-ft"
BATCH_TARGET_S = 0.02  # each timed batch runs about this long


@dataclass(frozen=True)
class RewriteFigure:
    tools: int
    mode: str
    us_per_request: float  # tools seen before
    us_first_seen: float  # tools never seen
    bytes_in: int
    bytes_out: int


def numbered_copies(tools: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """`count` tools: the given ones, then renamed copies of them (name_2, name_3, …)."""
    widened = list(tools)
    generation = 2
    while len(widened) < count:
        for tool in tools[: count - len(widened)]:
            twin = copy.deepcopy(tool)
            twin["function"]["name"] = f"{tool['function']['name']}_{generation}"
            widened.append(twin)
        generation += 1
    return widened


def policies_for(tools: int, training: list[dict[str, Any]]) -> dict[str, Policy]:
    """Each mode's policy, trained on at least as many tools as the request offers."""
    identical = load_policy(POLICIES / "support-full.yaml", "support-full")
    slim = load_policy(POLICIES / "support-slim.yaml", "support-slim")
    if tools > len(identical.training_tools):
        wide = numbered_copies(training, tools)
        identical = build_policy(identical.name, identical.spec, wide)
        slim = build_policy(slim.name, slim.spec, wide)
    return {"passthrough": PASSTHROUGH, "identical": identical, "slim": slim}


def request_with(tools: int) -> bytes:
    """The benchmark's request (the application's drifted tools), offering `tools` tools."""
    body = jsonutil.loads((FIXTURES / "request.json").read_bytes())
    body["tools"] = numbered_copies(body["tools"], tools)[:tools]
    return jsonutil.dumps(body)


def forward_cost(raw: bytes, policy: Policy, seen: bool) -> Callable[[], bytes]:
    """What the proxy does to a body before sending it: parse, rewrite, set model, serialise.

    `seen`: the tools list was sent before (the common case); else the cache is cold.
    """
    tool_lists = ToolLists()

    def once() -> bytes:
        cache = tool_lists if seen else ToolLists()
        if not seen:
            policy.tool_rewrites.clear()
        result = rewrite(parse_chat_body(raw, cache), policy)
        result.body["model"] = VARIANT_MODEL
        return jsonutil.dumps(result.body)

    return once


def us_per_call(work: Callable[[], object], batches: int) -> float:
    """µs per call in the fastest of `batches` timed batches (bounded in count).

    The fastest, as timeit reports: slower batches measure what else the machine was doing.
    """
    work()  # first call: caches and lazy imports are not what is measured
    calls = 1
    while True:  # grow the batch until it lasts BATCH_TARGET_S, at most 2**16 calls
        started = time.perf_counter()
        for _ in range(calls):
            work()
        if time.perf_counter() - started >= BATCH_TARGET_S or calls >= 1 << 16:
            break
        calls *= 2
    timings = []
    for _ in range(batches):
        started = time.perf_counter_ns()
        for _ in range(calls):
            work()
        timings.append((time.perf_counter_ns() - started) / calls / 1000)
    return min(timings)


def measure(quick: bool = False) -> list[RewriteFigure]:
    batches = 5 if quick else 15
    training = jsonutil.loads((POLICIES / "support.tools.json").read_bytes())
    figures = []
    for tools in TOOL_COUNTS:
        raw = request_with(tools)
        for mode, policy in policies_for(tools, training).items():
            seen, first = forward_cost(raw, policy, True), forward_cost(raw, policy, False)
            figures.append(
                RewriteFigure(
                    tools,
                    mode,
                    us_per_call(seen, batches),
                    us_per_call(first, batches),
                    len(raw),
                    len(seen()),
                )
            )
    return figures


def table(figures: Sequence[RewriteFigure]) -> str:
    by_cell = {(figure.tools, figure.mode): figure for figure in figures}
    lines = [
        "| tools | request bytes | "
        + " | ".join(f"{mode} µs: seen / new tools (bytes out)" for mode in MODES)
        + " |",
        "| ---: | ---: | " + " | ".join("---:" for _ in MODES) + " |",
    ]
    for tools in TOOL_COUNTS:
        cells = [
            f"{by_cell[tools, mode].us_per_request:.1f} / {by_cell[tools, mode].us_first_seen:.1f}"
            f" ({by_cell[tools, mode].bytes_out})"
            for mode in MODES
        ]
        lines.append(f"| {tools} | {by_cell[tools, MODES[0]].bytes_in} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed batches")
    args = parser.parse_args()
    print(table(measure(args.quick)))


if __name__ == "__main__":
    main()
