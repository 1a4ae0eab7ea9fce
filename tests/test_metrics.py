"""The metrics stage: exact counts and histograms, read back through Prometheus' own text parser."""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from proxy.metrics import Metrics
from proxy.record import Attempt, RequestRecord
from proxy.rewrite import Change
from tests.support.metrics import Samples, parse_samples
from tests.support.records import AT_VARIANT, ROUTE, VARIANT, full_record, routed_record


def scrape(metrics: Metrics) -> Samples:
    """Every sample `GET /metrics` would serve, keyed by sample name and label set."""
    return parse_samples(metrics.render()[0].decode())


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((f"tuned_proxy_{name}", frozenset(labels.items())))


def names_with(samples: Samples, name: str) -> list[dict[str, str]]:
    """The label sets of every sample called `name` (without the prefix)."""
    return [dict(labels) for sample, labels in samples if sample == f"tuned_proxy_{name}"]


def test_a_request_counts_its_status_and_durations() -> None:
    metrics = Metrics()
    metrics.observe_request(routed_record(), total_seconds=2.0)
    samples = scrape(metrics)
    assert value(samples, "requests_total", code="200", **AT_VARIANT) == 1
    assert value(samples, "request_duration_seconds_sum", **AT_VARIANT) == 2.0
    assert value(samples, "request_duration_seconds_bucket", le="1.0", **AT_VARIANT) == 0
    assert value(samples, "request_duration_seconds_bucket", le="2.5", **AT_VARIANT) == 1
    assert value(samples, "upstream_duration_seconds_sum", **AT_VARIANT) == 1.5
    # The proxy's own time is what the upstream did not take.
    assert value(samples, "overhead_seconds_sum", **AT_VARIANT) == 0.5
    assert value(samples, "overhead_seconds_count", **AT_VARIANT) == 1


def test_overhead_is_never_negative() -> None:
    metrics = Metrics()
    metrics.observe_request(routed_record(upstream_seconds=3.0), total_seconds=2.0)
    samples = scrape(metrics)
    assert value(samples, "overhead_seconds_sum", **AT_VARIANT) == 0.0
    assert value(samples, "overhead_seconds_bucket", le="1e-05", **AT_VARIANT) == 1


def test_overhead_buckets_resolve_microseconds_and_latency_buckets_reach_minutes() -> None:
    metrics = Metrics()
    record = routed_record(upstream_seconds=89.99997)
    metrics.observe_request(record, total_seconds=90.0)
    samples = scrape(metrics)
    assert value(samples, "overhead_seconds_bucket", le="2.5e-05", **AT_VARIANT) == 0
    assert value(samples, "overhead_seconds_bucket", le="5e-05", **AT_VARIANT) == 1
    assert value(samples, "request_duration_seconds_bucket", le="60.0", **AT_VARIANT) == 0
    assert value(samples, "request_duration_seconds_bucket", le="120.0", **AT_VARIANT) == 1


def test_time_to_first_token_is_counted_for_streams_only() -> None:
    metrics = Metrics()
    metrics.observe_request(routed_record(stream=True, first_byte_seconds=0.25), total_seconds=1)
    metrics.observe_request(
        routed_record(variant="ft-full", first_byte_seconds=0.25), total_seconds=1
    )
    metrics.observe_request(routed_record(variant="ft-next", stream=True), total_seconds=1)
    samples = scrape(metrics)
    assert value(samples, "time_to_first_token_seconds_count", **AT_VARIANT) == 1
    assert value(samples, "time_to_first_token_seconds_sum", **AT_VARIANT) == 0.25
    # Not a stream; a stream that never sent a byte: no time to first token at all.
    assert {
        labels["variant"] for labels in names_with(samples, "time_to_first_token_seconds_count")
    } == {VARIANT}


