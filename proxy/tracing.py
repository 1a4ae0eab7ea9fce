"""Traces: OpenTelemetry spans of the model requests, exported to a collector over OTLP/HTTP.

Off unless the config's `tracing.otlp_endpoint` is set, and then free: no provider, no
thread, and this module (with the SDK) is not even imported (`ProxyState.use_tracing`).

On, `Tracing` is one private `TracerProvider` built from the config: never the global one,
so that a reload and a test each build their own without fighting over it. A request gets a
SERVER span continuing the client's W3C `traceparent` (`RequestTrace`), a CLIENT span per
upstream attempt whose `traceparent` goes to the upstream, and a shadow copy a CLIENT span of
its own trace, linked to the request's (`ShadowSpan`). Their attributes are read from the
request's record at the end (`proxy.tracing_attributes`).

Ended spans wait in the SDK's `BatchSpanProcessor`, whose thread encodes and exports them:
nothing on the request path waits for the collector or fails with it. What never reaches the
collector is counted (`tuned_proxy_trace_spans_dropped_total`): `_BoundedBatches` knows how
full the queue is, `_CountingExporter` which batches failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
import yarl
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import (
    Link,
    Span,
    SpanKind,
    StatusCode,
    format_trace_id,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from proxy import __version__
from proxy.config import AzureUpstream, MockUpstream, Target, TracingConfig, UpstreamConfig

logger = structlog.get_logger("tuned_proxy.tracing")

Attributes = Mapping[str, AttributeValue]
# (reason, count): `Metrics.count_dropped_spans`, called from the export thread too.
OnDropped = Callable[[str, int], None]

# The export queue and batch: the SDK's defaults, fixed here so that the queue's bound is known
# to `_BoundedBatches`. The delay between exports, the exporter's timeout, headers and
# certificates follow the SDK's environment variables (OTEL_BSP_SCHEDULE_DELAY,
# OTEL_EXPORTER_OTLP_TRACES_TIMEOUT, OTEL_EXPORTER_OTLP_TRACES_HEADERS, ...).
MAX_QUEUED_SPANS = 2048
MAX_EXPORT_BATCH = 512
# At shutdown (SIGTERM, or a provider a reload replaced), what is queued gets this long to
# reach the collector; what is left then is dropped and counted.
FLUSH_TIMEOUT_S = 5.0
# A provider a reload replaced waits this long at most for the requests it traces to finish.
RETIRE_WAIT_S = 60.0

OPERATION = "chat"  # gen_ai.operation.name: chat completions and Responses alike


class Tracing:
    """One tracer provider, built from the config's `tracing` section, and what its spans
    need: the tracer, a private W3C propagator, the upstreams' addresses."""

    def __init__(self, config: TracingConfig, on_dropped: OnDropped) -> None:
        assert config.otlp_endpoint is not None, "tracing is off: build no provider"
        self.config = config
        # Requests and shadow copies whose spans are not finished: a replaced provider waits
        # for them before it shuts down (`retire`), told by `drained`. On the event loop only.
        self.open = 0
        self.drained: asyncio.Event | None = None
        self._exporter = _CountingExporter(OTLPSpanExporter(config.otlp_endpoint), on_dropped)
        self.provider = TracerProvider(
            sampler=ParentBased(_LinkedOrRatio(config.sample)),
            resource=Resource.create(
                {SERVICE_NAME: config.service_name, SERVICE_VERSION: __version__}
            ),
            shutdown_on_exit=False,  # shut down by the app, with a bounded flush
        )
        self.provider.add_span_processor(_BoundedBatches(self._exporter, on_dropped))
        self.tracer = self.provider.get_tracer("tuned_proxy", __version__)
        self.propagator = TraceContextTextMapPropagator()
        self._addresses: dict[str, tuple[str, int] | None] = {}

    def start_request(self, headers: Mapping[str, str], request_id: str) -> RequestTrace:
        """The SERVER span of a model request: a child of the client's `traceparent` when it
        sent one (its sampled flag decides), else a new trace sampled at `sample`."""
        parent = self.propagator.extract(headers, context=Context())
        span = self.tracer.start_span(
            OPERATION,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"gen_ai.operation.name": OPERATION, "tuned_proxy.request_id": request_id},
        )
        self.open += 1
        return RequestTrace(self, span)

    def closed_one(self) -> None:
        """A request's or shadow copy's spans have all ended."""
        self.open -= 1
        if self.open == 0 and self.drained is not None:
            self.drained.set()

    def client_span(
        self, target: Target, attributes: Attributes, context: Context, links: list[Link]
    ) -> Span:
        """A CLIENT span for a request to `target`'s upstream, with what the GenAI conventions
        want known at its start (`target_attributes`)."""
        return self.tracer.start_span(
            f"{OPERATION} {target.model}",
            context=context,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            links=links,
        )

    def target_attributes(self, target: Target, api: str) -> dict[str, AttributeValue]:
        """Operation, provider, model and server of a request to `target` in `api`, and which
        variant and upstream of the config it is."""
        upstream = target.upstream
        provider = provider_name(upstream)
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": target.model,
            "tuned_proxy.variant": target.name,
            "tuned_proxy.upstream": target.upstream_name,
            "tuned_proxy.upstream.server": upstream.server_name,
        }
        if provider == "openai":  # the conventions' openai.* go with that provider only
            attributes["openai.api.type"] = api_type(api)
        address = self._address(upstream)
        if address is not None:
            attributes["server.address"], attributes["server.port"] = address
        return attributes

    def headers_for(self, span: Span) -> dict[str, str]:
        """`traceparent` (and the client's `tracestate`) naming `span`, for the upstream."""
        headers: dict[str, str] = {}
        self.propagator.inject(headers, context=set_span_in_context(span, Context()))
        return headers

    def shutdown(self, timeout_s: float) -> None:
        """Export what is queued within `timeout_s`, then stop the export thread; batches
        still waiting then are dropped (and counted). Blocks: run it off the event loop
        (`close_tracing`)."""
        self._exporter.deadline = time.monotonic() + timeout_s
        self.provider.shutdown()

    def abort(self) -> None:
        """Stop an export that outlived the flush's time (its retries wait no longer)."""
        self._exporter.abort()

    def _address(self, upstream: UpstreamConfig) -> tuple[str, int] | None:
        """`server.address` and `server.port` of an HTTP upstream (kept per base URL: the
        config's, so bounded by it)."""
        if isinstance(upstream, MockUpstream):
            return None
        base_url = upstream.base_url
        if base_url not in self._addresses:
            url = yarl.URL(base_url)
            host, port = url.host, url.port  # the scheme's port when the URL names none
            self._addresses[base_url] = (host, port) if host and port else None
        return self._addresses[base_url]


