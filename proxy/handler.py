"""The chat-completions handler: read → admit → parse → route → rewrite → forward → relay,
then hand over and record (`pipeline.run_pipeline`).

Each stage is a call into its own module; this file only wires them in order.
"""

from __future__ import annotations

from aiohttp import web

from proxy.forward import forward
from proxy.pipeline import run_pipeline
from proxy.record import RequestRecord
from proxy.relay import relay
from proxy.request import parse_chat_body, read_body, requested_model
from proxy.routing import find_route, select_variant
from proxy.state import ProxyState


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """`POST /v1/chat/completions` and its Azure forms."""
    return await run_pipeline(request, serve_chat)


async def serve_chat(
    request: web.Request, state: ProxyState, record: RequestRecord
) -> web.StreamResponse:
    runtime = state.runtime  # a reload during this request does not change what serves it
    limits = runtime.config.server
    with state.bytes_in_flight.holding(limits.max_bytes_in_flight) as held:
        raw = await read_body(request, limits.max_body_bytes, limits.body_timeout_s, held)
        state.admit()  # after the body: a client that sends none takes no slot
        try:
            body = parse_chat_body(raw, state.tool_lists, runtime.body_limits, held)
            model = requested_model(body, request.match_info.get("deployment"))
            route = find_route(runtime, model)
            record.route, record.stream = route.name, body.get("stream") is True
            first = select_variant(route, request.headers, body)
            state.shadows.maybe_send(route, body, record.request_id)
            # rewrite → forward, for the variant and then each fallback while it fails
            sent = await forward(state.upstreams, route, first, body, record)
            return await relay(request, sent, record)
        finally:
            state.in_flight -= 1