def test_tokens_come_from_usage_with_cached_prompt_tokens() -> None:
    metrics = Metrics()
    usage = {
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "total_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
    }
    metrics.observe_request(routed_record(usage=usage), total_seconds=1)
    metrics.observe_request(routed_record(usage=usage), total_seconds=1)
    samples = scrape(metrics)
    assert value(samples, "tokens_total", kind="prompt", **AT_VARIANT) == 240
    assert value(samples, "tokens_total", kind="completion", **AT_VARIANT) == 60
    assert value(samples, "tokens_total", kind="cached", **AT_VARIANT) == 128


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": 120, "completion_tokens": 30},
        {"prompt_tokens": 120, "completion_tokens": 30, "prompt_tokens_details": None},
        {"prompt_tokens": 120, "completion_tokens": 30, "prompt_tokens_details": {}},
    ],
)
def test_usage_without_cached_tokens_counts_no_cached_tokens(usage: dict[str, Any]) -> None:
    metrics = Metrics()
    metrics.observe_request(routed_record(usage=usage), total_seconds=1)
    samples = scrape(metrics)
    assert value(samples, "tokens_total", kind="prompt", **AT_VARIANT) == 120
    assert value(samples, "tokens_total", kind="completion", **AT_VARIANT) == 30
    assert value(samples, "tokens_total", kind="cached", **AT_VARIANT) is None


def test_usage_values_that_are_not_counts_are_ignored() -> None:
    metrics = Metrics()
    usage = {"prompt_tokens": "120", "completion_tokens": True, "prompt_tokens_details": []}
    metrics.observe_request(routed_record(usage=usage), total_seconds=1)
    metrics.observe_request(routed_record(usage=None), total_seconds=1)
    assert names_with(scrape(metrics), "tokens_total") == []


def test_finish_reasons_outside_openais_set_are_other() -> None:
    metrics = Metrics()
    reasons = ["stop", "tool_calls", "tool_calls", "eos_token", "length", "abort"]
    metrics.observe_request(routed_record(finish_reasons=reasons), total_seconds=1)
    samples = scrape(metrics)
    counted = {
        labels["finish_reason"]: value(samples, "responses_total", **labels)
        for labels in names_with(samples, "responses_total")
    }
    assert counted == {"stop": 1, "tool_calls": 2, "length": 1, "other": 2}


def test_functions_outside_the_training_set_are_other() -> None:
    metrics = Metrics()
    record = routed_record(
        tool_calls=["lookup_order", "lookup_order", "delete_all_users", "refund_order"],
        argument_errors=[("delete_all_users", "json"), ("lookup_order", "schema")],
    )
    metrics.observe_request(record, total_seconds=1)
    samples = scrape(metrics)
    assert value(samples, "tool_calls_total", function="lookup_order", **AT_VARIANT) == 2
    assert value(samples, "tool_calls_total", function="refund_order", **AT_VARIANT) == 1
    assert value(samples, "tool_calls_total", function="other", **AT_VARIANT) == 1
    assert value(samples, "tool_calls_total", function="delete_all_users", **AT_VARIANT) is None
    errors = "tool_argument_errors_total"
    assert value(samples, errors, function="other", kind="json", **AT_VARIANT) == 1
    assert value(samples, errors, function="lookup_order", kind="schema", **AT_VARIANT) == 1
    assert len(names_with(samples, errors)) == 2


def test_a_policy_without_training_tools_labels_every_function_other() -> None:
    metrics = Metrics()
    record = routed_record(tool_calls=["lookup_order", "x"], policy_functions=frozenset())
    metrics.observe_request(record, total_seconds=1)
    samples = scrape(metrics)
    assert [labels["function"] for labels in names_with(samples, "tool_calls_total")] == ["other"]
    assert value(samples, "tool_calls_total", function="other", **AT_VARIANT) == 2


def test_an_argument_error_kind_outside_json_and_schema_is_other() -> None:
    metrics = Metrics()
    metrics.observe_request(
        routed_record(argument_errors=[("lookup_order", "weird")]), total_seconds=1
    )
    samples = scrape(metrics)
    assert (
        value(
            samples,
            "tool_argument_errors_total",
            function="lookup_order",
            kind="other",
            **AT_VARIANT,
        )
        == 1
    )


