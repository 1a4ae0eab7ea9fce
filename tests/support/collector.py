"""An OTLP/HTTP trace receiver on a real port, as a collector is: `POST /v1/traces` with an
`ExportTraceServiceRequest` in protobuf, decoded with `opentelemetry-proto`. It keeps every
payload's raw bytes too, for what must never be in them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

from proxy.server import bound_port

KIND = {
    ProtoSpan.SPAN_KIND_SERVER: "server",
    ProtoSpan.SPAN_KIND_CLIENT: "client",
    ProtoSpan.SPAN_KIND_INTERNAL: "internal",
}


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, its ids as the hex `traceparent` writes them."""

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root
    attributes: dict[str, Any]
    links: list[tuple[str, str]]  # (trace id, span id) of each linked span
    error: bool  # its status is ERROR
    service: str  # its resource's service.name


@dataclass
class Collector:
    """The receiver; `stall` holds every export unanswered until it is set."""

    url: str = ""
    payloads: list[bytes] = field(default_factory=list)
    stall: asyncio.Event | None = None
    runner: web.AppRunner | None = None

    @property
    def spans(self) -> list[ReceivedSpan]:
        return [span for payload in self.payloads for span in decode(payload)]

    def named(self, name: str) -> list[ReceivedSpan]:
        return [span for span in self.spans if span.name == name]

    async def _traces(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        body = await request.read()
        if self.stall is not None:
            await self.stall.wait()
        self.payloads.append(body)
        answer = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=answer, content_type="application/x-protobuf")


async def start_collector(stalled: bool = False) -> Collector:
    """The receiver on a port of its own; the caller cleans up its `runner`."""
    collector = Collector(stall=asyncio.Event() if stalled else None)
    app = web.Application()
    app.router.add_post("/v1/traces", collector._traces)
    collector.runner = web.AppRunner(app, shutdown_timeout=0.5)
    await collector.runner.setup()
    await web.TCPSite(collector.runner, "127.0.0.1", 0).start()
    collector.url = f"http://127.0.0.1:{bound_port(collector.runner)}"
    return collector


def decode(payload: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(payload)
    spans = []
    for resource_spans in request.resource_spans:
        resource = attributes_of(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        name=span.name,
                        kind=KIND.get(span.kind, str(span.kind)),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        attributes=attributes_of(span.attributes),
                        links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                        error=span.status.code == span.status.STATUS_CODE_ERROR,
                        service=str(resource.get("service.name")),
                    )
                )
    return spans


def attributes_of(pairs: Any) -> dict[str, Any]:
    return {pair.key: value_of(pair.value) for pair in pairs}


def value_of(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [value_of(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None
