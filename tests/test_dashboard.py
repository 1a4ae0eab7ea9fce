"""The Grafana dashboard and the recording rules: every query reads only series that exist.

A query on a misspelt metric or label, or a division whose two sides carry different labels,
shows "No data" forever and nobody notices. So every dashboard `expr` and every rule `expr` is
parsed with Prometheus's grammar (promql-parser) and its labels are followed through the query:
each selector names a series that a `Metrics()` registry really exports after it observed a
request that used every part of the record (or a metric announced below, or a rule's record);
each matcher, `by`, `on` and `ignoring` label is on what it applies to; the two sides of a
binary operator carry the same labels. A rule's result carries exactly the labels that its
record name's level lists, and `promtool test rules` checks the rules' numbers where it is
installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import promql_parser as promql
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from proxy.exposition import CounterFamily
from proxy.metrics import Metrics
from tests.support.records import full_record

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "helm/tuned-proxy/dashboards/tuned-proxy.json"
RULES = REPO / "helm/tuned-proxy/rules/tuned-proxy.rules.yaml"
RULE_TESTS = REPO / "tests/rules/tuned-proxy.rules.test.yaml"
DATASOURCE = "${datasource}"
# Labels Prometheus adds to every series when it scrapes a target; the proxy cannot export them.
TARGET_LABELS = frozenset({"instance", "job"})
# Metrics of the shadow comparison and the capture, with the labels the rules and the dashboard
# read them by.
ANNOUNCED: dict[str, frozenset[str]] = {
    "tuned_proxy_shadow_agreement_total": frozenset({"route", "outcome"}),
    "tuned_proxy_capture_examples_total": frozenset({"route", "outcome"}),
}
# A record name, as Prometheus's convention has it: level:metric:operations.
RECORD_NAME = re.compile(r"^([a-z]+(?:_[a-z]+)*):(tuned_proxy_[a-z0-9_]+):([a-z0-9_]+)$")
# Grafana's interval variables stand where PromQL wants a duration.
GRAFANA_DURATION = re.compile(r"\[\$__\w+\]")
LABEL_VALUES = re.compile(r"^label_values\((?:(.*),\s*)?(\w+)\)$", re.DOTALL)
COMPARISONS = frozenset({"==", "!=", ">", "<", ">=", "<="})
SET_OPERATORS = frozenset({"and", "or", "unless"})
# Functions whose result keeps its vector argument's labels are the rule; these change them.
LABEL_CHANGING = frozenset({"label_replace", "label_join", "absent", "absent_over_time"})

Series = dict[str, frozenset[str]]
Labels = frozenset[str] | None  # None: a scalar or a string


# ----------------------------------------------------------------------------- what exists


@cache
def exported() -> Series:
    """Sample name -> its label names, after one request that used everything, a shadow copy
    and a reload."""
    metrics = Metrics()
    metrics.observe_request(full_record(), total_seconds=1.0)
    metrics.observe_shadow("support-agent", "ok")
    metrics.observe_reload("ok")
    labels: defaultdict[str, set[str]] = defaultdict(set)
    for family in text_string_to_metric_families(metrics.render()[0].decode()):
        for sample in family.samples:
            if not sample.name.endswith("_created"):  # client-library bookkeeping, not data
                labels[sample.name].update(sample.labels)
    return {name: frozenset(names) for name, names in labels.items()}


@cache
def defined_counters() -> Series:
    """Sample name -> label names of every counter a `Metrics()` defines, observed or not."""
    found: Series = {}
    for value in vars(Metrics()).values():
        family = getattr(value, "family", value)  # a counter's values under fixed labels
        if isinstance(family, CounterFamily):
            found[f"{family.name}_total"] = frozenset(family.labelnames)
    return found


def metrics_known() -> Series:
    """What the proxy exports."""
    return defined_counters() | exported()


def rules() -> list[dict[str, Any]]:
    """Every rule of the rules file, in file order (the order Prometheus evaluates them)."""
    loaded = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"]]


@cache
def recorded() -> Series:
    """Record name -> the labels of its result, each rule read with what precedes it (a rule
    with problems has none here: the rule tests name them)."""
    series = metrics_known()
    for rule in rules():
        query = Query(series)
        labels = None if query.check(rule["expr"]) else query.labels(parse(rule["expr"]))
        series = series | {rule["record"]: labels or frozenset()}
    return {name: labels for name, labels in series.items() if ":" in name}


def known() -> Series:
    return metrics_known() | recorded()


# ----------------------------------------------------------------------------- the checker


def parse(expr: str) -> promql.Expr:
    """A dashboard's or a rule's query as Prometheus parses it (Grafana's intervals as 5m)."""
    return promql.parse(GRAFANA_DURATION.sub("[5m]", expr))


def selectors(node: Any) -> Iterator[promql.VectorSelector]:
    """The series selectors of an expression, depth first."""
    found: list[promql.VectorSelector] = []

    def visit(child: Any) -> None:
        if isinstance(child, promql.VectorSelector):
            found.append(child)

    promql.walk(node, visit)
    yield from found


def selector_name(selector: promql.VectorSelector) -> str:
    if selector.name:
        return selector.name
    names = [m.value for m in selector.matchers.matchers if m.name == "__name__"]
    assert names, f"a selector without a metric name: {selector}"
    return names[0]


def metric_names(expr: str) -> list[str]:
    """The metric (and record) names an expression reads."""
    return [selector_name(selector) for selector in selectors(parse(expr))]


def matchers(selector: promql.VectorSelector) -> dict[str, str]:
    """label -> `op value` of a selector's matchers, e.g. {"route": '=~"$route"'}."""
    ops = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}
    return {
        m.name: f'{ops[str(m.op).rsplit(".", 1)[-1]]}"{m.value}"'
        for m in selector.matchers.matchers
        if m.name != "__name__"
    }


