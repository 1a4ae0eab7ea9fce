"""The metrics stage: what every finished request, shadow copy and reload did, for Prometheus.

Every metric lives on the `CollectorRegistry` given to `Metrics` (a new one by default), so two
apps, or two tests, never share a count. `GET /metrics` serves `Metrics.render()`.

The metrics (all prefixed `tuned_proxy_`; `{route,variant}` is the serving route and variant):

- `requests_total{route,variant,code}`: finished requests by the HTTP status sent to the client.
- `api_requests_total{api}`: requests to a model API by the API the client spoke (`chat`,
  `responses`), whatever became of them.
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
- `capture_examples_total{route,outcome}`: sampled exchanges of a capturing route: `written`
  (a line in the capture file), `dropped` (the writer's queue was full), `skipped` (not an
  example: an error answer, an opt-out, an answer `training check` would refuse), `failed`
  (the disk refused the write).
- `shadow_agreement_total{route,outcome}`: a comparing shadow's tool calls against the served
  answer's: `same_calls`, `same_functions`, `different`, `no_calls`, `error`.
- `in_flight_requests`: gauge, requests being served now.
- `config_reloads_total{result}`: reloads, `ok` or `error`.
- `trace_spans_dropped_total{reason}`: spans that never reached the trace collector (tracing
  on): `queue_full` (the export queue held its most), `export_failed` (the collector refused
  or could not be reached), `shutdown` (ended after their provider was shut down).

Labels stay bounded: route and variant names come from the config, never from the client. A
request that failed before it was routed (bad JSON, bad key, unknown model) counts with
`route=""` and `variant=""` — Prometheus's "no value", which no route can have since an empty
model name is refused — and a routed request that failed before a variant was chosen has
`variant=""`. `overhead_seconds` carries route and variant (beyond the design's bare name) so
variants' rewrite costs can be compared.
"""

from __future__ import annotations

import math
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from proxy.exposition import (
    TEXT_FORMAT,
    Collector,
    CounterFamily,
    Counts,
    Family,
    HistogramFamily,
    LazyHistograms,
)
from proxy.record import Attempt, RequestRecord, token_count
from proxy.rewrite import ACTIONS

PREFIX = "tuned_proxy_"
NOT_ROUTED = ""
OTHER = "other"
# Why a span was not exported (`Metrics.count_dropped_spans`).
SPAN_DROP_REASONS = ("queue_full", "export_failed", "shutdown")
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


class _VariantSeries:
    """Every series of one (route, variant), resolved once and kept."""

    def __init__(self, metrics: Metrics, route: str, variant: str) -> None:
        labels = (route, variant)
        self.requests = metrics.requests.under(*labels)
        self.duration = metrics.request_duration.series(*labels)
        self.overhead = metrics.overhead.series(*labels)
        self.upstream = LazyHistograms(metrics.upstream_duration, labels)
        self.ttft = LazyHistograms(metrics.time_to_first_token, labels)
        self.tokens = metrics.tokens.under(*labels)
        self.responses = metrics.responses.under(*labels)
        self.tool_calls = metrics.tool_calls.under(*labels)
        self.argument_errors = metrics.tool_argument_errors.under(*labels)
        self.rewrites = metrics.rewrites.under(*labels)
        self.bytes_removed = metrics.tool_schema_bytes_removed.under(*labels)


