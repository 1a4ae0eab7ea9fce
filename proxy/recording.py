"""The record stage: once a request's answer is handed over, read what the answer said, check
its tool calls' arguments, end its spans (tracing on), count it and write its log line. Exactly
once per request.

`record_unparsed` does the same for a request aiohttp's parser refused, which never reaches
the app.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from proxy.arguments import ArgumentChecker, full_schema_key_for
from proxy.errors import ProxyError
from proxy.observe import observe_noted_chunks, observe_response_events
from proxy.record import RequestRecord, log_request
from proxy.rewrite.policy import Policy
from proxy.state import STATE, ProxyState
from proxy.tracing_attributes import finish_trace

CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request the client abandoned


def record_request(state: ProxyState, record: RequestRecord) -> None:
    """Read the noted stream chunks, check answered arguments, count, and write the log line
    (a second call for the same request does nothing)."""
    if record.recorded:
        return
    record.recorded = True
    if record.answer_api == "responses":
        observe_response_events(record)
    else:
        observe_noted_chunks(record)
    if record.argument_check is not None:
        check_arguments(state.arguments, record, *record.argument_check)
    if record.trace is not None:
        finish_trace(record)
    if record.comparison is not None:
        record.comparison.served_answer(record)
    state.metrics.observe_request(record)
    log_request(record, state.request_lines)
    if record.capture is not None:
        state.capture.submit(record)


def record_abandoned(state: ProxyState, record: RequestRecord) -> None:
    """The client went away (aiohttp cancels its handler): still count and log it. A client
    that closes once a stream's last event reached it was answered: the synchronous `openai`
    SDK closes at `[DONE]`, while the proxy may still be reading the upstream's body to its end."""
    record.client_disconnected = not record.stream_delivered
    record.status = record.status or CLIENT_CLOSED_REQUEST
    record_request(state, record)


def record_unparsed(app: web.Application, error: ProxyError) -> str:
    """Count and log a request aiohttp could not parse, which never reaches the middlewares.

    Returns the request id given to it.
    """
    state = app.get(STATE)  # None: a plain app (the mock upstream) run by the same runner
    request_id = state.new_request_id() if state is not None else f"req_{uuid.uuid4().hex}"
    record = RequestRecord(request_id=request_id, path="")
    record.status, record.error = error.status, error.message
    if state is not None:
        state.metrics.observe_request(record)
    log_request(record, state.request_lines if state is not None else None)
    return record.request_id


def check_arguments(
    checker: ArgumentChecker, record: RequestRecord, policy: Policy, request_tools: Any
) -> None:
    """Count answered calls whose arguments break the full schema (the answer is unchanged)."""
    for function, arguments in record.answered_arguments():
        key = full_schema_key_for(policy, request_tools, function)
        kind = checker.check_against(arguments, key)
        if kind is not None:
            record.argument_errors.append((function, kind))