def test_rewrite_actions_and_removed_schema_bytes_are_counted() -> None:
    metrics = Metrics()
    changes = [
        Change("tool_slimmed", "lookup_order", 300),
        Change("tool_slimmed", "refund_order", 200),
        Change("tool_omitted", "cancel_order", 150),
        Change("system_prompt_replaced"),
        Change("not_an_action"),
    ]
    metrics.observe_request(routed_record(changes=changes), total_seconds=1)
    metrics.observe_request(routed_record(changes=changes[:1]), total_seconds=1)
    samples = scrape(metrics)
    assert value(samples, "rewrites_total", action="tool_slimmed", **AT_VARIANT) == 3
    assert value(samples, "rewrites_total", action="tool_omitted", **AT_VARIANT) == 1
    assert value(samples, "rewrites_total", action="system_prompt_replaced", **AT_VARIANT) == 1
    assert value(samples, "rewrites_total", action="other", **AT_VARIANT) == 1
    assert value(samples, "tool_schema_bytes_removed_total", **AT_VARIANT) == 650 + 300


def test_a_variant_that_removes_nothing_still_reports_zero_bytes_removed() -> None:
    metrics = Metrics()
    metrics.observe_request(routed_record(), total_seconds=1)
    assert value(scrape(metrics), "tool_schema_bytes_removed_total", **AT_VARIANT) == 0


def test_fallbacks_and_upstream_errors_are_counted_per_failed_attempt() -> None:
    metrics = Metrics()
    attempts = [
        Attempt(target=VARIANT, upstream="azure-east", error="timed out", reason="timeout"),
        Attempt(target="fallback-1", upstream="azure-west", status=503, reason="status_5xx"),
        Attempt(target="fallback-2", upstream="openai", status=200),
    ]
    record = routed_record(variant="fallback-2", upstream="openai", attempts=attempts)
    metrics.observe_request(record, total_seconds=3)
    samples = scrape(metrics)
    assert value(samples, "fallbacks_total", route=ROUTE, reason="timeout") == 1
    assert value(samples, "fallbacks_total", route=ROUTE, reason="status_5xx") == 1
    assert len(names_with(samples, "fallbacks_total")) == 2
    assert value(samples, "upstream_errors_total", upstream="azure-east", reason="timeout") == 1
    assert value(samples, "upstream_errors_total", upstream="azure-west", reason="status_5xx") == 1
    # The attempt that answered is no error.
    assert len(names_with(samples, "upstream_errors_total")) == 2
    # The request is counted once, under the target that served it.
    assert value(samples, "requests_total", route=ROUTE, variant="fallback-2", code="200") == 1


def test_a_last_attempt_that_failed_is_an_upstream_error_but_no_fallback() -> None:
    metrics = Metrics()
    attempts = [Attempt(target=VARIANT, upstream="azure-east", status=429, reason="status_429")]
    metrics.observe_request(routed_record(status=429, attempts=attempts), total_seconds=1)
    samples = scrape(metrics)
    assert value(samples, "upstream_errors_total", upstream="azure-east", reason="status_429") == 1
    assert names_with(samples, "fallbacks_total") == []
    assert value(samples, "requests_total", code="429", **AT_VARIANT) == 1


def test_a_failed_attempt_without_a_reason_counts_as_unknown() -> None:
    metrics = Metrics()
    attempts = [
        Attempt(target=VARIANT, upstream="azure-east", status=502),
        Attempt(target="fallback-1", upstream="openai", error="connection refused"),
    ]
    metrics.observe_request(routed_record(status=502, attempts=attempts), total_seconds=1)
    samples = scrape(metrics)
    assert value(samples, "fallbacks_total", route=ROUTE, reason="unknown") == 1
    assert value(samples, "upstream_errors_total", upstream="azure-east", reason="unknown") == 1
    assert value(samples, "upstream_errors_total", upstream="openai", reason="unknown") == 1


def test_a_request_that_failed_before_routing_has_empty_route_and_variant() -> None:
    metrics = Metrics()
    record = RequestRecord(request_id="req_bad", path="/v1/chat/completions", status=404)
    metrics.observe_request(record, total_seconds=0.001)
    samples = scrape(metrics)
    assert value(samples, "requests_total", route="", variant="", code="404") == 1
    assert value(samples, "overhead_seconds_count", route="", variant="") == 1
    # Nothing was forwarded, rewritten or answered: no series for any of it.
    for name in ("upstream_duration_seconds_count", "tokens_total", "rewrites_total"):
        assert names_with(samples, name) == []
    assert names_with(samples, "tool_schema_bytes_removed_total") == []