class Query:
    """Follows the labels through one expression against `series`, noting every problem."""

    def __init__(self, series: Series) -> None:
        self.series = series
        self.problems: list[str] = []

    def labels_of(self, expr: str) -> frozenset[str]:
        """The labels of the expression's result; the query must be clean and a vector."""
        labels = self.labels(parse(expr))
        assert not self.problems, self.problems
        assert labels is not None, f"{expr!r} is not a vector"
        return labels

    def check(self, expr: str) -> list[str]:
        try:
            node = parse(expr)
        except ValueError as error:
            return [f"not PromQL: {error}"]
        unknown = [n for n in map(selector_name, selectors(node)) if n not in self.series]
        if unknown:  # the labels of an unknown metric are unknown: nothing more to follow
            return [f"unknown metric {name}" for name in unknown]
        self.labels(node)
        return self.problems

    def labels(self, node: Any) -> Labels:
        if isinstance(node, promql.NumberLiteral | promql.StringLiteral):
            return None
        if isinstance(node, promql.ParenExpr | promql.UnaryExpr | promql.SubqueryExpr):
            return self.labels(node.expr)
        if isinstance(node, promql.MatrixSelector):
            return self.labels(node.vector_selector)
        if isinstance(node, promql.VectorSelector):
            return self.selector(node)
        if isinstance(node, promql.Call):
            return self.call(node)
        if isinstance(node, promql.AggregateExpr):
            return self.aggregate(node)
        if isinstance(node, promql.BinaryExpr):
            return self.binary(node)
        self.problems.append(f"unsupported expression {node}")
        return frozenset()

    def selector(self, node: promql.VectorSelector) -> frozenset[str]:
        name = selector_name(node)
        # A scraped series also has its target's labels; a recorded one has what its rule kept.
        labels = self.series[name] | (frozenset() if ":" in name else TARGET_LABELS)
        for label in matchers(node):
            if label not in labels:
                self.problems.append(f"{name} has no label {label!r}")
        return labels

    def call(self, node: promql.Call) -> Labels:
        name = node.func.name
        args = [self.labels(arg) for arg in node.args]
        if name in LABEL_CHANGING:
            self.problems.append(f"unsupported function {name}")
        if node.func.return_type == promql.ValueType.Scalar:
            return None
        vectors = [labels for labels in args if labels is not None]
        if name == "histogram_quantile":
            (buckets,) = vectors
            if "le" not in buckets:
                self.problems.append(f"{self.names(node.args[1])} has no label 'le'")
            return buckets - {"le"}
        return vectors[0] if vectors else frozenset()  # vector(s) has no labels

    def aggregate(self, node: promql.AggregateExpr) -> frozenset[str]:
        if node.param is not None:
            self.labels(node.param)
        inner = self.labels(node.expr) or frozenset()
        op = str(node.op)
        if op == "count_values":
            self.problems.append("unsupported aggregation count_values")
        if node.modifier is None:
            return inner if op in {"topk", "bottomk"} else frozenset()
        grouped = frozenset(node.modifier.labels)
        if node.modifier.type == promql.AggModifierType.Without:
            return inner - grouped
        for label in sorted(grouped - inner):
            self.problems.append(f"{self.names(node.expr)} has no label {label!r} to group by")
        return inner if op in {"topk", "bottomk"} else grouped

    def binary(self, node: promql.BinaryExpr) -> Labels:
        left, right = self.labels(node.lhs), self.labels(node.rhs)
        if left is None or right is None:
            return right if left is None else left
        op, modifier = str(node.op), node.modifier
        matching = modifier.matching if modifier is not None else None
        if matching is None:
            if left != right:
                differ = ", ".join(sorted(left ^ right))
                self.problems.append(f"the two sides of {op!r} differ in labels: {differ}")
            return left
        keys = frozenset(matching.labels)
        on = matching.type == promql.LabelModifierType.Include
        if not on and left - keys != right - keys:
            self.problems.append(f"the two sides of {op!r} differ in labels beyond ignoring")
        if on:
            self.check_on(node, left, right, keys)
        return self.matched_labels(node, left, right, keys, on)

    def check_on(
        self,
        node: promql.BinaryExpr,
        left: frozenset[str],
        right: frozenset[str],
        keys: frozenset[str],
    ) -> None:
        """`on (keys)`: both sides have the keys, and a side that must be one series per key
        (both, one to one; the `group_*` side's other) has no labels beyond them."""
        op, modifier = str(node.op), node.modifier
        group = frozenset(modifier.group_labels or [])
        cardinality = promql.VectorMatchCardinality
        one: dict[str, frozenset[str]] = {}  # the sides that hold one series per key
        if modifier.card == cardinality.OneToOne and op not in SET_OPERATORS:
            one = {"left": left, "right": right}
        elif modifier.card == cardinality.ManyToOne:
            one = {"right": right - group}
        elif modifier.card == cardinality.OneToMany:
            one = {"left": left - group}
        for side, labels in (("left", left), ("right", right)):
            if not keys <= labels:
                missing = ", ".join(sorted(keys - labels))
                self.problems.append(f"the {side} side of {op!r} has no {missing} to match on")
            if side in one and one[side] - keys:
                beyond = ", ".join(sorted(one[side] - keys))
                self.problems.append(
                    f"the {side} side of {op!r} has labels beyond on ({', '.join(sorted(keys))}): "
                    f"{beyond}, so several of its series match one"
                )

    def matched_labels(
        self,
        node: promql.BinaryExpr,
        left: frozenset[str],
        right: frozenset[str],
        keys: frozenset[str],
        on: bool,
    ) -> frozenset[str]:
        """A match's result labels, as Prometheus's `resultMetric` makes them."""
        op, modifier = str(node.op), node.modifier
        group = frozenset(modifier.group_labels or [])
        if modifier.card == promql.VectorMatchCardinality.ManyToOne:
            return left | group
        if modifier.card == promql.VectorMatchCardinality.OneToMany:
            return right | group
        if op in SET_OPERATORS or (op in COMPARISONS and not modifier.return_bool):
            return left
        return keys if on else left - keys

    def names(self, node: Any) -> str:
        return ", ".join(dict.fromkeys(map(selector_name, selectors(node))))


