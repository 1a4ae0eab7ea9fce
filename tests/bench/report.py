"""The benchmark's Markdown report: medians per cell, ratios to the floor, the bar of issue 7."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import bench_rewrite
import bench_streams
from harness import median
from load import (
    CHAT_MODES,
    CONCURRENCY,
    DIRECT,
    FLOOR,
    MODES,
    RESPONSES_CONNECTIONS,
    RESPONSES_ORDER,
    SLIM,
    TARGET_ORDER,
    TUNED,
    Sample,
)

Figure = Callable[[Sample], float]


def p50(sample: Sample) -> float:
    return sample.p50_us


def p99(sample: Sample) -> float:
    return sample.p99_us


def rps(sample: Sample) -> float:
    return sample.rps


def cpu(sample: Sample) -> float:
    return sample.cpu_us_per_request


def busy(sample: Sample) -> float:
    return sample.busy


@dataclass(frozen=True)
class LoadResults:
    """The samples of the load part, read per (target, mode, concurrency) cell."""

    samples: Sequence[Sample]

    def cell(self, target: str, mode: str, connections: int) -> list[Sample]:
        key = (target, mode, connections)
        return [s for s in self.samples if (s.target, s.mode, s.connections) == key]

    def median(self, target: str, mode: str, connections: int, figure: Figure) -> float:
        return median([figure(sample) for sample in self.cell(target, mode, connections)])

    def errors(self, target: str, mode: str, connections: int) -> int:
        return sum(sample.errors for sample in self.cell(target, mode, connections))

    def capped(self, target: str, mode: str, connections: int) -> bool:
        return any(sample.capped for sample in self.cell(target, mode, connections))

    def added_p50_us(self, target: str, mode: str) -> float:
        """Median over repetitions of (target p50 − direct p50) at c=1, paired by repetition."""
        direct = {sample.rep: sample.p50_us for sample in self.cell(DIRECT, mode, 1)}
        return median([s.p50_us - direct[s.rep] for s in self.cell(target, mode, 1)])

    def to_floor(self, target: str, mode: str, connections: int, figure: Figure) -> float:
        """`figure` of `target` divided by the forwarder's, medians of both."""
        floor = self.median(FLOOR, mode, connections, figure)
        return self.median(target, mode, connections, figure) / floor

    def added_to_floor(self, target: str, mode: str) -> float:
        return self.added_p50_us(target, mode) / self.added_p50_us(FLOOR, mode)

    def to_chat(self, target: str, mode: str, connections: int, figure: Figure) -> list[float]:
        """`figure` of `mode` divided by the chat mode's with the same kind of answer, for the
        same target, within each repetition (pairing cancels a drift between repetitions)."""
        chat_mode = "sse" if MODES[mode].stream else "json"
        chat = {s.rep: figure(s) for s in self.cell(target, chat_mode, connections)}
        return [figure(s) / chat[s.rep] for s in self.cell(target, mode, connections)]


