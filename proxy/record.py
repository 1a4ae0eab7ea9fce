"""The record stage: what one request did, gathered along the way and written once at the end.

Each stage fills its part of a `RequestRecord`; `log_request` turns it into the one structured
log line per request. It never holds message content or credentials: only names, numbers and
the rewrite's action labels.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from proxy import logs
from proxy.capture.pending import PendingCapture
from proxy.errors import MAX_ECHOED_CHARS, echo
from proxy.rewrite import Change
from proxy.rewrite.policy import Policy

if TYPE_CHECKING:  # the tracing module loads the OpenTelemetry SDK: only when tracing is on
    from proxy.tracing import RequestTrace

logger = structlog.get_logger("tuned_proxy.request")


@dataclass(slots=True)
class Attempt:
    """One try at an upstream (a fallback adds more)."""

    target: str
    upstream: str
    status: int | None = None
    error: str | None = None
    # Why this attempt failed, as a bounded label: "connect", "disconnected", "timeout",
    # "auth", "status_408", "status_429", "status_5xx", "invalid_response", "broken_stream",
    # "error_event"; None when it answered.
    reason: str | None = None


class AnswerComparison(Protocol):
    """What waits for the served answer to compare it (`proxy.agreement.Comparison`)."""

    def served_answer(self, record: RequestRecord) -> None: ...


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    path: str
    started: float = field(default_factory=time.perf_counter)
    # The model API the client spoke (`chat`, `responses`), from the route that serves the
    # request; None for every other path (and for a path no route serves).
    api: str | None = None
    route: str | None = None
    variant: str | None = None
    upstream: str | None = None
    stream: bool = False
    answer_api: str = "chat"  # the upstream's answer's wire format (a bridge answers chat)
    status: int = 0
    changes: list[Change] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    upstream_seconds: float = 0.0
    first_byte_seconds: float | None = None
    ended: float | None = None  # perf_counter() when a whole JSON answer was handed over
    usage: dict[str, Any] | None = None
    finish_reasons: list[str] = field(default_factory=list)
    tool_calls: list[str] = field(default_factory=list)
    response_model: str | None = None  # the model the answer says answered, when it says
    error: str | None = None
    client_disconnected: bool = False
    # A stream's last event (`[DONE]`, `response.completed`) went out to the client: the client
    # has its whole answer, even if it closes before the body's end (the sync `openai` SDK does).
    stream_delivered: bool = False
    # Function names the serving policy was trained on: metric labels stay within them.
    policy_functions: frozenset[str] = frozenset()
    # (function, kind) for each answered tool call whose arguments failed the full schema;
    # kind is "json" (not valid JSON) or "schema" (valid JSON that breaks the schema).
    argument_errors: list[tuple[str, str]] = field(default_factory=list)
    # Set when the serving policy checks tool-call arguments: the policy and the client's
    # original tools, where each answered call's full schema is looked up at the end.
    argument_check: tuple[Policy, Any] | None = None
    # Whether answered calls' arguments are kept: to check them, or to compare them with a
    # shadow's (set with the attempt, read per stream chunk).
    keeps_arguments: bool = False
    # The comparison with a shadow's answer, when the route's shadow compares and was sent.
    comparison: AnswerComparison | None = None
    # Answered calls' (function, arguments); streams join their fragments by index (None
    # for an index sent as null).
    call_arguments: list[tuple[str, str]] = field(default_factory=list)
    streamed_calls: dict[int | None, tuple[str, list[str]]] = field(default_factory=dict)
    # Stream chunks that report something counted, read at the record stage (see observe.py).
    noted_chunks: list[bytes] = field(default_factory=list)
    recorded: bool = False  # the record stage has run (it runs once)
    # Set when the route captures this exchange: the answer's bytes are kept for the writer.
    capture: PendingCapture | None = None
    # The request's spans while tracing is on (`proxy.tracing`), ended at the record stage.
    trace: RequestTrace | None = None

    def answered_arguments(self) -> list[tuple[str, str]]:
        streamed = [(name, "".join(parts)) for name, parts in self.streamed_calls.values()]
        return self.call_arguments + streamed

    def elapsed(self) -> float:
        """Seconds from the start to the end of the request: to now, or to `ended` once the
        whole answer was handed to the client (its download is not the proxy's time)."""
        return (self.ended if self.ended is not None else time.perf_counter()) - self.started


def _ms(seconds: float) -> float:
    """Milliseconds to the µs (rounding whole µs: several times cheaper than `round(x, 3)`)."""
    return round(seconds * 1_000_000) / 1000


def _token_counts(usage: dict[str, Any]) -> dict[str, int]:
    """The usage's prompt and completion counts, where the upstream gave them as counts."""
    counts = {}
    for key in ("prompt_tokens", "completion_tokens"):
        value = token_count(usage.get(key))
        if value is not None:
            counts[key] = value
    return counts


def token_count(value: Any) -> int | None:
    """A usage number as the upstream reported it; None when it is absent or not a count.

    Parsed JSON has exact ints; `type(...) is int` also refuses `true`, which is a Python bool.
    """
    return value if type(value) is int and value >= 0 else None


# A log line names at most this many answered calls: an upstream can answer any number.
MAX_LOGGED_CALLS = 64


def logged_names(names: list[str]) -> list[str]:
    """Function names as the log line holds them: each cut to `MAX_ECHOED_CHARS`, at most
    `MAX_LOGGED_CALLS` of them (the answer's names come from the model, so from anyone)."""
    if len(names) <= MAX_LOGGED_CALLS and all(len(name) <= MAX_ECHOED_CHARS for name in names):
        return names
    kept = [echo(name) for name in names[:MAX_LOGGED_CALLS]]
    if len(names) > MAX_LOGGED_CALLS:
        kept.append(f"… ({len(names) - MAX_LOGGED_CALLS} more calls)")
    return kept


def log_request(record: RequestRecord, direct: logs.DirectInfoLines | None = None) -> None:
    """The one log line of a request (fields, never content); written by `direct` where the
    logging set-up gave one (`logs.LoggingSetup.request_lines`), else through structlog."""
    total = record.elapsed()
    upstream = record.upstream_seconds
    fields: dict[str, Any] = {
        "request_id": record.request_id,
        "path": record.path,
        "route": record.route,
        "variant": record.variant,
        "upstream": record.upstream,
        "api": record.api,
        "status": record.status,
        "stream": record.stream,
        "duration_ms": _ms(total),
        "upstream_ms": _ms(upstream),
        "overhead_ms": _ms(max(total - upstream, 0.0)),
    }
    if record.first_byte_seconds is not None:
        fields["ttft_ms"] = _ms(record.first_byte_seconds)
    if record.usage:
        fields["tokens"] = _token_counts(record.usage)
    if record.changes:
        fields["rewrite"] = sorted({change.action for change in record.changes})
        fields["schema_bytes_removed"] = sum(c.bytes_removed for c in record.changes)
    if record.finish_reasons:
        fields["finish_reasons"] = record.finish_reasons
    if record.tool_calls:
        fields["tool_calls"] = logged_names(record.tool_calls)
    if len(record.attempts) > 1 or (record.attempts and record.attempts[0].error):
        fields["attempts"] = [asdict(attempt) for attempt in record.attempts]
    if record.error:
        fields["error"] = record.error
    if record.client_disconnected:
        fields["client_disconnected"] = True
    if record.trace is not None:
        fields["trace_id"] = record.trace.trace_id
    if direct is not None:
        direct.info("request", fields)
    else:
        # One dict, not keyword arguments: see `proxy.logs.spread_fields`.
        logger.info("request", _fields=fields)