def problems(expr: str, series: Series) -> list[str]:
    """Every problem of `expr` read against `series`: unknown metrics, absent labels, sides
    that do not match."""
    return Query(series).check(expr)


# ----------------------------------------------------------------------------- the dashboard's


def load_dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in all_panels(dashboard) if panel["type"] != "row"]


def panel(title: str) -> dict[str, Any]:
    (found,) = (p for p in query_panels(load_dashboard()) if p["title"] == title)
    return found


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in query_panels(load_dashboard()) for t in p["targets"]]


def panel_exprs() -> list[Any]:
    """(panel title, expr) of every query, as test parameters named after the panel."""
    return [
        pytest.param(panel["title"], target["expr"], id=f"{panel['title']}-{target['refId']}")
        for panel in query_panels(load_dashboard())
        for target in panel["targets"]
    ]


def variable(dashboard: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [v for v in dashboard["templating"]["list"] if v["name"] == name]
    assert len(found) == 1, f"one template variable {name!r}"
    return found[0]


def variable_query(var: dict[str, Any]) -> str:
    query = var["query"]
    text = query["query"] if isinstance(query, dict) else query
    assert isinstance(text, str)
    return text


def reads(expr: str) -> set[str]:
    """The proxy's metrics an expression reads, directly or through recorded series."""
    by_record = {rule["record"]: rule["expr"] for rule in rules()}
    found: set[str] = set()
    for name in metric_names(expr):
        found |= reads(by_record[name]) if name in by_record else {name}
    return found


# ----------------------------------------------------------------------------- the checker


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("rate(tuned_proxy_requests[5m])", "unknown metric tuned_proxy_requests"),
        ("tuned_proxy_request_duration_seconds", "unknown metric"),
        ("rate(tuned_proxy_requests_total_bucket[5m])", "unknown metric"),
        ("rate(tuned_proxy_requests_count[5m])", "unknown metric"),
        ("rate(request_duration_seconds_bucket[5m])", "unknown metric"),
        ("route_variant:tuned_proxy_prompt_tokens:rate1h", "unknown metric"),
        ('tuned_proxy_fallbacks_total{variant="a"}', "no label 'variant'"),
        ("sum by (variant) (rate(tuned_proxy_fallbacks_total[5m]))", "no label 'variant'"),
        (
            "histogram_quantile(0.5, sum by (le) (rate(tuned_proxy_requests_total[5m])))",
            "no label 'le'",
        ),
        (
            "histogram_quantile(0.5, sum by (route) (rate("
            "tuned_proxy_request_duration_seconds_bucket[5m])))",
            "no label 'le'",
        ),
        (
            "sum by (route) (rate(tuned_proxy_requests_total[1m])) "
            "/ sum by (route, variant) (rate(tuned_proxy_requests_total[1m]))",
            "differ in labels: variant",
        ),
        (
            "sum by (route, variant) (rate(tuned_proxy_requests_total[1m])) / on (variant) "
            "sum by (route) (rate(tuned_proxy_fallbacks_total[1m]))",
            "right side of '/' has no variant",
        ),
        (
            "sum by (route, variant) (rate(tuned_proxy_requests_total[1m])) "
            "or sum by (route) (rate(tuned_proxy_requests_total[1m])) * 0",
            "differ in labels",
        ),
        (
            "sum by (route) (rate(tuned_proxy_requests_total[1m])) / on (route) "
            "sum by (route, reason) (rate(tuned_proxy_fallbacks_total[1m]))",
            "right side of '/' has labels beyond on (route): reason",
        ),
        (
            "sum by (route, variant) (rate(tuned_proxy_requests_total[1m])) / ignoring (variant) "
            "sum by (route, reason) (rate(tuned_proxy_fallbacks_total[1m]))",
            "differ in labels beyond ignoring",
        ),
        ("label_replace(tuned_proxy_fallbacks_total, 'a', '$1', 'route', '(.*)')", "unsupported"),
        ('route:tuned_proxy_prompt_tokens_per_request:ratio_rate5m{variant="a"}', "no label"),
        ("sum(rate(tuned_proxy_requests_total[5m]) by (route)", "not PromQL"),
    ],
)
def test_the_checker_finds_unknown_metrics_labels_and_mismatches(expr: str, problem: str) -> None:
    found = problems(expr, known())
    assert any(problem in one for one in found), found