def test_a_routed_request_refused_before_a_variant_was_chosen_has_an_empty_variant() -> None:
    metrics = Metrics()
    record = RequestRecord(request_id="req_pin", path="/v1/chat/completions", route=ROUTE)
    record.status = 400
    metrics.observe_request(record, total_seconds=0.001)
    samples = scrape(metrics)
    assert value(samples, "requests_total", route=ROUTE, variant="", code="400") == 1
    assert names_with(samples, "tool_schema_bytes_removed_total") == []


def test_label_values_come_only_from_the_record_route_and_variant() -> None:
    metrics = Metrics()
    metrics.observe_request(full_record(), total_seconds=2)
    metrics.observe_request(
        RequestRecord(request_id="r", path="/v1/chat/completions", status=404), total_seconds=1
    )
    samples = scrape(metrics)
    routes = {dict(labels).get("route") for _, labels in samples} - {None}
    variants = {dict(labels).get("variant") for _, labels in samples} - {None}
    assert routes == {ROUTE, ""}
    assert variants == {VARIANT, ""}


def test_shadow_outcomes_reloads_and_in_flight() -> None:
    metrics = Metrics()
    metrics.observe_shadow(ROUTE, "ok")
    metrics.observe_shadow(ROUTE, "ok")
    metrics.observe_shadow(ROUTE, "dropped")
    metrics.observe_reload("ok")
    metrics.observe_reload("error")
    metrics.in_flight.inc()
    metrics.in_flight.inc()
    metrics.in_flight.dec()
    samples = scrape(metrics)
    assert value(samples, "shadow_requests_total", route=ROUTE, outcome="ok") == 2
    assert value(samples, "shadow_requests_total", route=ROUTE, outcome="dropped") == 1
    assert value(samples, "config_reloads_total", result="ok") == 1
    assert value(samples, "config_reloads_total", result="error") == 1
    assert value(samples, "in_flight_requests") == 1


def test_two_instances_do_not_share_state() -> None:
    first, second = Metrics(), Metrics()
    first.observe_request(full_record(), total_seconds=1)
    first.in_flight.inc()
    samples = scrape(second)
    assert names_with(samples, "requests_total") == []
    assert value(samples, "in_flight_requests") == 0
    assert value(scrape(first), "requests_total", code="200", **AT_VARIANT) == 1


def test_metrics_live_on_the_injected_registry() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.observe_request(routed_record(), total_seconds=1)
    assert metrics.registry is registry
    labels = {"code": "200", **AT_VARIANT}
    assert registry.get_sample_value("tuned_proxy_requests_total", labels) == 1


def test_every_series_exports_when_it_was_created() -> None:
    before = time.time()
    metrics = Metrics()
    metrics.observe_request(full_record(), total_seconds=1)
    metrics.observe_shadow(ROUTE, "ok")
    metrics.observe_reload("ok")
    after = time.time()
    samples = scrape(metrics)
    series = {
        (name.removesuffix("_total").removesuffix("_count"), labels)
        for name, labels in samples
        if name.endswith(("_total", "_count"))
    }
    assert len(series) > 10
    for name, labels in series:
        created = samples.get((f"{name}_created", labels))
        assert created is not None, (name, dict(labels))
        assert before <= created <= after


def test_a_registry_holds_one_metrics() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Metrics(registry)


def test_render_serves_the_prometheus_text_format() -> None:
    metrics = Metrics()
    metrics.observe_request(full_record(), total_seconds=1)
    body, content_type = metrics.render()
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert b"# TYPE tuned_proxy_request_duration_seconds histogram" in body
    samples = scrape(metrics)
    assert (
        value(
            samples,
            "tool_argument_errors_total",
            function="lookup_order",
            kind="schema",
            **AT_VARIANT,
        )
        == 1
    )
