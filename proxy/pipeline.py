"""The request pipeline of the model APIs, around the stages a handler calls in order:

    read → admit → parse → route → rewrite → forward → relay   (the handler's `serve`)
    hand over → record                                         (here, whatever the outcome)

A failure anywhere in `serve` becomes its OpenAI error answer; the answer is handed over before
the bookkeeping, and the record stage runs once, also for a client that went away. With tracing
on, the request's span starts here and ends at the record stage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.errors import ProxyError
from proxy.record import RequestRecord
from proxy.recording import record_abandoned, record_request
from proxy.replies import error_response, hand_over
from proxy.state import RECORD, STATE, ProxyState

Serve = Callable[[web.Request, ProxyState, RequestRecord], Awaitable[web.StreamResponse]]


async def run_pipeline(request: web.Request, serve: Serve) -> web.StreamResponse:
    """`serve` the request, hand its answer (or its error) over, and record it."""
    state, record = request.app[STATE], request[RECORD]
    tracing = state.tracing
    if tracing is not None:  # off, tracing costs a request this check and a few like it
        record.trace = tracing.start_request(request.headers, record.request_id)
    try:
        try:
            response = await serve(request, state, record)
        except ProxyError as exc:
            record.error = exc.message
            response = error_response(exc, record.request_id)
        await hand_over(request, response, record)
    except asyncio.CancelledError:
        record_abandoned(state, record)
        raise
    record_request(state, record)
    return response