@pytest.mark.parametrize(
    "expr",
    [
        "histogram_quantile(0.95, sum by (le, route, variant) (rate("
        'tuned_proxy_request_duration_seconds_bucket{route=~"$route"}[$__rate_interval])))',
        "sum by (instance) (tuned_proxy_in_flight_requests)",
        "sum(rate(tuned_proxy_tokens_total[5m])) without (kind)",
        "sum by (route) (rate(tuned_proxy_requests_total[1m])) / on (route) "
        "sum by (route) (rate(tuned_proxy_fallbacks_total[1m]))",
        "sum by (route, variant) (rate(tuned_proxy_requests_total[1m])) / on (route) "
        "group_left sum by (route) (rate(tuned_proxy_fallbacks_total[1m]))",
        "rate(tuned_proxy_requests_total[1m]) and on (route) tuned_proxy_fallbacks_total",
        "sum by (route, variant) (rate(tuned_proxy_requests_total[1m])) / ignoring (variant) "
        "group_left sum by (route) (rate(tuned_proxy_fallbacks_total[1m]))",
        "route_variant:tuned_proxy_prompt_tokens_per_request:ratio_rate5m > 100",
    ],
)
def test_the_checker_accepts_what_exists(expr: str) -> None:
    assert problems(expr, known()) == []


