"""What a request's spans say, read from its record at the record stage: the OpenTelemetry
GenAI semantic conventions' attributes where they fit, the proxy's own under `tuned_proxy.`.

Only what the record holds, which is names and numbers: never message content, tool
arguments or credentials. Names that come from the model's answer (the functions it called,
the model it names, its finish reasons) are cut as the log line cuts them (`logged_names`).
Pure but for `finish_trace`, which hands the attributes to the spans; this module does not
load the OpenTelemetry SDK.
"""

from __future__ import annotations

import structlog

from proxy.errors import echo
from proxy.record import Attempt, RequestRecord, logged_names, token_count

logger = structlog.get_logger("tuned_proxy.tracing")

# An attribute's value, as the OpenTelemetry API takes it.
Value = str | bool | int | float | list[str]
Attributes = dict[str, Value]


def finish_trace(record: RequestRecord) -> None:
    """End the request's spans (when tracing is on) with what its record says."""
    trace = record.trace
    if trace is None:
        return
    try:
        if not trace.recording:
            trace.finish_unrecorded()
            return
        # What the answer said goes on the request's span alone: a backend that sums
        # gen_ai.usage.* over spans counts each request's tokens once.
        attempts = [attempt_attributes(attempt) for attempt in record.attempts]
        # The model the client asked for is the route's name.
        trace.finish(record.route, request_attributes(record), attempts)
    except Exception:  # a span must never cost the request its count and its log line
        logger.exception("trace failed", request_id=record.request_id)


def request_attributes(record: RequestRecord) -> Attributes:
    """The request's SERVER span: what the client asked for, how it was served, what the
    answer said, and the status the client got."""
    attributes: Attributes = {
        "http.response.status_code": record.status,
        "tuned_proxy.stream": record.stream,
        "tuned_proxy.attempts": len(record.attempts),
    }
    if record.route is not None:
        attributes["gen_ai.request.model"] = record.route
        attributes["tuned_proxy.route"] = record.route
    _put(attributes, "tuned_proxy.api", record.api)
    _put(attributes, "tuned_proxy.variant", record.variant)
    _put(attributes, "tuned_proxy.upstream", record.upstream)
    if record.client_disconnected:
        attributes["tuned_proxy.client_disconnected"] = True
    attributes.update(rewrite_attributes(record))
    attributes.update(answer_attributes(record))
    _put(attributes, "error.type", request_error(record))
    return attributes


def request_error(record: RequestRecord) -> str | None:
    """`error.type` of the request: why its last upstream attempt failed (a bounded label:
    `connect`, `timeout`, `status_5xx`, `broken_stream`, ...), else its 5xx status. A 4xx
    the client caused is not the server's error (the HTTP conventions' rule)."""
    last = record.attempts[-1] if record.attempts else None
    if last is not None and last.reason is not None:
        return last.reason
    return str(record.status) if record.status >= 500 else None


def attempt_attributes(attempt: Attempt) -> Attributes:
    """An upstream attempt's CLIENT span: the status it answered with, or why it failed."""
    attributes: Attributes = {}
    _put(attributes, "http.response.status_code", attempt.status)
    _put(attributes, "error.type", attempt_error(attempt))
    return attributes


def attempt_error(attempt: Attempt) -> str | None:
    """`error.type` of an attempt: its failure's label, else its 4xx or 5xx status (an error
    seen from the client's side)."""
    if attempt.reason is not None:
        return attempt.reason
    if attempt.status is not None and attempt.status >= 400:
        return str(attempt.status)
    return None


def answer_attributes(record: RequestRecord) -> Attributes:
    """What the upstream's answer said: the model, tokens, finish reasons, the functions it
    called (names only) and how many calls' arguments broke their schema."""
    attributes: Attributes = {}
    if record.response_model:
        attributes["gen_ai.response.model"] = echo(record.response_model)
    usage = record.usage or {}
    _put(attributes, "gen_ai.usage.input_tokens", token_count(usage.get("prompt_tokens")))
    _put(attributes, "gen_ai.usage.output_tokens", token_count(usage.get("completion_tokens")))
    if record.finish_reasons:
        attributes["gen_ai.response.finish_reasons"] = logged_names(record.finish_reasons)
    if record.tool_calls:
        attributes["tuned_proxy.tool_calls"] = logged_names(record.tool_calls)
    if record.argument_errors:
        attributes["tuned_proxy.tool_argument_errors"] = len(record.argument_errors)
    return attributes


def rewrite_attributes(record: RequestRecord) -> Attributes:
    """What the policy's rewrite did: its actions (a bounded vocabulary) and the tool
    definitions' bytes it removed."""
    if not record.changes:
        return {}
    return {
        "tuned_proxy.rewrite.actions": sorted({change.action for change in record.changes}),
        "tuned_proxy.rewrite.schema_bytes_removed": sum(c.bytes_removed for c in record.changes),
    }


def shadow_attributes(record: RequestRecord, route: str, outcome: str) -> Attributes:
    """A shadow copy's CLIENT span: its route, outcome and status, and what its answer said."""
    attributes: Attributes = {"tuned_proxy.route": route, "tuned_proxy.shadow.outcome": outcome}
    if record.status:
        attributes["http.response.status_code"] = record.status
    if outcome != "ok":
        attributes["error.type"] = outcome  # error, timeout, cancelled
    attributes.update(answer_attributes(record))
    return attributes


def _put(attributes: Attributes, key: str, value: Value | None) -> None:
    if value is not None:
        attributes[key] = value
