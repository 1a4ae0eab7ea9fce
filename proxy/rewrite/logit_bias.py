"""The logit_bias step, and what it does to the sampling parameters that blur a bias."""

from __future__ import annotations

from typing import Any

from proxy.rewrite.fields import has_tools, invalid_type
from proxy.rewrite.policy import MAX_LOGIT_BIAS_TOKENS, LogitBiasSpec, Policy
from proxy.rewrite.result import (
    LOGIT_BIAS_APPLIED,
    LOGIT_BIAS_PENDING,
    LOGIT_BIAS_SKIPPED,
    LOGIT_BIAS_UNSUPPORTED,
    SAMPLING_DROPPED,
    Body,
    Change,
)
from proxy.rewrite.schema import without

_SAMPLING = ("temperature", "top_p")


def apply_logit_bias(body: Body, policy: Policy, changes: list[Change]) -> Body:
    """Runs when the policy has `logit_bias` and its `when` holds for the rewritten request.

    Merges the policy's tokens into the client's `logit_bias` (the client's value wins per
    token); with `sampling: drop` removes `temperature` and `top_p`, with `skip_bias` adds
    nothing while either is set.
    """
    bias = policy.spec.logit_bias
    if not policy.capabilities.logit_bias:
        return _without_unsupported_bias(body, bias, changes)
    if bias is None or not _wanted(body, bias):
        return body
    tokens = policy.bias_tokens
    if tokens is None:  # its texts are not resolved to token ids yet: nothing to apply
        changes.append(Change(LOGIT_BIAS_PENDING))
        return body
    if bias.sampling == "skip_bias" and any(body.get(key) is not None for key in _SAMPLING):
        changes.append(Change(LOGIT_BIAS_SKIPPED, "sampling"))
        return body
    client = _client_bias(body)
    merged = {**client, **{k: v for k, v in tokens.items() if k not in client}}
    if len(merged) > MAX_LOGIT_BIAS_TOKENS:
        changes.append(Change(LOGIT_BIAS_SKIPPED, "too_many_tokens"))
        return body
    if len(merged) > len(client):
        changes.append(Change(LOGIT_BIAS_APPLIED, str(len(merged) - len(client))))
        body = {**body, "logit_bias": merged}
    if bias.sampling == "drop":
        body = _drop_sampling(body, changes)
    return body


def _without_unsupported_bias(
    body: Body, bias: LogitBiasSpec | None, changes: list[Change]
) -> Body:
    """The upstream ignores `logit_bias`: the client's is removed, the policy's not added,
    and nothing else changes (a bias not applied needs no sampling rule). Counted when there
    was a bias to lose."""
    wanted = bias is not None and _wanted(body, bias)
    if "logit_bias" not in body and not wanted:
        return body
    changes.append(Change(LOGIT_BIAS_UNSUPPORTED))
    return without(body, ("logit_bias",))


def skip_unsupported_logit_bias(body: Body, policy: Policy, changes: list[Change]) -> Body:
    """Runs where the request cannot carry `logit_bias` (the Responses API has none) and the
    policy's bias would have applied: nothing is changed, the lost lever is counted."""
    bias = policy.spec.logit_bias
    if bias is not None and _wanted(body, bias):
        changes.append(Change(LOGIT_BIAS_UNSUPPORTED))
    return body


def _wanted(body: Body, bias: LogitBiasSpec) -> bool:
    if bias.when == "always":
        return True
    # tools_auto: only where the model chooses between text and a tool call
    return body.get("tool_choice") in (None, "auto") and has_tools(body)


def _client_bias(body: Body) -> dict[str, Any]:
    client = body.get("logit_bias")
    if client is None:
        return {}
    if not isinstance(client, dict):
        raise invalid_type("logit_bias", "an object", client)
    return client


def _drop_sampling(body: Body, changes: list[Change]) -> Body:
    present = [key for key in _SAMPLING if key in body]
    if present:
        changes.append(Change(SAMPLING_DROPPED, ",".join(present)))
    return without(body, present)