def test_the_checker_follows_labels_through_the_query() -> None:
    query = Query(known())
    assert query.labels_of(
        "histogram_quantile(0.95, sum by (route, le) (rate("
        "tuned_proxy_request_duration_seconds_bucket[5m])))"
    ) == {"route"}
    assert query.labels_of(
        "sum by (route, variant) (rate(tuned_proxy_requests_total[1m])) / on (route) "
        "group_left sum by (route) (rate(tuned_proxy_fallbacks_total[1m]))"
    ) == {"route", "variant"}
    assert query.labels_of("rate(tuned_proxy_fallbacks_total[5m])") == {
        "route",
        "reason",
        *TARGET_LABELS,
    }


def test_the_registry_exports_each_kind_of_series() -> None:
    series = exported()
    assert "tuned_proxy_requests_total" in series
    assert "tuned_proxy_requests" not in series
    assert "le" in series["tuned_proxy_time_to_first_token_seconds_bucket"]
    assert "tuned_proxy_overhead_seconds_count" in series
    assert series["tuned_proxy_fallbacks_total"] == {"route", "reason"}
    assert defined_counters()["tuned_proxy_tool_calls_total"] == {"route", "variant", "function"}


@pytest.mark.parametrize("metric", sorted(ANNOUNCED))
def test_an_announced_metric_matches_its_definition(metric: str) -> None:
    assert defined_counters().get(metric) == ANNOUNCED[metric]


# ----------------------------------------------------------------------------- the rules


def rule_params() -> list[Any]:
    return [pytest.param(rule, id=rule["record"]) for rule in rules()]


def test_the_rules_file_is_a_prometheus_rules_file() -> None:
    loaded = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert set(loaded) == {"groups"}
    names = [group["name"] for group in loaded["groups"]]
    assert len(names) == len(set(names))
    for group in loaded["groups"]:
        assert set(group) == {"name", "rules"}
        for rule in group["rules"]:
            assert set(rule) == {"record", "expr"}, "recording rules, no alerts"
    records = [rule["record"] for rule in rules()]
    assert len(records) == len(set(records))


