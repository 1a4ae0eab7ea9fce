"""The forward stage: the request to the chosen variant, then down the route's fallbacks.

Each target gets the client's body rewritten by its own policy (`outgoing_request`); the first
answer that is not a failure worth another target is the one relayed. A client error (a 4xx
other than 408/429) is never retried: another deployment would refuse it the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from proxy.config import Route, Target
from proxy.errors import UpstreamFailure
from proxy.outgoing import Outgoing, Prepare, outgoing_request
from proxy.record import Attempt, RequestRecord
from proxy.upstream import UpstreamResponse, Upstreams

# Statuses after which the next fallback target is tried (before anything reached the client).
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(slots=True)
class Sent:
    """The attempt that answered: its answer, the request it was sent, its target."""

    answer: UpstreamResponse
    outgoing: Outgoing
    target: Target


async def forward(
    upstreams: Upstreams,
    route: Route,
    first: Target,
    body: dict[str, Any],
    record: RequestRecord,
    prepare: Prepare = outgoing_request,
) -> Sent:
    """Rewrite for (`prepare`: the client's API's rewrite stage) and send to `first`, then to
    each fallback while the failure allows; raise the last target's `ProxyError` when none
    answers."""
    targets = (first, *route.fallback)
    for position, target in enumerate(targets):
        is_last = position == len(targets) - 1
        outgoing = prepare(target, body)
        attempt = begin_attempt(record, target, outgoing, body)
        trace = record.trace  # with tracing on, each attempt is a span the upstream continues
        headers = None if trace is None else trace.attempt(target, outgoing.api)
        started = time.perf_counter()
        try:
            answer = await upstreams.send(
                target, outgoing.body, record.request_id, outgoing.api, headers
            )
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
            return Sent(answer, outgoing, target)
        await answer.close()
    raise AssertionError("unreachable: the last target always returns or raises")


def begin_attempt(
    record: RequestRecord, target: Target, outgoing: Outgoing, body: dict[str, Any]
) -> Attempt:
    """Point the record at the target now being tried (a fallback replaces the previous one)."""
    record.variant, record.upstream, record.changes = (
        target.name,
        target.upstream_name,
        outgoing.changes,
    )
    record.answer_api = outgoing.api
    policy = target.policy
    record.policy_functions = policy.function_names
    record.argument_check = (
        (policy, body.get("tools") or body.get("functions"))
        if policy.spec.validate_arguments
        else None
    )
    record.keeps_arguments = record.argument_check is not None or record.comparison is not None
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
