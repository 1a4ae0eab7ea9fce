"""The eval report: per variant, side by side, each rate with its 95% interval and its
difference to the first variant (the baseline); a table for the terminal and a JSON document.

Only cases that every variant answered (or failed) are counted, so the variants are always
compared on the same turns; a run stopped early says how many cases it left out. A failed
request is counted in `failed` and fails every check of its turn: it is never dropped.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from proxy.config import Route
from proxy.eval.cases import CaseKind, CaseSet
from proxy.eval.runner import Outcome
from proxy.eval.stats import (
    Interval,
    PairedCounts,
    mean_interval,
    paired_difference_interval,
    paired_mean_difference,
    percentile,
    wilson_interval,
)

# (key, label, the turns it is measured on, the check)
RateSpec = tuple[str, str, CaseKind | None, Callable[[Outcome], bool]]
RATES: tuple[RateSpec, ...] = (
    ("tool_call", "makes a tool call", "tool_call", lambda o: o.verdict.called),
    ("function", "right function(s)", "tool_call", lambda o: o.verdict.function),
    ("args_json", "arguments parse", "tool_call", lambda o: o.verdict.args_json),
    ("args_schema", "arguments fit the schema", "tool_call", lambda o: o.verdict.args_schema),
    ("args_exact", "arguments exact", "tool_call", lambda o: o.verdict.args_exact),
    ("no_call", "no call when none is needed", "no_call", lambda o: o.verdict.no_call),
    ("failed", "failed requests", None, lambda o: o.failed),
)

CONFIDENCE = 0.95
SHARE = Interval(0.0, 1.0)  # where a per-turn share of keys lies
COUNT = Interval(0.0, math.inf)  # where a token count lies
INTERVAL_METHODS = {
    "rate": "Wilson score interval",
    "rate_difference": "Newcombe method 10 for paired proportions",
    "mean": "normal interval of the mean (m ± 1.96 s/√n)",
    "mean_difference": "normal interval of the mean paired difference",
}


@dataclass(frozen=True)
class Difference:
    value: float
    interval: Interval


@dataclass(frozen=True)
class Rate:
    successes: int
    total: int
    interval: Interval
    difference: Difference | None = None  # to the first variant; None for the first

    @property
    def value(self) -> float:
        return self.successes / self.total if self.total else 0.0


@dataclass(frozen=True)
class Mean:
    value: float
    interval: Interval
    count: int
    difference: Difference | None = None


@dataclass
class VariantReport:
    name: str
    policy: str
    upstream: str
    model: str
    requests: int
    rates: dict[str, Rate]
    key_accuracy: Mean
    prompt_tokens: Mean
    completion_tokens: Mean
    latency_p50_s: float
    latency_p95_s: float
    failures: Counter[str] = field(default_factory=Counter)


@dataclass
class EvalReport:
    route: str
    examples_file: str
    config_file: str
    cases: CaseSet
    variants: list[VariantReport]
    outcomes: list[Outcome]  # the counted ones, in case order
    planned_cases: int
    counted_cases: int
    interrupted: bool = False
    notes: tuple[str, ...] = ()  # what the run set up that the figures depend on
    started_at: str = ""
    duration_s: float = 0.0

    def count(self, kind: CaseKind) -> int:
        return sum(1 for o in self.outcomes if o.case.kind == kind) // max(1, len(self.variants))

    @property
    def parallel_turns(self) -> int:
        return sum(1 for o in self.outcomes if o.case.parallel) // max(1, len(self.variants))


def complete_outcomes(outcomes: Sequence[Outcome], variants: Sequence[str]) -> list[Outcome]:
    """The outcomes of the cases every variant has answered, in case order then variant order."""
    by_case: dict[str, dict[str, Outcome]] = {}
    order: list[str] = []
    for outcome in outcomes:
        if outcome.case.id not in by_case:
            by_case[outcome.case.id] = {}
            order.append(outcome.case.id)
        by_case[outcome.case.id][outcome.variant] = outcome
    complete: list[Outcome] = []
    for case_id in sorted(order, key=lambda c: _case_position(by_case[c])):
        answers = by_case[case_id]
        if all(v in answers for v in variants):
            complete.extend(answers[v] for v in variants)
    return complete


def _case_position(answers: dict[str, Outcome]) -> tuple[int, int]:
    case = next(iter(answers.values())).case
    return case.line, case.message_index


def summarize(
    outcomes: Sequence[Outcome], route: Route, variants: Sequence[str]
) -> list[VariantReport]:
    """One report per variant, the first being the baseline of every difference.

    `outcomes` are `complete_outcomes`: every variant has one per case, in the same case
    order, which is what pairs them up.
    """
    per_variant = {v: [o for o in outcomes if o.variant == v] for v in variants}
    baseline = per_variant[variants[0]] if variants else []
    reports = []
    for name in variants:
        mine = per_variant[name]
        first = name == variants[0]
        target = route.variant(name)
        reports.append(
            VariantReport(
                name=name,
                policy=target.policy.name if target else "?",
                upstream=target.upstream_name if target else "?",
                model=target.model if target else "?",
                requests=len(mine),
                rates={spec[0]: _rate(spec, mine, baseline, first) for spec in RATES},
                key_accuracy=_mean(_key_scores, mine, baseline, first, SHARE),
                prompt_tokens=_mean(_prompt_tokens, mine, baseline, first, COUNT),
                completion_tokens=_mean(_completion_tokens, mine, baseline, first, COUNT),
                latency_p50_s=percentile(_latencies(mine), 0.5),
                latency_p95_s=percentile(_latencies(mine), 0.95),
                failures=Counter(o.error for o in mine if o.error is not None),
            )
        )
    return reports


def _rate(spec: RateSpec, mine: list[Outcome], baseline: list[Outcome], is_baseline: bool) -> Rate:
    _, _, kind, check = spec
    outcomes = [o for o in mine if kind is None or o.case.kind == kind]
    reference = [o for o in baseline if kind is None or o.case.kind == kind]
    successes = sum(1 for o in outcomes if check(o))
    rate = Rate(successes, len(outcomes), wilson_interval(successes, len(outcomes)))
    if is_baseline:
        return rate
    counts = PairedCounts.from_outcomes([check(o) for o in outcomes], [check(o) for o in reference])
    difference = Difference(
        rate.value - _share(reference, check), paired_difference_interval(counts)
    )
    return Rate(rate.successes, rate.total, rate.interval, difference)


def _share(outcomes: list[Outcome], check: Callable[[Outcome], bool]) -> float:
    return sum(1 for o in outcomes if check(o)) / len(outcomes) if outcomes else 0.0


def _key_scores(outcomes: list[Outcome]) -> list[float | None]:
    return [o.verdict.key_score if o.case.kind == "tool_call" else None for o in outcomes]


def _prompt_tokens(outcomes: list[Outcome]) -> list[float | None]:
    return [None if o.prompt_tokens is None else float(o.prompt_tokens) for o in outcomes]


def _completion_tokens(outcomes: list[Outcome]) -> list[float | None]:
    return [None if o.completion_tokens is None else float(o.completion_tokens) for o in outcomes]


def _latencies(outcomes: list[Outcome]) -> list[float]:
    return [o.latency_s for o in outcomes if not o.failed]


def _mean(
    values_of: Callable[[list[Outcome]], list[float | None]],
    mine: list[Outcome],
    baseline: list[Outcome],
    is_baseline: bool,
    bounds: Interval,
) -> Mean:
    """The mean over the outcomes that have a value; its difference to the baseline over the
    cases where both have one (paired). Values lie within `bounds`."""
    values = values_of(mine)
    estimate = mean_interval([v for v in values if v is not None], bounds)
    mean = Mean(estimate.mean, estimate.interval, estimate.count)
    if is_baseline:
        return mean
    pairs = [
        (x, y)
        for x, y in zip(values, values_of(baseline), strict=True)
        if x is not None and y is not None
    ]
    spread = bounds.high - bounds.low
    difference = paired_mean_difference(
        [x for x, _ in pairs], [y for _, y in pairs], Interval(-spread, spread)
    )
    return Mean(
        mean.value, mean.interval, mean.count, Difference(difference.mean, difference.interval)
    )


# ----------------------------------------------------------------------------- JSON


def report_json(report: EvalReport) -> dict[str, Any]:
    return {
        "route": report.route,
        "examples_file": report.examples_file,
        "config_file": report.config_file,
        "started_at": report.started_at,
        "duration_s": round(report.duration_s, 3),
        "interrupted": report.interrupted,
        "notes": list(report.notes),
        "confidence": CONFIDENCE,
        "interval_methods": INTERVAL_METHODS,
        "baseline": report.variants[0].name if report.variants else None,
        "examples": report.cases.examples,
        "skipped_examples": [{"line": s.line, "reason": s.reason} for s in report.cases.skipped],
        "cases": {
            "planned": report.planned_cases,
            "counted": report.counted_cases,
            "tool_call_turns": report.count("tool_call"),
            "parallel_call_turns": report.parallel_turns,
            "no_call_turns": report.count("no_call"),
        },
        "variants": [_variant_json(v) for v in report.variants],
        "results": [_outcome_json(o) for o in report.outcomes],
    }


def _interval_json(interval: Interval) -> list[float]:
    return [round(interval.low, 6), round(interval.high, 6)]


def _difference_json(difference: Difference | None) -> dict[str, Any] | None:
    if difference is None:
        return None
    return {"value": round(difference.value, 6), "ci": _interval_json(difference.interval)}


def _rate_json(rate: Rate) -> dict[str, Any]:
    return {
        "count": rate.successes,
        "total": rate.total,
        "rate": round(rate.value, 6),
        "ci": _interval_json(rate.interval),
        "difference": _difference_json(rate.difference),
    }


def _mean_json(mean: Mean) -> dict[str, Any]:
    return {
        "mean": round(mean.value, 6),
        "ci": _interval_json(mean.interval),
        "count": mean.count,
        "difference": _difference_json(mean.difference),
    }


def _variant_json(variant: VariantReport) -> dict[str, Any]:
    return {
        "name": variant.name,
        "policy": variant.policy,
        "upstream": variant.upstream,
        "model": variant.model,
        "requests": variant.requests,
        "rates": {key: _rate_json(rate) for key, rate in variant.rates.items()},
        "key_accuracy": _mean_json(variant.key_accuracy),
        "prompt_tokens": _mean_json(variant.prompt_tokens),
        "completion_tokens": _mean_json(variant.completion_tokens),
        "latency_s": {
            "p50": round(variant.latency_p50_s, 4),
            "p95": round(variant.latency_p95_s, 4),
        },
        "failures": dict(variant.failures.most_common()),
    }


def _outcome_json(outcome: Outcome) -> dict[str, Any]:
    verdict = outcome.verdict
    return {
        "case": outcome.case.id,
        "kind": outcome.case.kind,
        "variant": outcome.variant,
        "expected": [{"name": c.name, "arguments": c.arguments} for c in outcome.case.expected],
        "answered": [{"name": c.name, "arguments": c.arguments} for c in outcome.calls],
        "error": outcome.error,
        "checks": {
            "tool_call": verdict.called,
            "function": verdict.function,
            "args_json": verdict.args_json,
            "args_schema": verdict.args_schema,
            "args_exact": verdict.args_exact,
            "key_score": round(verdict.key_score, 6),
            "no_call": verdict.no_call,
        },
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "latency_s": round(outcome.latency_s, 4),
    }


# ----------------------------------------------------------------------------- table


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def _signed_points(value: float) -> str:
    return f"{100 * value:+.1f}"


def _rate_cell(rate: Rate) -> str:
    if rate.total == 0:
        return "-"
    low, high = rate.interval.low, rate.interval.high
    return f"{_percent(rate.value)} [{_percent(low)}, {_percent(high)}]"


def _rate_difference_cell(rate: Rate) -> str:
    if rate.difference is None or rate.total == 0:
        return ""
    d = rate.difference
    low, high = _signed_points(d.interval.low), _signed_points(d.interval.high)
    return f"{_signed_points(d.value)} [{low}, {high}]"


def _mean_cell(mean: Mean, scale: float = 1.0, digits: int = 0) -> str:
    if mean.count == 0:
        return "-"
    low, high = mean.interval.low * scale, mean.interval.high * scale
    return f"{mean.value * scale:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _mean_difference_cell(mean: Mean, scale: float = 1.0, digits: int = 0) -> str:
    if mean.difference is None or mean.count == 0:
        return ""
    d = mean.difference
    low, high = d.interval.low * scale, d.interval.high * scale
    return f"{d.value * scale:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def table_rows(report: EvalReport) -> list[list[str]]:
    """The terminal table: a header, then per measure a row of values and, below it, a row of
    differences to the baseline."""
    variants = report.variants
    baseline = variants[0].name if variants else ""
    rows: list[list[str]] = [["", *(v.name for v in variants)]]
    rows.append(["policy", *(v.policy for v in variants)])

    def add(label: str, cells: list[str], differences: list[str]) -> None:
        rows.append([label, *cells])
        if any(differences):
            rows.append([f"  Δ vs {baseline}", *differences])

    for key, label, kind, _ in RATES:
        rates = [v.rates[key] for v in variants]
        if kind is not None and all(r.total == 0 for r in rates):
            continue
        add(f"{label} %", [_rate_cell(r) for r in rates], [_rate_difference_cell(r) for r in rates])
    add(
        "argument keys right %",
        [_mean_cell(v.key_accuracy, 100, 1) for v in variants],
        [_mean_difference_cell(v.key_accuracy, 100, 1) for v in variants],
    )
    add(
        "prompt tokens / request",
        [_mean_cell(v.prompt_tokens) for v in variants],
        [_mean_difference_cell(v.prompt_tokens) for v in variants],
    )
    add(
        "completion tokens / request",
        [_mean_cell(v.completion_tokens, 1, 1) for v in variants],
        [_mean_difference_cell(v.completion_tokens, 1, 1) for v in variants],
    )
    rows.append(
        [
            "latency p50 / p95 s",
            *(f"{v.latency_p50_s:.2f} / {v.latency_p95_s:.2f}" for v in variants),
        ]
    )
    return rows


def render_table(report: EvalReport) -> str:
    lines = [_headline(report), *report.notes, ""]
    rows = table_rows(report)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(
        "Rates in %, [95% CI] (Wilson). Δ: difference to the first variant, in points or tokens,"
        " [95% CI] paired on the same turns (Newcombe method 10; means: normal)."
    )
    lines.extend(_failure_lines(report))
    return "\n".join(lines)


def _headline(report: EvalReport) -> str:
    tool_turns, text_turns = report.count("tool_call"), report.count("no_call")
    state = "INTERRUPTED: " if report.interrupted else ""
    missing = report.planned_cases - report.counted_cases
    partial = f" ({missing} of {report.planned_cases} cases not measured)" if missing else ""
    skipped = f", {len(report.cases.skipped)} skipped" if report.cases.skipped else ""
    return (
        f"{state}tuned-proxy eval of route {report.route}: {report.cases.examples} examples"
        f"{skipped}; {tool_turns} turns with tool calls ({report.parallel_turns} parallel), "
        f"{text_turns} turns that need none{partial}; {report.duration_s:.1f} s"
    )


def _failure_lines(report: EvalReport) -> list[str]:
    lines = []
    for variant in report.variants:
        for error, count in variant.failures.most_common(3):
            lines.append(f"  {variant.name}: {count}× {error}")
    return ["", "Failed requests:", *lines] if lines else []