@pytest.mark.parametrize("rule", rule_params())
def test_a_rule_reads_only_series_recorded_before_it(rule: dict[str, Any]) -> None:
    """Prometheus evaluates a group's rules in order: a rule that read a later record would
    see it one evaluation late, or not at all in another group."""
    records = [r["record"] for r in rules()]
    earlier = set(records[: records.index(rule["record"])])
    series = metrics_known() | {n: labels for n, labels in recorded().items() if n in earlier}
    assert problems(rule["expr"], series) == []


@pytest.mark.parametrize("rule", rule_params())
def test_a_rule_is_named_after_the_labels_it_keeps(rule: dict[str, Any]) -> None:
    match = RECORD_NAME.match(rule["record"])
    assert match is not None, "level:metric:operations"
    level, metric, operations = match.groups()
    assert recorded()[rule["record"]] == set(level.split("_"))
    assert metric.startswith("tuned_proxy_")
    assert operations.endswith("rate5m"), "over the 5 minutes the docs promise"


@pytest.mark.parametrize(
    "record",
    [
        f"{level}:tuned_proxy_{figure}"
        for level in ("route_variant", "route")
        for figure in (
            "prompt_tokens_per_request:ratio_rate5m",
            "tool_call_responses_per_response:ratio_rate5m",
            "tool_argument_errors_per_tool_call:ratio_rate5m",
            "request_duration_seconds:p95_rate5m",
        )
    ]
    + [
        "route:tuned_proxy_shadow_call_agreement:ratio_rate5m",
        "route:tuned_proxy_shadow_function_agreement:ratio_rate5m",
        "route_outcome:tuned_proxy_shadow_agreement:rate5m",
        "route_outcome:tuned_proxy_capture_examples:rate5m",
    ],
)
def test_the_rules_record_each_ab_figure(record: str) -> None:
    assert record in recorded()


