"""The metrics stage: what every finished request, shadow copy and reload did, for Prometheus.

Every metric lives on the `CollectorRegistry` given to `Metrics` (a new one by default), so two
apps, or two tests, never share a count. `GET /metrics` serves `Metrics.render()`.

The metrics (all prefixed `tuned_proxy_`; `{route,variant}` is the serving route and variant):

- `requests_total{route,variant,code}`: finished requests by the HTTP status sent to the client.
- `request_duration_seconds{route,variant}`: histogram, from the start of the request to its
  end (the last byte of a stream).
- `upstream_duration_seconds{route,variant}`: histogram, time spent waiting on upstreams,
  fallbacks included; only requests that were forwarded.
- `overhead_seconds{route,variant}`: histogram (µs to 100 ms), the proxy's own time: total
  minus upstream wait.
- `time_to_first_token_seconds{route,variant}`: histogram, streams only, from the start of the
  request to the first event relayed to the client.
- `tokens_total{route,variant,kind}`: the upstream's `usage`: `prompt`, `completion`, and
  `cached` (`prompt_tokens_details.cached_tokens`, a part of `prompt`).
- `responses_total{route,variant,finish_reason}`: one per answered choice; a reason outside
  OpenAI's (`stop`, `length`, `tool_calls`, `content_filter`, `function_call`) is `other`.
- `tool_calls_total{route,variant,function}`: answered tool calls; a function outside the
  serving policy's training set is `other`.
- `tool_argument_errors_total{route,variant,function,kind}`: answered tool calls whose
  arguments are not a JSON object (`json`) or break the function's full schema (`schema`).
- `rewrites_total{route,variant,action}`: rewrite actions, in the rewrite's vocabulary.
- `tool_schema_bytes_removed_total{route,variant}`: tool-definition bytes the rewrite removed.
- `fallbacks_total{route,reason}`: attempts that failed and were followed by another target.
- `upstream_errors_total{upstream,reason}`: failed attempts, by configured upstream name and
  the attempt's reason (`connect`, `timeout`, `status_429`, `status_5xx`, ...; `unknown` when
  the attempt did not say).
- `shadow_requests_total{route,outcome}`: shadow copies by outcome (`ok`, `error`, `timeout`,
  `cancelled`, `dropped`).
- `in_flight_requests`: gauge, requests being served now.
- `config_reloads_total{result}`: reloads, `ok` or `error`.

Labels stay bounded: route and variant names come from the config, never from the client. A
request that failed before it was routed (bad JSON, bad key, unknown model) counts with
`route=""` and `variant=""` — Prometheus's "no value", which no route can have since an empty
model name is refused — and a routed request that failed before a variant was chosen has
`variant=""`. `overhead_seconds` carries route and variant (beyond the design's bare name) so
variants' rewrite costs can be compared.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase

from proxy.record import Attempt, RequestRecord
from proxy.rewrite import ACTIONS

PREFIX = "tuned_proxy_"
# The classic text format's content type, which every scraper reads and which prometheus_client
# itself answers a scraper that asks for nothing newer; our names need nothing newer.
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
NOT_ROUTED = ""
OTHER = "other"
# Why an attempt failed when the record does not say (an older caller, an unforeseen path).
UNKNOWN_REASON = "unknown"
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
ARGUMENT_ERROR_KINDS = frozenset({"json", "schema"})
REWRITE_ACTIONS = frozenset(ACTIONS)

# LLM answers take from milliseconds (a cached refusal) to minutes (a long stream).
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
# The proxy's own work is microseconds (a rewrite) to tens of milliseconds (a large body).
OVERHEAD_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
)  # fmt: skip

M = TypeVar("M", bound=MetricWrapperBase)


class _Children(dict[Any, M], Generic[M]):
    """The label children of one metric under fixed leading labels, created on first use.

    A key is the remaining label value (a string), a tuple of them, or `()` when there are
    none; after the first use a child is one dict lookup away, skipping `labels()`' checks.
    """

    def __init__(self, metric: M, *leading: str) -> None:
        super().__init__()
        self.metric = metric
        self.leading = leading

    def __missing__(self, key: str | tuple[str, ...]) -> M:
        rest = key if isinstance(key, tuple) else (key,)
        child = self.metric.labels(*self.leading, *rest)
        self[key] = child
        return child


class _VariantSeries:
    """Every child metric of one (route, variant), resolved once and kept."""

    def __init__(self, metrics: Metrics, route: str, variant: str) -> None:
        labels = (route, variant)
        self.requests = _Children(metrics.requests, *labels)
        self.duration = metrics.request_duration.labels(*labels)
        self.overhead = metrics.overhead.labels(*labels)
        self.upstream = _Children(metrics.upstream_duration, *labels)
        self.ttft = _Children(metrics.time_to_first_token, *labels)
        self.tokens = _Children(metrics.tokens, *labels)
        self.responses = _Children(metrics.responses, *labels)
        self.tool_calls = _Children(metrics.tool_calls, *labels)
        self.argument_errors = _Children(metrics.tool_argument_errors, *labels)
        self.rewrites = _Children(metrics.rewrites, *labels)
        self.bytes_removed = _Children(metrics.tool_schema_bytes_removed, *labels)


class Metrics:
    """The proxy's Prometheus metrics (see the module docstring for each one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._series: dict[tuple[str, str], _VariantSeries] = {}
        self._define_request_metrics()
        self._define_answer_metrics()
        self._define_operation_metrics()

    def _define_request_metrics(self) -> None:
        variant = ("route", "variant")
        self.requests = self._counter(
            "requests", "Finished requests by HTTP status.", (*variant, "code")
        )
        self.request_duration = self._histogram(
            "request_duration_seconds", "Total request time.", variant, LATENCY_BUCKETS
        )
        self.upstream_duration = self._histogram(
            "upstream_duration_seconds", "Time waiting on upstreams.", variant, LATENCY_BUCKETS
        )
        self.overhead = self._histogram(
            "overhead_seconds", "Time spent in the proxy itself.", variant, OVERHEAD_BUCKETS
        )
        self.time_to_first_token = self._histogram(
            "time_to_first_token_seconds",
            "Streams: time to the first relayed event.",
            variant,
            LATENCY_BUCKETS,
        )

    def _define_answer_metrics(self) -> None:
        variant = ("route", "variant")
        self.tokens = self._counter(
            "tokens", "Upstream-reported tokens (prompt, completion, cached).", (*variant, "kind")
        )
        self.responses = self._counter(
            "responses", "Answered choices by finish reason.", (*variant, "finish_reason")
        )
        self.tool_calls = self._counter(
            "tool_calls", "Answered tool calls by function.", (*variant, "function")
        )
        self.tool_argument_errors = self._counter(
            "tool_argument_errors",
            "Tool calls whose arguments are not JSON or break the full schema.",
            (*variant, "function", "kind"),
        )
        self.rewrites = self._counter("rewrites", "Rewrite actions taken.", (*variant, "action"))
        self.tool_schema_bytes_removed = self._counter(
            "tool_schema_bytes_removed", "Tool-definition bytes removed by the rewrite.", variant
        )

    def _define_operation_metrics(self) -> None:
        self.fallbacks = self._counter(
            "fallbacks", "Failed attempts followed by another target.", ("route", "reason")
        )
        self.upstream_errors = self._counter(
            "upstream_errors", "Failed upstream attempts.", ("upstream", "reason")
        )
        self.shadow_requests = self._counter(
            "shadow_requests", "Shadow copies by outcome.", ("route", "outcome")
        )
        self.config_reloads = self._counter("config_reloads", "Config reloads.", ("result",))
        self.in_flight = Gauge(
            f"{PREFIX}in_flight_requests", "Requests being served now.", registry=self.registry
        )

    def _counter(self, name: str, help_text: str, labels: tuple[str, ...]) -> Counter:
        return Counter(f"{PREFIX}{name}", help_text, labels, registry=self.registry)

    def _histogram(
        self, name: str, help_text: str, labels: tuple[str, ...], buckets: tuple[float, ...]
    ) -> Histogram:
        return Histogram(
            f"{PREFIX}{name}", help_text, labels, registry=self.registry, buckets=buckets
        )

    # ------------------------------------------------------------------------- observing

    def observe_request(self, record: RequestRecord, *, total_seconds: float | None = None) -> None:
        """Count everything one finished request did.

        `total_seconds` defaults to the record's elapsed time; tests pin it.
        """
        total = record.elapsed() if total_seconds is None else total_seconds
        series = self._series_of(record.route or NOT_ROUTED, record.variant or NOT_ROUTED)
        series.requests[str(record.status)].inc()
        series.duration.observe(total)
        series.overhead.observe(max(total - record.upstream_seconds, 0.0))
        if record.attempts:
            series.upstream[()].observe(record.upstream_seconds)
        if record.stream and record.first_byte_seconds is not None:
            series.ttft[()].observe(record.first_byte_seconds)
        if record.variant is not None:
            _observe_answer(series, record)
        if record.attempts:
            self._observe_attempts(record.route or NOT_ROUTED, record.attempts)

    def _series_of(self, route: str, variant: str) -> _VariantSeries:
        series = self._series.get((route, variant))
        if series is None:
            series = self._series[(route, variant)] = _VariantSeries(self, route, variant)
        return series

    def _observe_attempts(self, route: str, attempts: list[Attempt]) -> None:
        # Failures are rare: these resolve their label children on the spot.
        last = len(attempts) - 1
        for position, attempt in enumerate(attempts):
            followed = position < last
            if attempt.reason is None and attempt.error is None and not followed:
                continue  # it answered
            reason = attempt.reason or UNKNOWN_REASON
            self.upstream_errors.labels(attempt.upstream, reason).inc()
            if followed:
                self.fallbacks.labels(route, reason).inc()

    def observe_shadow(self, route: str, outcome: str) -> None:
        self.shadow_requests.labels(route, outcome).inc()

    def observe_reload(self, result: str) -> None:
        self.config_reloads.labels(result).inc()

    def render(self) -> tuple[bytes, str]:
        """The body and content type of `GET /metrics` (Prometheus text format)."""
        return generate_latest(self.registry), TEXT_FORMAT