def provider_name(upstream: UpstreamConfig) -> str:
    """`gen_ai.provider.name`: `azure.ai.openai` for Azure OpenAI, else `openai` — the
    conventions' name for the OpenAI API's flavour, which compatible servers speak too
    (`server.address` and `tuned_proxy.upstream.server` say which server it is)."""
    return "azure.ai.openai" if isinstance(upstream, AzureUpstream) else "openai"


def api_type(api: str | None) -> str:
    """`openai.api.type` of an API as the proxy names it (`chat`, `responses`)."""
    return "responses" if api == "responses" else "chat_completions"


class RequestTrace:
    """One model request's spans: the SERVER span and a CLIENT span per upstream attempt.

    All of them end at the record stage (`tracing_attributes.finish_trace`), with what the
    record then says; an attempt that failed ends at the time the next one started. A request
    that is not sampled keeps nothing and gets no span per attempt: its own carries the trace
    on to the upstream.
    """

    __slots__ = (
        "_attempts",
        "_carried",
        "_served_by",
        "_span",
        "_tracing",
        "recording",
        "trace_id",
    )

    def __init__(self, tracing: Tracing, span: Span) -> None:
        self._tracing = tracing
        self._span = span
        self._attempts: list[tuple[Span, list[int]]] = []  # (span, [its end in ns] once known)
        self._served_by: Attributes = {}
        self._carried: dict[str, str] | None = None  # an unsampled request's trace headers
        context = span.get_span_context()
        self.trace_id = format_trace_id(context.trace_id)
        self.recording = span.is_recording()

    def attempt(self, target: Target, api: str) -> dict[str, str]:
        """Start the CLIENT span of an attempt at `target` (the one before it failed: it ends
        now) and return the headers that carry it to the upstream."""
        if not self.recording:
            if self._carried is None:
                self._carried = self._tracing.headers_for(self._span)
            return self._carried
        if self._attempts:
            self._attempts[-1][1].append(time.time_ns())
        attributes = self._tracing.target_attributes(target, api)
        parent = set_span_in_context(self._span, Context())
        span = self._tracing.client_span(target, attributes, parent, [])
        self._attempts.append((span, []))
        # What the request's span will say of the target that served it.
        self._served_by = {
            "gen_ai.provider.name": attributes["gen_ai.provider.name"],
            "tuned_proxy.policy": target.policy.name,
        }
        return self._tracing.headers_for(span)

    def shadow(self, target: Target, api: str) -> ShadowSpan | None:
        """The span of this request's shadow copy: a trace of its own, linked to this
        request's span, so that the copy never holds the request's trace open. None when this
        request is not recorded (the copy is not either)."""
        if not self.recording:
            return None
        link = Link(self._span.get_span_context())
        attributes = {
            **self._tracing.target_attributes(target, api),
            "tuned_proxy.policy": target.policy.name,
            "tuned_proxy.shadow": True,
        }
        span = self._tracing.client_span(target, attributes, Context(), [link])
        self._tracing.open += 1
        return ShadowSpan(self._tracing, span)

    def finish(
        self, model: str | None, attributes: Attributes, attempts: Sequence[Attributes]
    ) -> None:
        """End every span: the attempts' with `attempts` (in order), the request's with
        `attributes` and what the target that served it says of itself, named after the
        `model` the client asked for (None: a request refused before it was routed)."""
        for (span, ended), outcome in zip(self._attempts, attempts, strict=False):
            end_span(span, outcome, ended[0] if ended else None)
        self._span.update_name(f"{OPERATION} {model}" if model else OPERATION)
        end_span(self._span, {**self._served_by, **attributes})
        self._tracing.closed_one()

    def finish_unrecorded(self) -> None:
        """End the span of a request that is not sampled (nothing to say: nothing is kept)."""
        self._span.end()
        self._tracing.closed_one()