def test_the_rules_figures_come_out_right_in_prometheus() -> None:
    """The rules' unit tests (counters with known rates in, the figures out), run by
    Prometheus's own evaluator."""
    promtool = shutil.which("promtool")
    # CI installs it (`.ci/run`); a machine without it runs the rest of the suite.
    if promtool is None and not os.environ.get("CI"):
        pytest.skip("promtool (Prometheus) is not installed")
    assert promtool is not None, "CI must have promtool: .ci/run installs Debian's prometheus"
    for args in (["check", "rules", str(RULES)], ["test", "rules", RULE_TESTS.name]):
        run = subprocess.run(
            [promtool, *args],
            cwd=RULE_TESTS.parent,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert run.returncode == 0, run.stdout + run.stderr


def test_the_rule_tests_cover_every_ab_figure() -> None:
    """Each ratio and quantile of the rules file has an expected value in the promtool tests."""
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    assert tests["rule_files"] == [str(Path("../..") / RULES.relative_to(REPO))]
    tested = {
        name
        for test in tests["tests"]
        for case in test["promql_expr_test"]
        for name in metric_names(case["expr"])
    }
    figures = {r for r in recorded() if r.rsplit(":", 1)[1] != "rate5m"}
    assert figures <= tested


# ----------------------------------------------------------------------------- the dashboard


@pytest.mark.parametrize(("title", "expr"), panel_exprs())
def test_every_panel_query_reads_series_that_exist(title: str, expr: str) -> None:
    assert metric_names(expr), f"{title}: no metric in {expr!r}"
    assert problems(expr, known()) == [], title


@pytest.mark.parametrize(("title", "expr"), panel_exprs())
def test_queries_honour_the_route_and_variant_selection(title: str, expr: str) -> None:
    series = known()
    node = parse(expr)
    labels = [series[name] for name in metric_names(expr)]
    # A query that also reads a metric without variants (fallbacks) compares routes instead.
    per_variant = all("variant" in names for names in labels if "route" in names)
    for selector in selectors(node):
        name, matching = selector_name(selector), matchers(selector)
        if "route" in series[name]:
            assert matching.get("route") == '=~"$route"', f"{title}: {name} ignores $route"
        if per_variant and "variant" in series[name]:
            assert matching.get("variant") == '=~"$variant"', f"{title}: {name} ignores $variant"

    def grouped(child: Any) -> None:
        if isinstance(child, promql.AggregateExpr) and per_variant:
            inner = Query(series).labels(child.expr) or frozenset()
            kept = child.modifier.labels if child.modifier is not None else []
            assert "variant" not in inner or "variant" in kept, f"{title}: variants summed"

    promql.walk(node, grouped)


def test_the_template_variables_query_exported_labels() -> None:
    dashboard = load_dashboard()
    source = variable(dashboard, "datasource")
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    route = variable_query(variable(dashboard, "route"))
    variant = variable_query(variable(dashboard, "variant"))
    assert route == "label_values(tuned_proxy_requests_total, route)"
    assert variant.startswith("label_values(tuned_proxy_requests_total{")
    assert '"$route"' in variant
    for query in (route, variant):
        match = LABEL_VALUES.match(query)
        assert match is not None, query
        selector, label = match.groups()
        assert problems(selector, exported()) == []
        assert label in exported()[metric_names(selector)[0]]
    for name in ("route", "variant"):
        var = variable(dashboard, name)
        assert var["datasource"]["uid"] == DATASOURCE
        assert var["multi"]
        assert var["includeAll"]


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"]
    assert dashboard["title"]
    assert dashboard.get("id") is None  # Grafana assigns it on import
    ids = [panel["id"] for panel in all_panels(dashboard)]
    assert len(ids) == len(set(ids))


def test_every_panel_reads_the_chosen_data_source() -> None:
    for panel in query_panels(load_dashboard()):
        assert panel["datasource"]["uid"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE, panel["title"]


def test_panels_do_not_overlap() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in all_panels(load_dashboard()):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


@pytest.mark.parametrize(
    "metric",
    [
        "tuned_proxy_requests_total",
        "tuned_proxy_request_duration_seconds_bucket",
        "tuned_proxy_time_to_first_token_seconds_bucket",
        "tuned_proxy_overhead_seconds_bucket",
        "tuned_proxy_tokens_total",
        "tuned_proxy_responses_total",
        "tuned_proxy_tool_calls_total",
        "tuned_proxy_tool_argument_errors_total",
        "tuned_proxy_fallbacks_total",
        "tuned_proxy_shadow_requests_total",
        "tuned_proxy_tool_schema_bytes_removed_total",
        *ANNOUNCED,
    ],
)
def test_the_dashboard_shows_each_comparison(metric: str) -> None:
    assert any(metric in reads(expr) for expr in dashboard_exprs())


@pytest.mark.parametrize(
    ("title", "refs"),
    [
        ("Request latency p50 / p95", {"A", "B"}),
        ("Prompt tokens per request", {"A"}),
        ("Tool-call rate", {"A"}),
        ("Invalid-argument rate", {"A"}),
        ("Teacher agreement", {"A", "B", "C"}),
        ("Capture", {"A"}),
        # The summary table: p95 latency, prompt tokens per request, tool-call and
        # invalid-argument rates.
        ("Variants side by side (selected time range)", {"C", "E", "G", "H"}),
    ],
)
def test_the_ab_panels_read_the_recorded_series(title: str, refs: set[str]) -> None:
    """One definition of each A/B figure: the rules file's, which the docs give."""
    targets = {t["refId"]: t["expr"] for t in panel(title)["targets"]}
    for ref in refs:
        names = metric_names(targets[ref])
        assert all(name in recorded() for name in names), f"{title} {ref} reads {names}"


def test_the_teacher_agreement_panel_shows_outcomes_and_both_rates() -> None:
    exprs = [t["expr"] for t in panel("Teacher agreement")["targets"]]
    names = {name for expr in exprs for name in metric_names(expr)}
    assert names == {
        "route_outcome:tuned_proxy_shadow_agreement:rate5m",
        "route:tuned_proxy_shadow_call_agreement:ratio_rate5m",
        "route:tuned_proxy_shadow_function_agreement:ratio_rate5m",
    }
