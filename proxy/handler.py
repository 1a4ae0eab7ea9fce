"""The model API handlers: read → admit → parse → route → rewrite → forward → relay, then
hand over and record (`pipeline.run_pipeline`). Chat completions and the Responses API go
through the same stages; only the parse and rewrite stages differ (`API`).

Each stage is a call into its own module; this file only wires them in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiohttp import web

from proxy.admission import Holding
from proxy.forward import forward
from proxy.outgoing import Prepare, outgoing_request, outgoing_responses_request
from proxy.pipeline import run_pipeline
from proxy.record import RequestRecord
from proxy.relay import relay
from proxy.request import (
    BodyLimits,
    ToolLists,
    parse_chat_body,
    parse_responses_body,
    read_body,
    requested_model,
)
from proxy.routing import find_route, select_variant
from proxy.state import ProxyState


@dataclass(frozen=True)
class API:
    """What differs between the model APIs: how a body is parsed, and rewritten for a target."""

    name: str  # as a capture names the client's body: `chat` or `responses`
    parse: Callable[[bytes, ToolLists, BodyLimits, Holding], dict[str, Any]]
    prepare: Prepare


CHAT = API("chat", parse=parse_chat_body, prepare=outgoing_request)
RESPONSES = API("responses", parse=parse_responses_body, prepare=outgoing_responses_request)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """`POST /v1/chat/completions` and its Azure forms."""
    return await run_pipeline(request, _serve_chat)


async def responses(request: web.Request) -> web.StreamResponse:
    """`POST /v1/responses` and Azure's `/openai/v1/responses`."""
    return await run_pipeline(request, _serve_responses)


async def serve(
    request: web.Request, state: ProxyState, record: RequestRecord, api: API
) -> web.StreamResponse:
    runtime = state.runtime  # a reload during this request does not change what serves it
    limits = runtime.config.server
    with state.bytes_in_flight.holding(limits.max_bytes_in_flight) as held:
        raw = await read_body(request, limits.max_body_bytes, limits.body_timeout_s, held)
        state.admit()  # after the body: a client that sends none takes no slot
        try:
            body = api.parse(raw, state.tool_lists, runtime.body_limits, held)
            model = requested_model(body, request.match_info.get("deployment"))
            route = find_route(runtime, model)
            record.route, record.stream = route.name, body.get("stream") is True
            first = select_variant(route, request.headers, body)
            if route.capture is not None:
                record.capture = state.capture.begin(
                    route.capture, request.headers, body, api.name, len(raw)
                )
            record.comparison = state.shadows.maybe_send(
                route, body, record.request_id, api.prepare, record.trace
            )
            # rewrite → forward, for the variant and then each fallback while it fails
            sent = await forward(state.upstreams, route, first, body, record, api.prepare)
            return await relay(request, sent, record)
        finally:
            state.in_flight -= 1


_serve_chat = partial(serve, api=CHAT)
_serve_responses = partial(serve, api=RESPONSES)
