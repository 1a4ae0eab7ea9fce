"""Shadow traffic: a sampled copy of a request sent to a route's shadow target on the side.

The copy is rewritten with the shadow target's own policy from the client's original body,
runs as its own task alongside the primary, and never delays or changes the client's answer.
Work is bounded: past `max_in_flight` concurrent copies a new copy is dropped (and counted),
never queued. Each copy's outcome is logged with the primary's request id, so the two answers
can be compared.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from proxy import jsonutil
from proxy.agreement import Comparison
from proxy.config import Route, Target
from proxy.errors import ProxyError
from proxy.observe import (
    AnswerNotObject,
    note_chunk_data,
    note_response_event,
    observe_completion_json,
    observe_noted_chunks,
    observe_response_events,
    observe_response_json,
)
from proxy.outgoing import Prepare, outgoing_request
from proxy.record import RequestRecord
from proxy.sse import DONE, EventSplitter, event_data, is_error_event
from proxy.tracing_attributes import shadow_attributes
from proxy.upstream import Upstreams

if TYPE_CHECKING:
    from proxy.tracing import RequestTrace

logger = structlog.get_logger("tuned_proxy.shadow")
MAX_SHADOW_ANSWER_BYTES = 16 * 1024 * 1024


class ShadowSender:
    """Starts and tracks shadow copies; `close()` cancels the ones still running."""

    def __init__(
        self,
        upstreams: Upstreams,
        max_in_flight: int = 32,
        rng: Callable[[], float] = random.random,
        on_outcome: Callable[[str, str], None] | None = None,
        on_agreement: Callable[[str, str], None] | None = None,
    ):
        self.upstreams = upstreams
        self.max_in_flight = max_in_flight
        self.rng = rng
        self.on_outcome = on_outcome
        self.on_agreement = on_agreement
        self.tasks: set[asyncio.Task[None]] = set()
        self.outcomes: Counter[tuple[str, str]] = Counter()

    def maybe_send(
        self,
        route: Route,
        body: dict[str, Any],
        request_id: str,
        prepare: Prepare = outgoing_request,
        trace: RequestTrace | None = None,
    ) -> Comparison | None:
        """Send a copy when the route's shadow samples this request (with tracing on, in a
        span linked to the request's `trace`); the comparison the served answer is to join,
        when the shadow compares."""
        shadow = route.shadow
        if shadow is None or self.rng() >= shadow.sample:
            return None
        if len(self.tasks) >= self.max_in_flight:
            self._count(route.name, "dropped")
            return None
        comparison = None
        if shadow.compare is not None and self.on_agreement is not None:
            comparison = Comparison(route.name, self.on_agreement)
        task = asyncio.create_task(
            self._run(route.name, shadow, body, request_id, prepare, comparison, trace)
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return comparison

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def _count(self, route: str, outcome: str) -> None:
        self.outcomes[(route, outcome)] += 1
        if self.on_outcome is not None:
            self.on_outcome(route, outcome)

    async def _run(
        self,
        route: str,
        target: Target,
        body: dict[str, Any],
        request_id: str,
        prepare: Prepare,
        comparison: Comparison | None = None,
        trace: RequestTrace | None = None,
    ) -> None:
        record = RequestRecord(request_id=request_id, path="shadow")
        record.keeps_arguments = comparison is not None
        outcome = "error"
        whole = False  # the answer came whole: something to compare
        span = None
        rewrite: list[str] = []
        try:
            outgoing = prepare(target, body)
            span = None if trace is None else trace.shadow(target, outgoing.api)
            # What the shadow's policy and upstream changed (a lever emulated or removed on the
            # server being tried), in the vocabulary of the request line's `rewrite`.
            rewrite = sorted({change.action for change in outgoing.changes})
            answer = await self.upstreams.send(
                target,
                outgoing.body,
                f"{request_id}-shadow",
                outgoing.api,
                None if span is None else span.headers,
            )
            try:
                record.status = answer.status
                raw = await answer.read(MAX_SHADOW_ANSWER_BYTES)
            finally:
                await answer.close()
            if answer.status < 400:
                streamed = outgoing.body.get("stream") is True
                whole = _observe_answer(record, raw, streamed, outgoing.api)
                outcome = "ok"
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except ProxyError as exc:
            record.error = exc.message
            outcome = "timeout" if exc.status == 504 else "error"
        except Exception:  # a shadow must never take the proxy down; say what broke
            logger.exception("shadow failed", request_id=request_id, route=route)
        finally:
            self._count(route, outcome)
            if comparison is not None and outcome != "cancelled":
                comparison.shadow_answer(record if whole else None)
            if span is not None:
                span.finish(shadow_attributes(record, route, outcome))
            logger.info(
                "shadow",
                request_id=request_id,
                route=route,
                target=target.name,
                upstream=target.upstream_name,
                outcome=outcome,
                status=record.status,
                duration_ms=round(record.elapsed() * 1000, 3),
                tool_calls=record.tool_calls,
                finish_reasons=record.finish_reasons,
                prompt_tokens=(record.usage or {}).get("prompt_tokens"),
                rewrite=rewrite,
                error=record.error,
            )


def _observe_answer(record: RequestRecord, raw: bytes, streamed: bool, api: str) -> bool:
    """Read the shadow's answer for the comparison (a whole body: nothing waits on it), in
    the wire format of the API it was sent to; whether it came whole (JSON that parses, or a
    stream that reached its end without an error event), and so can be compared."""
    responses = api == "responses"
    if not streamed:
        try:
            (observe_response_json if responses else observe_completion_json)(record, raw)
        except (jsonutil.JSONDecodeError, AnswerNotObject):
            return False
        return True
    ended = False
    for event in EventSplitter(max_event_bytes=len(raw) + 1).feed(raw + b"\n\n"):
        data = event_data(event)
        if data is None:
            continue
        if responses:
            ended = note_response_event(record, data) or ended
        elif data.startswith(DONE):
            ended = True
        elif is_error_event(data):
            return False
        else:
            note_chunk_data(record, data)
    (observe_response_events if responses else observe_noted_chunks)(record)
    return ended and "failed" not in record.finish_reasons  # a Response that failed is none