class ShadowSpan:
    """The CLIENT span of one shadow copy, and the headers that carry it upstream."""

    __slots__ = ("_span", "_tracing", "headers")

    def __init__(self, tracing: Tracing, span: Span) -> None:
        self._tracing = tracing
        self._span = span
        self.headers = tracing.headers_for(span)

    def finish(self, attributes: Attributes) -> None:
        end_span(self._span, attributes)
        self._tracing.closed_one()


def end_span(span: Span, attributes: Attributes, end_ns: int | None = None) -> None:
    """End `span` with `attributes`; its status is an error exactly when they name one."""
    span.set_attributes(attributes)
    if "error.type" in attributes:
        span.set_status(StatusCode.ERROR)
    span.end(end_time=end_ns)


class _LinkedOrRatio(Sampler):
    """The sampler of new traces: one linked to a span (a shadow copy's) is kept when that
    span is, so that a recorded request has its shadow's trace; any other at `ratio`."""

    def __init__(self, ratio: float) -> None:
        self._ratio = TraceIdRatioBased(ratio)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes | None = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if links:
            kept = any(link.context.trace_flags.sampled for link in links)
            if kept:
                return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
            return SamplingResult(Decision.DROP)
        return self._ratio.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"LinkedOrRatio{{{self._ratio.rate}}}"