def _observe_answer(series: _VariantSeries, record: RequestRecord) -> None:
    """What the rewrite and the answer of a request that reached a variant report."""
    if record.usage:
        _observe_usage(series, record.usage)
    for reason in record.finish_reasons:
        series.responses[reason if reason in FINISH_REASONS else OTHER].inc()
    known = record.policy_functions
    for function in record.tool_calls:
        series.tool_calls[function if function in known else OTHER].inc()
    for function, kind in record.argument_errors:
        label = function if function in known else OTHER
        series.argument_errors[(label, kind if kind in ARGUMENT_ERROR_KINDS else OTHER)].inc()
    # A slim rewrite reports one change per tool: count them first, then increment each
    # action's counter once (every increment takes a lock).
    removed = 0
    actions: dict[str, int] = {}
    for change in record.changes:
        action = change.action if change.action in REWRITE_ACTIONS else OTHER
        actions[action] = actions.get(action, 0) + 1
        removed += change.bytes_removed
    for action, count in actions.items():
        series.rewrites[action].inc(count)
    # Counted even when 0, so "bytes removed per request" is defined for every variant.
    series.bytes_removed[()].inc(max(removed, 0))


def _observe_usage(series: _VariantSeries, usage: Mapping[str, Any]) -> None:
    prompt = _token_count(usage.get("prompt_tokens"))
    if prompt is not None:
        series.tokens["prompt"].inc(prompt)
    completion = _token_count(usage.get("completion_tokens"))
    if completion is not None:
        series.tokens["completion"].inc(completion)
    details = usage.get("prompt_tokens_details")
    if isinstance(details, Mapping):
        cached = _token_count(details.get("cached_tokens"))
        if cached is not None:
            series.tokens["cached"].inc(cached)


def _token_count(value: Any) -> int | None:
    """A usage number as the upstream reported it; None when it is absent or not a count."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None
