"""The Grafana dashboard: its queries name only metrics and labels the proxy exports.

A dashboard query on a misspelt metric or label shows "No data" forever and nobody notices, so
every `expr` is read here and checked against what a `Metrics()` registry really exports after
it observed a request that used every part of the record.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.metrics import Metrics
from tests.support.records import full_record

DASHBOARD = Path(__file__).resolve().parent.parent / "helm/tuned-proxy/dashboards/tuned-proxy.json"
DATASOURCE = "${datasource}"
# Labels Prometheus adds to every series when it scrapes a target; the proxy cannot export them.
TARGET_LABELS = frozenset({"instance", "job"})
# PromQL words that are neither metrics nor functions.
OPERATOR_WORDS = frozenset({"or", "and", "unless", "bool", "by"})
# Modifiers this checker does not follow; the dashboard does without them.
UNSUPPORTED = re.compile(r"\b(without|on|ignoring|group_left|group_right|offset)\b")

STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
BY_CLAUSE = re.compile(r"\bby\s*\(([^)]*)\)\s*\(")
IDENTIFIER = re.compile(r"(?<![\w.$])([a-zA-Z_:][\w:]*)")
LABEL_VALUES = re.compile(r"^label_values\((?:(.*),\s*)?(\w+)\)$", re.DOTALL)

Series = dict[str, frozenset[str]]


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


def closing_paren(text: str, opening: int) -> int:
    depth = 0
    for position in range(opening, len(text)):
        depth += {"(": 1, ")": -1}.get(text[position], 0)
        if depth == 0:
            return position
    raise AssertionError(f"unbalanced parentheses in {text!r}")


def metric_names(expr: str) -> list[str]:
    """The metric names an expression reads (strings, selectors' braces and ranges removed)."""
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", STRING.sub('""', expr))
    bare = re.sub(r"\bby\s*\([^)]*\)", "", bare)
    names = []
    for match in IDENTIFIER.finditer(bare):
        rest = bare[match.end() :].lstrip()
        if rest.startswith("(") or match.group(1) in OPERATOR_WORDS:
            continue  # a function or an operator
        names.append(match.group(1))
    return names


def problems(expr: str, series: Series) -> list[str]:
    """Every metric or label `expr` uses that `series` does not have."""
    found = [f"unsupported modifier {m.group(1)!r}" for m in UNSUPPORTED.finditer(expr)]
    unquoted = STRING.sub('""', expr)
    for name in metric_names(expr):
        if name not in series:
            found.append(f"unknown metric {name}")
    for selector in SELECTOR.finditer(unquoted):
        name, matchers = selector.groups()
        for label in MATCHER_LABEL.findall(matchers):
            if name in series and label not in series[name]:
                found.append(f"{name} has no label {label!r}")
    for clause in BY_CLAUSE.finditer(unquoted):
        grouped = {label.strip() for label in clause.group(1).split(",") if label.strip()}
        inner = unquoted[clause.end() - 1 : closing_paren(unquoted, clause.end() - 1) + 1]
        for name in metric_names(inner):
            missing = grouped - series.get(name, frozenset()) - TARGET_LABELS
            found.extend(f"{name} has no label {label!r} to group by" for label in sorted(missing))
    return found


def load_dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in all_panels(dashboard) if panel["type"] != "row"]


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


# ----------------------------------------------------------------------------- the checker


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("rate(tuned_proxy_requests[5m])", "unknown metric tuned_proxy_requests"),
        ("tuned_proxy_request_duration_seconds", "unknown metric"),
        ("rate(tuned_proxy_requests_total_bucket[5m])", "unknown metric"),
        ("rate(tuned_proxy_requests_count[5m])", "unknown metric"),
        ("rate(request_duration_seconds_bucket[5m])", "unknown metric"),
        ('tuned_proxy_fallbacks_total{variant="a"}', "no label 'variant'"),
        ("sum by (variant) (rate(tuned_proxy_fallbacks_total[5m]))", "no label 'variant'"),
        (
            "histogram_quantile(0.5, sum by (le) (rate(tuned_proxy_requests_total[5m])))",
            "no label 'le'",
        ),
        ("sum(rate(tuned_proxy_tokens_total[5m])) without (kind)", "unsupported modifier"),
        (
            "sum by (route) (rate(tuned_proxy_requests_total[1m])) / on (route) "
            "sum by (route) (rate(tuned_proxy_fallbacks_total[1m]))",
            "unsupported modifier",
        ),
    ],
)
def test_the_checker_finds_unknown_metrics_and_labels(expr: str, problem: str) -> None:
    assert any(problem in found for found in problems(expr, exported()))


def test_the_checker_accepts_what_exists() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, route, variant) (rate("
        'tuned_proxy_request_duration_seconds_bucket{route=~"$route", code="a{b}"}[5m])))'
    )
    assert problems(expr.replace(', code="a{b}"', ""), exported()) == []
    assert problems("sum by (instance) (tuned_proxy_in_flight_requests)", exported()) == []


def test_the_registry_exports_each_kind_of_series() -> None:
    series = exported()
    assert "tuned_proxy_requests_total" in series
    assert "tuned_proxy_requests" not in series
    assert "le" in series["tuned_proxy_time_to_first_token_seconds_bucket"]
    assert "tuned_proxy_overhead_seconds_count" in series
    assert series["tuned_proxy_fallbacks_total"] == {"route", "reason"}


# ----------------------------------------------------------------------------- the dashboard


@pytest.mark.parametrize(("title", "expr"), panel_exprs())
def test_every_panel_query_uses_exported_metrics_and_labels(title: str, expr: str) -> None:
    assert metric_names(expr), f"{title}: no metric in {expr!r}"
    assert problems(expr, exported()) == [], title


@pytest.mark.parametrize(("title", "expr"), panel_exprs())
def test_queries_honour_the_route_and_variant_selection(title: str, expr: str) -> None:
    series = exported()
    labels = [series.get(name, frozenset()) for name in metric_names(expr)]
    # A query that also reads a metric without variants (fallbacks) compares routes instead.
    per_variant = all("variant" in names for names in labels if "route" in names)
    for selector in SELECTOR.finditer(expr):
        name, matchers = selector.groups()
        if "route" in series.get(name, frozenset()):
            assert 'route=~"$route"' in matchers, f"{title}: {name} ignores $route"
        if per_variant and "variant" in series.get(name, frozenset()):
            assert 'variant=~"$variant"' in matchers, f"{title}: {name} ignores $variant"
    unquoted = STRING.sub('""', expr)
    for clause in BY_CLAUSE.finditer(unquoted if per_variant else ""):
        grouped = {label.strip() for label in clause.group(1).split(",")}
        inner = unquoted[clause.end() - 1 : closing_paren(unquoted, clause.end() - 1) + 1]
        if any("variant" in series.get(name, frozenset()) for name in metric_names(inner)):
            assert "variant" in grouped, f"{title}: variants are summed together"


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
    ],
)
def test_the_dashboard_shows_each_comparison(metric: str) -> None:
    exprs = [
        target["expr"] for panel in query_panels(load_dashboard()) for target in panel["targets"]
    ]
    assert any(metric in metric_names(expr) for expr in exprs)