class _CountingExporter(SpanExporter):
    """The OTLP exporter, counting what it takes and what it fails to deliver.

    `taken` (spans handed over for export) lets `_BoundedBatches` know how many still wait in
    the queue. Runs on the export thread (and the shutdown's), one export at a time.
    """

    def __init__(self, exporter: SpanExporter, on_dropped: OnDropped) -> None:
        self._exporter = exporter
        self._on_dropped = on_dropped
        self.taken = 0
        # After it (a monotonic time, set at shutdown) batches are dropped instead of sent.
        self.deadline = math.inf
        self._aborted = False

    def export(self, spans: Any) -> SpanExportResult:
        count = len(spans)
        self.taken += count
        if time.monotonic() > self.deadline:
            self._on_dropped("shutdown", count)
            return SpanExportResult.FAILURE
        result = SpanExportResult.FAILURE
        try:
            result = self._exporter.export(spans)
        finally:
            if result is not SpanExportResult.SUCCESS:
                self._on_dropped("export_failed", count)
        return result

    def abort(self) -> None:
        if not self._aborted:
            self._aborted = True
            self._exporter.shutdown()

    def shutdown(self) -> None:
        self.abort()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class _BoundedBatches(SpanProcessor):
    """The SDK's `BatchSpanProcessor`, with the spans it would drop counted.

    Its queue drops the oldest span when full, and says so only in a log line. This processor
    hands it a span only while fewer than its capacity wait (queued here minus taken by the
    exporter, never fewer than are really in it), and counts the others as dropped itself.
    `on_end` runs where spans end: on the event loop.
    """

    def __init__(self, exporter: _CountingExporter, on_dropped: OnDropped) -> None:
        self._exporter = exporter
        self._on_dropped = on_dropped
        self._batches = BatchSpanProcessor(
            exporter, max_queue_size=MAX_QUEUED_SPANS, max_export_batch_size=MAX_EXPORT_BATCH
        )
        self._queued = 0
        self._closed = False

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        if self._closed:
            self._on_dropped("shutdown", 1)
        elif self._queued - self._exporter.taken >= MAX_QUEUED_SPANS:
            self._on_dropped("queue_full", 1)
        else:
            self._queued += 1
            self._batches.on_end(span)

    def shutdown(self) -> None:
        if not self._closed:
            self._closed = True
            # The SDK leaves this method unannotated.
            self._batches.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._batches.force_flush(timeout_millis)


async def close_tracing(tracing: Tracing, timeout_s: float = FLUSH_TIMEOUT_S) -> None:
    """Shut `tracing` down off the event loop, waiting `timeout_s` at most: the flush runs on
    a daemon thread of its own, so that neither the loop nor the process's exit waits on a
    collector that does not answer."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def flush() -> None:
        try:
            tracing.shutdown(timeout_s)
        finally:
            # The loop may be gone by then (the thread outlived the wait): nothing to tell.
            if not loop.is_closed():
                loop.call_soon_threadsafe(_settle, done)

    threading.Thread(target=flush, name="tuned-proxy-trace-flush", daemon=True).start()
    try:
        await asyncio.wait_for(asyncio.shield(done), timeout_s)
    except TimeoutError:
        tracing.abort()
        logger.warning("trace export did not finish in time; spans left are dropped")


def _settle(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


async def retire(tracing: Tracing, wait_s: float = RETIRE_WAIT_S) -> None:
    """Shut down a provider a reload replaced, once the requests it traces are finished (or
    `wait_s` passed): in the background, never on a request's path."""
    if tracing.open > 0:
        tracing.drained = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tracing.drained.wait(), wait_s)
    await close_tracing(tracing)
