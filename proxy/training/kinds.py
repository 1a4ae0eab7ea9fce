"""The two kinds of fine-tuning example, and where each keeps its conversation.

A chat (supervised) example is a conversation: `{"messages", "tools", "parallel_tool_calls",
"functions"}`. A preference (DPO) example holds the same conversation, the prompt, under
`input`, and the two answers to it beside: `{"input": {...}, "preferred_output": [assistant],
"non_preferred_output": [assistant]}`. The training commands read tools, messages and calls
through `conversation`, so both kinds are read by the same code.
"""

from __future__ import annotations

from typing import Any, Literal

Kind = Literal["chat", "preference"]

OUTPUT_KEYS = ("preferred_output", "non_preferred_output")  # the fine-tuning guide's names
PREFERENCE_KEYS = ("input", *OUTPUT_KEYS)
# One version of the API reference names the outputs otherwise. A line using these names is
# still read as a preference example, so that `training check` can say which name to use.
SPEC_OUTPUT_KEYS = {
    "preferred_completion": "preferred_output",
    "non_preferred_completion": "non_preferred_output",
}
_OUTPUT_MARKS = (*OUTPUT_KEYS, *SPEC_OUTPUT_KEYS)


def kind_of(example: dict[str, Any]) -> Kind:
    """Preference when an output key is there (a missing `input` is then its own error), or
    an `input` without top-level `messages`; a chat example with a stray `input` stays chat
    (its `input` is an unknown key)."""
    if any(key in example for key in _OUTPUT_MARKS):
        return "preference"
    return "preference" if "input" in example and "messages" not in example else "chat"


def conversation(example: dict[str, Any]) -> Any:
    """The part holding messages, tools, parallel_tool_calls and functions, as written.

    The example itself for a chat example; a preference example's `input`, which may be
    missing or not an object.
    """
    return example.get("input") if kind_of(example) == "preference" else example


def path_prefix(kind: Kind) -> str:
    """What goes before `messages`, `tools`, … in a path inside an example of `kind`."""
    return "input." if kind == "preference" else ""
