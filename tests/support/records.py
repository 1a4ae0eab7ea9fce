"""Request records as the pipeline's stages fill them, to feed the metrics without a server."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from proxy.record import Attempt, RequestRecord
from proxy.rewrite import Change

ROUTE = "support-agent"
VARIANT = "ft-slim"
AT_VARIANT = {"route": ROUTE, "variant": VARIANT}
TRAINED = frozenset({"lookup_order", "refund_order"})


def routed_record(**fields: Any) -> RequestRecord:
    """A request that reached the variant and got a 200; `fields` override."""
    record = RequestRecord(
        request_id="req_test",
        path="/v1/chat/completions",
        api="chat",  # as the middleware sets it for the chat route
        route=ROUTE,
        variant=VARIANT,
        upstream="azure-east",
        status=200,
        attempts=[Attempt(target=VARIANT, upstream="azure-east", status=200)],
        upstream_seconds=1.5,
        policy_functions=TRAINED,
    )
    return replace(record, **fields)


def full_record() -> RequestRecord:
    """A streamed request that used every part of the record (the metrics and dashboard tests)."""
    return routed_record(
        stream=True,
        first_byte_seconds=0.25,
        usage={
            "prompt_tokens": 120,
            "completion_tokens": 30,
            "prompt_tokens_details": {"cached_tokens": 64},
        },
        finish_reasons=["tool_calls"],
        tool_calls=["lookup_order"],
        argument_errors=[("lookup_order", "schema")],
        changes=[Change("tool_drift_undone"), Change("tool_slimmed", "lookup_order", 300)],
        attempts=[
            Attempt(target=VARIANT, upstream="azure-east", status=503, reason="status_5xx"),
            Attempt(target="fallback-1", upstream="openai", status=200),
        ],
    )
