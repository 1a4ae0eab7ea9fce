"""The rewrite stage: the client's body as one target must receive it.

The target's policy rewrites it (the pure engine, `proxy.rewrite`), its model replaces the
client's, and a stream is asked for its usage so that it can be counted. A fallback or a
shadow target starts again from the client's original body with its own policy.

A Responses API body goes to an upstream that speaks it as it is (`responses: native`,
rewritten in its own shape), or is translated to chat completions first (`responses: bridge`,
`proxy.bridge`) and rewritten as chat is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.bridge import responses_to_chat
from proxy.config import Target
from proxy.rewrite import Change, rewrite, rewrite_responses


@dataclass(slots=True)
class Outgoing:
    """One target's request: its body, what the rewrite changed, and what the answer needs."""

    body: dict[str, Any]
    changes: list[Change]
    # Legacy functions were translated: the answer goes back in the legacy shape.
    legacy_functions: bool
    # The stream's usage chunk was asked for by the proxy, not the client: it is removed.
    strip_usage: bool
    # The upstream endpoint the body is for: `chat` (completions) or `responses`.
    api: str = "chat"
    # The client's Responses body, when it was translated to chat for this target: the answer
    # is translated back against it.
    bridged_from: dict[str, Any] | None = None

    @property
    def tool_bytes_removed(self) -> int:
        return sum(change.bytes_removed for change in self.changes)


# The rewrite stage of one API: a target and the client's body in, its request out.
Prepare = Callable[[Target, dict[str, Any]], Outgoing]


def outgoing_request(target: Target, body: dict[str, Any]) -> Outgoing:
    """`body` rewritten by the target's policy, for its model (`body` is left untouched)."""
    result = rewrite(body, target.policy)
    result.body["model"] = target.model
    strip_usage = target.policy.capabilities.stream_usage and ask_for_stream_usage(result.body)
    return Outgoing(result.body, result.changes, result.legacy_functions, strip_usage)


def outgoing_responses_request(target: Target, body: dict[str, Any]) -> Outgoing:
    """A Responses API body as `target` must receive it: in its own shape where the upstream
    speaks the Responses API, else translated to chat completions (a 400 for what the
    translation cannot carry) and rewritten as chat is."""
    if target.upstream.responses_mode == "bridge":
        bridged = outgoing_request(target, responses_to_chat(body))
        bridged.bridged_from = body
        return bridged
    result = rewrite_responses(body, target.policy)
    result.body["model"] = target.model
    return Outgoing(result.body, result.changes, False, False, api="responses")


def ask_for_stream_usage(body: dict[str, Any]) -> bool:
    """Make a stream report its usage so it can be counted.

    Returns True when the client did not ask for it: its usage chunk is removed again.
    `body` is the rewritten copy (its top level is ours to change, nested objects are not).
    """
    if body.get("stream") is not True:
        return False
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return False
    body["stream_options"] = {
        **(options if isinstance(options, dict) else {}),
        "include_usage": True,
    }
    return True
