"""The chat-completions handler: parse → route → rewrite → forward → relay → record.

Each stage is a call into its own module; this file only wires them in order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from proxy.admission import Holding
from proxy.config import Route, Runtime, Target
from proxy.errors import UpstreamFailure
from proxy.record import Attempt, RequestRecord
from proxy.relay import StreamRelay, ask_for_stream_usage, relay_error, relay_json
from proxy.request import parse_chat_body, read_body, requested_model
from proxy.rewrite import RewriteResult
from proxy.routing import find_route, select_variant
from proxy.state import RECORD, STATE, ProxyState
from proxy.upstream import UpstreamResponse, Upstreams

# Statuses after which the next fallback target is tried (before anything reached the client).
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    runtime = state.runtime  # a reload during this request does not change what serves it
    limits = runtime.config.server
    with state.bytes_in_flight.holding(limits.max_bytes_in_flight) as held:
        raw = await read_body(request, limits.max_body_bytes, limits.body_timeout_s, held)
        state.admit()  # after the body: a client that sends none takes no slot
        try:
            return await serve_chat(request, state, runtime, raw, held)
        finally:
            state.in_flight -= 1


async def serve_chat(
    request: web.Request, state: ProxyState, runtime: Runtime, raw: bytes, held: Holding
) -> web.StreamResponse:
    record = request[RECORD]
    body = parse_chat_body(raw, state.tool_lists, runtime.body_limits, held)
    route = find_route(runtime, requested_model(body, request.match_info.get("deployment")))
    record.route = route.name
    record.stream = body.get("stream") is True
    first = select_variant(route, request.headers, body)
    state.shadows.maybe_send(route, body, record.request_id)
    sent = await forward(state.upstreams, route, first, body, record)
    answer, legacy = sent.answer, sent.result.legacy_functions
    headers = {
        **answer.headers,
        "x-request-id": record.request_id,
        "x-tuned-proxy-route": route.name,
        "x-tuned-proxy-variant": sent.target.name,
    }
    try:
        if answer.status >= 400:
            return await relay_error(answer, headers, record)
        if record.stream and answer.content_type.startswith("text/event-stream"):
            relay = StreamRelay(record, legacy, strip_usage=sent.strip_usage)
            return await relay.run(request, answer, headers)
        return await relay_json(answer, headers, record, legacy)
    finally:
        record.upstream_seconds += answer.wait_seconds
        await answer.close()


@dataclass(slots=True)
class Sent:
    """The attempt that answered: its answer, the rewrite that produced its request, its target."""

    answer: UpstreamResponse
    result: RewriteResult
    target: Target
    strip_usage: bool


async def forward(
    upstreams: Upstreams,
    route: Route,
    first: Target,
    body: dict[str, Any],
    record: RequestRecord,
) -> Sent:
    """Send to the chosen variant, then down the route's fallback list while the failure allows.

    A fallback starts again from the client's body with its own policy. A client error (a 4xx
    other than 408/429) is never retried: another deployment would refuse it the same way.
    """
    targets = (first, *route.fallback)
    for position, target in enumerate(targets):
        is_last = position == len(targets) - 1
        result = target.prepare(body)
        strip_usage = target.upstream.stream_usage and ask_for_stream_usage(result.body)
        attempt = begin_attempt(record, target, result, body)
        started = time.perf_counter()
        try:
            answer = await upstreams.send(target, result.body, record.request_id)
        except UpstreamFailure as exc:
            attempt.error = exc.message
            attempt.reason = exc.reason
            if is_last:
                raise
            continue
        finally:
            record.upstream_seconds += time.perf_counter() - started
        attempt.status = answer.status
        attempt.reason = failure_reason(answer.status)
        if is_last or answer.status not in RETRYABLE_STATUSES:
            return Sent(answer, result, target, strip_usage)
        await answer.close()
    raise AssertionError("unreachable: the last target always returns or raises")


def begin_attempt(
    record: RequestRecord, target: Target, result: RewriteResult, body: dict[str, Any]
) -> Attempt:
    """Point the record at the target now being tried (a fallback replaces the previous one)."""
    record.variant, record.upstream, record.changes = (
        target.name,
        target.upstream_name,
        result.changes,
    )
    policy = target.policy
    record.policy_functions = policy.function_names
    record.argument_check = (
        (policy, body.get("tools") or body.get("functions"))
        if policy.spec.validate_arguments
        else None
    )
    attempt = Attempt(target=target.name, upstream=target.upstream_name)
    record.attempts.append(attempt)
    return attempt


def failure_reason(status: int) -> str | None:
    """A bounded label for an upstream status that counts as the upstream's failure."""
    if status == 429:
        return "status_429"
    if status == 408:
        return "status_408"
    if status in (401, 403):
        return "auth"  # the upstream refused the proxy's own credential
    return "status_5xx" if status >= 500 else None
