"""What a rewrite returns: the new body and a report of every action it took."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

Body = dict[str, Any]

# The action vocabulary, bounded so that it can label metrics (`rewrites_total{action}`).
TOOL_DRIFT_UNDONE = "tool_drift_undone"
TOOL_SLIMMED = "tool_slimmed"
TOOL_OMITTED = "tool_omitted"
TOOL_DROPPED_UNKNOWN = "tool_dropped_unknown"
TOOL_UNKNOWN_PASSED = "tool_unknown_passed"
TOOLS_EMPTIED = "tools_emptied"
SYSTEM_PROMPT_REPLACED = "system_prompt_replaced"
SYSTEM_PROMPT_PREPENDED = "system_prompt_prepended"
SYSTEM_PROMPT_INSERTED = "system_prompt_inserted"
PARALLEL_TOOL_CALLS_SET = "parallel_tool_calls_set"
TOOL_CHOICE_FORCED = "tool_choice_forced"
LOGIT_BIAS_APPLIED = "logit_bias_applied"
LOGIT_BIAS_SKIPPED = "logit_bias_skipped"
LOGIT_BIAS_UNSUPPORTED = "logit_bias_unsupported"
LOGIT_BIAS_PENDING = "logit_bias_pending"
TOOL_CHOICE_EMULATED = "tool_choice_emulated"
TOOL_CHOICE_REQUIRED_UNSUPPORTED = "tool_choice_required_unsupported"
PARALLEL_TOOL_CALLS_UNSUPPORTED = "parallel_tool_calls_unsupported"
STRICT_UNSUPPORTED = "strict_unsupported"
SAMPLING_DROPPED = "sampling_dropped"
LEGACY_FUNCTIONS_TRANSLATED = "legacy_functions_translated"

ACTIONS: tuple[str, ...] = (
    TOOL_DRIFT_UNDONE,
    TOOL_SLIMMED,
    TOOL_OMITTED,
    TOOL_DROPPED_UNKNOWN,
    TOOL_UNKNOWN_PASSED,
    TOOLS_EMPTIED,
    SYSTEM_PROMPT_REPLACED,
    SYSTEM_PROMPT_PREPENDED,
    SYSTEM_PROMPT_INSERTED,
    PARALLEL_TOOL_CALLS_SET,
    TOOL_CHOICE_FORCED,
    LOGIT_BIAS_APPLIED,
    LOGIT_BIAS_SKIPPED,
    LOGIT_BIAS_UNSUPPORTED,
    LOGIT_BIAS_PENDING,
    SAMPLING_DROPPED,
    TOOL_CHOICE_EMULATED,
    TOOL_CHOICE_REQUIRED_UNSUPPORTED,
    PARALLEL_TOOL_CALLS_UNSUPPORTED,
    STRICT_UNSUPPORTED,
    LEGACY_FUNCTIONS_TRANSLATED,
)


# The actions that insert a message: their `detail` names where (`messages[N]`), so that an
# upstream's error naming a later message can be told in the client's numbering.
MESSAGE_INSERTED = frozenset({SYSTEM_PROMPT_INSERTED, SYSTEM_PROMPT_PREPENDED})
_MESSAGE_PARAM = re.compile(r"^messages\[(\d+)\]$")


def message_param(index: int) -> str:
    return f"messages[{index}]"


def inserted_message(changes: list[Change]) -> int | None:
    """Where the rewrite inserted a message into `messages`, if it did."""
    for change in changes:
        if change.action in MESSAGE_INSERTED:
            match = _MESSAGE_PARAM.match(change.detail)
            if match is not None:
                return int(match[1])
    return None


@dataclass(frozen=True, slots=True)
class Change:
    """One action of the rewrite.

    `action` is one of `ACTIONS`; `detail` says what it touched (a function name, a value);
    `bytes_removed` counts the tool-schema JSON bytes (orjson-serialised) it saved.
    """

    action: str
    detail: str = ""
    bytes_removed: int = 0


@dataclass
class RewriteResult:
    """The rewritten request and the report of how it was rewritten.

    `body` is always a new top-level dict, so the caller may set `model` on it; the values
    inside are shared with the client's body and with the policy's prepared definitions
    (copy-on-write), so nothing below the top level may be mutated.
    """

    body: Body
    changes: list[Change] = field(default_factory=list)
    # True when legacy functions/function_call were translated: the answer must go back
    # in the legacy shape (see `proxy.rewrite.legacy`).
    legacy_functions: bool = False

    @property
    def tool_bytes_removed(self) -> int:
        return sum(change.bytes_removed for change in self.changes)
