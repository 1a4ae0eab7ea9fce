"""The tools step's memo: its outcomes for shared tools lists, kept per policy.

A policy owns one (`Policy.tool_rewrites`); the tools step fills it (`rewrite.tools`).
"""

from __future__ import annotations

from typing import Any

from proxy.cache import BoundedCache, weigh_json_text
from proxy.jsonutil import JsonList
from proxy.rewrite.result import Change

# What one outcome of the tools step is: the tools kept and the changes reported.
Outcome = tuple[list[Any], tuple[Change, ...]]
MemoKey = tuple[bytes, frozenset[str]]  # (the shared list's text, the forced functions)


RewriteMemo = BoundedCache[MemoKey, Outcome]


def new_rewrite_memo() -> RewriteMemo:
    """A policy's memo of tools-step outcomes for shared lists. Applications send few
    distinct lists; the bounds hold against a client that sends a new one every time."""
    return BoundedCache(_outcome_weight, max_entries=256, max_bytes=8 * 1024 * 1024)


def _outcome_weight(key: MemoKey, outcome: Outcome) -> int:
    """The key's text (which the memo keeps alive) and the kept list's own text and values,
    when they are not the request's list itself (then they are the parse stage's to weigh)."""
    kept = outcome[0]
    own = weigh_json_text(kept.json) if type(kept) is JsonList and kept.json is not key[0] else 0
    return len(key[0]) + own
