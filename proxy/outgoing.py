"""The rewrite stage: the client's body as one target must receive it.

The target's policy rewrites it (the pure engine, `proxy.rewrite`), its model replaces the
client's, and a stream is asked for its usage so that it can be counted. A fallback or a
shadow target starts again from the client's original body with its own policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.config import Target
from proxy.rewrite import Change, rewrite


@dataclass(slots=True)
class Outgoing:
    """One target's request: its body, what the rewrite changed, and what the answer needs."""

    body: dict[str, Any]
    changes: list[Change]
    # Legacy functions were translated: the answer goes back in the legacy shape.
    legacy_functions: bool
    # The stream's usage chunk was asked for by the proxy, not the client: it is removed.
    strip_usage: bool

    @property
    def tool_bytes_removed(self) -> int:
        return sum(change.bytes_removed for change in self.changes)


def outgoing_request(target: Target, body: dict[str, Any]) -> Outgoing:
    """`body` rewritten by the target's policy, for its model (`body` is left untouched)."""
    result = rewrite(body, target.policy)
    result.body["model"] = target.model
    strip_usage = target.upstream.stream_usage and ask_for_stream_usage(result.body)
    return Outgoing(result.body, result.changes, result.legacy_functions, strip_usage)


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