def markdown(header: Sequence[str], align: str, rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; `align` has one letter per column, l or r."""
    rule = ["---:" if side == "r" else "---" for side in align]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def latency_table(results: LoadResults) -> str:
    rows = []
    for mode in CHAT_MODES:
        for target in TARGET_ORDER:
            added = "–" if target == DIRECT else f"{results.added_p50_us(target, mode):.0f}"
            rows.append(
                [
                    mode,
                    target,
                    f"{results.median(target, mode, 1, p50):.0f}",
                    f"{results.median(target, mode, 1, p99):.0f}",
                    added,
                    f"{results.median(target, mode, 1, cpu):.0f}",
                    str(results.errors(target, mode, 1)),
                ]
            )
    header = ["mode", "target", "p50 µs", "p99 µs", "added p50 µs", "CPU µs/request", "errors"]
    return markdown(header, "llrrrrr", rows)


def throughput_table(results: LoadResults) -> str:
    rows = []
    for mode in CHAT_MODES:
        for connections in CONCURRENCY[1:]:
            for target in TARGET_ORDER:
                capped = " (capped)" if results.capped(target, mode, connections) else ""
                ratio = results.to_floor(target, mode, connections, rps)
                rows.append(
                    [
                        mode,
                        str(connections),
                        target,
                        f"{results.median(target, mode, connections, rps):.0f}{capped}",
                        "–" if target in (DIRECT, FLOOR) else f"{ratio:.2f}",
                        f"{results.median(target, mode, connections, p50) / 1000:.2f}",
                        f"{results.median(target, mode, connections, p99) / 1000:.2f}",
                        f"{results.median(target, mode, connections, cpu):.0f}",
                        f"{100 * results.median(target, mode, connections, busy):.0f}",
                        str(results.errors(target, mode, connections)),
                    ]
                )
    header = ["mode", "c", "target", "req/s", "× forwarder", "p50 ms", "p99 ms"]
    header += ["CPU µs/request", "CPU busy %", "errors"]
    return markdown(header, "lrlrrrrrrr", rows)


def ratio_table(results: LoadResults) -> str:
    """tuned-proxy ÷ forwarder: below 1 is slower (req/s), above 1 costs more (latency, CPU)."""
    rows = [
        [
            mode,
            target.removeprefix("tuned-proxy "),
            f"{results.to_floor(target, mode, 32, rps):.2f}",
            f"{results.to_floor(target, mode, 128, rps):.2f}",
            f"{results.added_to_floor(target, mode):.2f}",
            f"{results.to_floor(target, mode, 32, cpu):.2f}",
        ]
        for mode in CHAT_MODES
        for target in TUNED
    ]
    header = ["mode", "variant", "req/s c=32", "req/s c=128", "added p50 c=1", "CPU/request c=32"]
    return markdown(header, "llrrrr", rows)


def ratio_cell(ratios: Sequence[float]) -> str:
    """The median ratio, and its range over the repetitions when there are several."""
    if len(ratios) < 2:
        return f"{median(ratios):.2f}"
    return f"{median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})"


def responses_row(results: LoadResults, target: str, mode: str) -> list[str]:
    spec, c = MODES[mode], RESPONSES_CONNECTIONS
    is_chat = spec.api == "chat"
    return [
        target.removeprefix("tuned-proxy "),
        "SSE" if spec.stream else "JSON",
        spec.label,
        f"{results.median(target, mode, c, rps):.0f}",
        f"{results.median(target, mode, c, cpu):.0f}",
        "–" if is_chat else ratio_cell(results.to_chat(target, mode, c, cpu)),
        "–" if is_chat else f"{median(results.to_chat(target, mode, c, rps)):.2f}",
        f"{100 * results.median(target, mode, c, busy):.0f}",
        str(results.errors(target, mode, c)),
    ]


def responses_table(results: LoadResults) -> str:
    """The responses part: each policy's cost per request in each API, against chat's."""
    rows = [responses_row(results, target, mode) for target in TUNED for mode in RESPONSES_ORDER]
    header = ["variant", "answer", "request", f"req/s c={RESPONSES_CONNECTIONS}"]
    header += ["CPU µs/request", "CPU ÷ chat (range)", "req/s ÷ chat", "CPU busy %", "errors"]
    return markdown(header, "lllrrrrrr", rows)


def responses_section(results: LoadResults, metrics: str) -> str:
    notes = [
        f"tuned-proxy alone, c={RESPONSES_CONNECTIONS}, both policies in one process. "
        '"÷ chat": the figure ÷ the chat row\'s of the same variant and kind of answer, within '
        "each repetition; the median (and range) over the repetitions.",
        f"{metrics}; {log_note(results)}.",
        f"{noise_note(results)}.",
    ]
    return "\n".join(notes) + "\n\n" + responses_table(results)


def noise_note(results: LoadResults) -> str:
    """How much of the proxy CPU other work took: the figures are only as clean as this."""
    # Runs against nginx (on the load CPU) do not care what happens on the proxy CPU.
    foreign = [sample.foreign for sample in results.samples if sample.target != DIRECT]
    return (
        f"CPU 0 taken by anything but the proxy under test: median {100 * median(foreign):.0f} %,"
        f" worst {100 * max(foreign):.0f} % of a run (near 0 on a quiet machine; above a few %, "
        "req/s and latency are understated and only CPU µs/request is comparable)"
    )


def log_note(results: LoadResults) -> str:
    tuned = [sample for sample in results.samples if sample.log_lines is not None]
    lines = sum(sample.log_lines or 0 for sample in tuned)
    requests = sum(sample.requests for sample in tuned)
    return (
        f"request log: on, {lines} lines for {requests} completed requests (wrk cuts the "
        "requests in flight when a run ends; the proxy logs those too)"
    )


@dataclass(frozen=True)
class Bar:
    criterion: str
    bar: str
    measured: str
    met: bool


def load_bars(results: LoadResults) -> list[Bar]:
    found = []
    for mode in CHAT_MODES:
        throughput = results.to_floor(SLIM, mode, 32, rps)
        added = results.added_to_floor(SLIM, mode)
        found += [
            Bar(f"{mode}: req/s at c=32, slim ÷ forwarder", "≥ 0.80", f"{throughput:.2f}",
                throughput >= 0.8),
            Bar(f"{mode}: added p50 at c=1, slim ÷ forwarder", "≤ 1.30", f"{added:.2f}",
                added <= 1.3),
        ]  # fmt: skip
    return found


def rewrite_bars(figures: Sequence[bench_rewrite.RewriteFigure]) -> list[Bar]:
    slim = next(f for f in figures if (f.tools, f.mode) == (20, "slim"))
    took = max(slim.us_per_request, slim.us_first_seen)  # judged on tools never seen before
    return [
        Bar("rewrite alone, 20 tools, slim (tools never seen)", "< 100 µs", f"{took:.1f} µs",
            took < 100),
    ]  # fmt: skip


def stream_bars(report: bench_streams.StreamsReport) -> list[Bar]:
    added = report.added_ttfb_us("tuned-proxy")
    found = [Bar("added TTFB p50", "< 1 ms", f"{added:.0f} µs", added < 1000)]
    for run in report.runs:
        if run.target == "tuned-proxy":
            whole = run.completed == run.streams and not run.errors
            found += [
                Bar(f"{run.streams} slow streams: proxy peak RSS", "< 250 MB",
                    f"{run.peak_rss / 1e6:.0f} MB", run.peak_rss < 250e6),
                Bar(f"{run.streams} slow streams: complete, no error", "all",
                    f"{run.completed}/{run.streams}", whole),
            ]  # fmt: skip
    return found


def bar_table(found: Sequence[Bar]) -> str:
    rows = [[b.criterion, b.bar, b.measured, "yes" if b.met else "**no**"] for b in found]
    return markdown(["criterion (slim policy, one core)", "bar", "measured", "met"], "llrl", rows)


@dataclass(frozen=True)
class Report:
    title: str
    context: str
    load: tuple[LoadResults, str] | None = None  # and the metrics line
    responses: tuple[LoadResults, str] | None = None  # and the metrics line
    rewrite: Sequence[bench_rewrite.RewriteFigure] | None = None
    streams: bench_streams.StreamsReport | None = None

    def sections(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        if self.load:
            results, _ = self.load
            found += [
                (
                    "Latency at c=1 (added = target p50 − direct-to-nginx p50, paired by rep)",
                    latency_table(results),
                ),
                ("Throughput at c=32 and c=128", throughput_table(results)),
                ("tuned-proxy ÷ the zero-logic forwarder", ratio_table(results)),
            ]
        if self.responses:
            found.append(
                (
                    "Responses API: CPU per request against the chat path on the same policy",
                    responses_section(*self.responses),
                )
            )
        if self.rewrite:
            found.append(
                (
                    "Rewrite alone: parse + rewrite + serialise, µs per request (fastest batch)",
                    bench_rewrite.table(self.rewrite),
                )
            )
        if self.streams:
            found.append(("Streams", bench_streams.table(self.streams)))
        bars = self.bars()
        if bars:
            found.append(("Against the bar of issue 7", bar_table(bars)))
        return found

    def bars(self) -> list[Bar]:
        found = load_bars(self.load[0]) if self.load else []
        found += rewrite_bars(self.rewrite) if self.rewrite else []
        found += stream_bars(self.streams) if self.streams else []
        return found

    def render(self) -> str:
        notes = [self.context]
        if self.load:
            results, metrics = self.load
            notes.append(f"{metrics}; {log_note(results)}.")
            notes.append(f"{noise_note(results)}.")
        parts = [f"## {self.title}", "", "\n".join(notes)]
        for heading, table in self.sections():
            parts += ["", f"### {heading}", "", table]
        return "\n".join(parts)