class Metrics:
    """The proxy's Prometheus metrics (see the module docstring for each one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._series: dict[tuple[str, str], _VariantSeries] = {}
        self._rendered, self._rendered_at = b"", -math.inf
        self._families: list[Family] = []
        self._define_request_metrics()
        self._define_api_metrics()
        self._define_answer_metrics()
        self._define_operation_metrics()
        self.registry.register(Collector(self._families))
        # Registered after the collector, so it is still exported last.
        self.in_flight = Gauge(
            f"{PREFIX}in_flight_requests", "Requests being served now.", registry=self.registry
        )
        # Counted from the trace exporter's thread too: prometheus_client's Counter, which
        # takes a lock (see `proxy.exposition`).
        self.trace_spans_dropped = Counter(
            f"{PREFIX}trace_spans_dropped",
            "Spans never exported to the trace collector, by reason.",
            ("reason",),
            registry=self.registry,
        )
        for reason in SPAN_DROP_REASONS:
            self.trace_spans_dropped.labels(reason)  # each series exists from the start, at 0

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

    def _define_api_metrics(self) -> None:
        self.api_requests = self._counter(
            "api_requests", "Requests by the API the client spoke (chat, responses).", ("api",)
        ).under()

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
        # Off the request path, but kept in the same form: keyed by their whole label tuple.
        self.fallbacks = self._counter(
            "fallbacks", "Failed attempts followed by another target.", ("route", "reason")
        ).under()
        self.upstream_errors = self._counter(
            "upstream_errors", "Failed upstream attempts.", ("upstream", "reason")
        ).under()
        self.shadow_requests = self._counter(
            "shadow_requests", "Shadow copies by outcome.", ("route", "outcome")
        ).under()
        self.config_reloads = self._counter(
            "config_reloads", "Config reloads.", ("result",)
        ).under()
        self.capture_examples = self._counter(
            "capture_examples", "Captured exchanges by outcome.", ("route", "outcome")
        ).under()
        self.shadow_agreement = self._counter(
            "shadow_agreement",
            "Shadow answers' tool calls compared with the served answer's.",
            ("route", "outcome"),
        ).under()

    def _counter(self, name: str, documentation: str, labels: tuple[str, ...]) -> CounterFamily:
        family = CounterFamily(f"{PREFIX}{name}", documentation, labels)
        self._families.append(family)
        return family

    def _histogram(
        self, name: str, documentation: str, labels: tuple[str, ...], buckets: tuple[float, ...]
    ) -> HistogramFamily:
        family = HistogramFamily(f"{PREFIX}{name}", documentation, labels, buckets)
        self._families.append(family)
        return family

    # ------------------------------------------------------------------------- observing

    def observe_request(self, record: RequestRecord, *, total_seconds: float | None = None) -> None:
        """Count everything one finished request did.

        `total_seconds` defaults to the record's elapsed time; tests pin it.
        """
        total = record.elapsed() if total_seconds is None else total_seconds
        series = self._series_of(record.route or NOT_ROUTED, record.variant or NOT_ROUTED)
        series.requests[record.status] += 1
        api = record.api
        if api is not None:
            self.api_requests[api] += 1
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
        last = len(attempts) - 1
        for position, attempt in enumerate(attempts):
            followed = position < last
            if attempt.reason is None and attempt.error is None and not followed:
                continue  # it answered
            reason = attempt.reason or UNKNOWN_REASON
            self.upstream_errors[(attempt.upstream, reason)] += 1
            if followed:
                self.fallbacks[(route, reason)] += 1

    def observe_shadow(self, route: str, outcome: str) -> None:
        self.shadow_requests[(route, outcome)] += 1

    def observe_capture(self, route: str, outcome: str) -> None:
        self.capture_examples[(route, outcome)] += 1

    def observe_agreement(self, route: str, outcome: str) -> None:
        self.shadow_agreement[(route, outcome)] += 1

    def observe_reload(self, result: str) -> None:
        self.config_reloads[result] += 1

    def count_dropped_spans(self, reason: str, count: int) -> None:
        """Spans the tracing dropped (`proxy.tracing`); safe from any thread."""
        self.trace_spans_dropped.labels(reason).inc(count)

    def render(self) -> tuple[bytes, str]:
        """The body and content type of `GET /metrics` (Prometheus text format), as of now."""
        return generate_latest(self.registry), TEXT_FORMAT

    def render_for_scrape(self, reuse_s: float) -> tuple[bytes, str]:
        """`render()`, reused for `reuse_s` seconds (`server.metrics_cache_s`): a rendering
        takes milliseconds of the event loop, and scrapers at once (or one scraping in a loop)
        must not take them from the requests."""
        now = time.monotonic()
        if now - self._rendered_at >= reuse_s:
            self._rendered = self.render()[0]
            self._rendered_at = now
        return self._rendered, TEXT_FORMAT


def _observe_answer(series: _VariantSeries, record: RequestRecord) -> None:
    """What the rewrite and the answer of a request that reached a variant report."""
    if record.usage:
        _observe_usage(series.tokens, record.usage)
    for reason in record.finish_reasons:
        series.responses[reason if reason in FINISH_REASONS else OTHER] += 1
    known = record.policy_functions
    for function in record.tool_calls:
        series.tool_calls[function if function in known else OTHER] += 1
    for function, kind in record.argument_errors:
        label = function if function in known else OTHER
        series.argument_errors[(label, kind if kind in ARGUMENT_ERROR_KINDS else OTHER)] += 1
    removed = 0
    for change in record.changes:
        series.rewrites[change.action if change.action in REWRITE_ACTIONS else OTHER] += 1
        removed += change.bytes_removed
    # Counted even when 0, so "bytes removed per request" is defined for every variant.
    series.bytes_removed[()] += removed if removed > 0 else 0


def _observe_usage(tokens: Counts, usage: dict[str, Any]) -> None:
    prompt = token_count(usage.get("prompt_tokens"))
    if prompt is not None:
        tokens["prompt"] += prompt
    completion = token_count(usage.get("completion_tokens"))
    if completion is not None:
        tokens["completion"] += completion
    details = usage.get("prompt_tokens_details")
    # `usage` is parsed JSON, so an object is a dict (an ABC check costs several times more).
    if isinstance(details, dict):
        cached = token_count(details.get("cached_tokens"))
        if cached is not None:
            tokens["cached"] += cached
