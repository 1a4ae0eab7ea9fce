"""The rules only a preference (DPO) example has: its top level, its outputs, its input's end.

Its `input` is a conversation, checked by the rules a chat example goes through. What the
fine-tuning guide adds for preference data: one turn only, the preferred and non-preferred
outputs are the last assistant message, and they are text only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from proxy.rewrite.fields import json_type
from proxy.training.example import Example
from proxy.training.findings import Finding, error, warning
from proxy.training.kinds import OUTPUT_KEYS, PREFERENCE_KEYS, SPEC_OUTPUT_KEYS
from proxy.training.rules import MESSAGE_KEYS, Context, shown, where

_CALL_KEYS = frozenset({"tool_calls", "function_call"})
# An output is an assistant message without calls; `weight` is for chat examples' turns.
_OUTPUT_MESSAGE_KEYS = MESSAGE_KEYS["assistant"] - _CALL_KEYS - {"weight"}
_SPEC_NAMES = {guide_name: spec_name for spec_name, guide_name in SPEC_OUTPUT_KEYS.items()}
_OUTPUT_SHAPE = '[{"role": "assistant", "content": "..."}]'


# --- before the view: the top level and the outputs ------------------------------------------


def preference_keys(data: dict[str, Any]) -> Iterator[Finding]:
    """`input` an object, both outputs there and well formed, no other key."""
    for key in data:
        if key in SPEC_OUTPUT_KEYS and SPEC_OUTPUT_KEYS[key] in data:
            yield error(
                f"both `{key}` and `{SPEC_OUTPUT_KEYS[key]}`: the output is given twice",
                f"keep {SPEC_OUTPUT_KEYS[key]} and remove {key}",
            )
        elif key in SPEC_OUTPUT_KEYS:
            yield warning(
                f"`{key}` is the API reference's name; the fine-tuning guide names it "
                f"`{SPEC_OUTPUT_KEYS[key]}`",
                f"rename it to {SPEC_OUTPUT_KEYS[key]}",
            )
        elif key not in PREFERENCE_KEYS:
            yield warning(
                f"unknown key `{key}`",
                "remove it: a preference example holds input, preferred_output and "
                "non_preferred_output",
            )
    conversation = data.get("input")
    if conversation is None:
        yield error(
            "no `input`",
            'add the conversation up to the reply: "input": {"messages": [...], "tools": [...]}',
        )
    elif not isinstance(conversation, dict):
        yield error(
            f"`input` is {json_type(conversation)}, not an object",
            'write it as {"messages": [...], "tools": [...]}',
        )
    for key in OUTPUT_KEYS:
        written = _written_key(data, key)
        yield from _output(written, data.get(written))


def _written_key(data: dict[str, Any], key: str) -> str:
    """`key`, or the API reference's name for it when only that one is in `data`."""
    spec_name = _SPEC_NAMES[key]
    return spec_name if key not in data and spec_name in data else key


def _output(key: str, value: Any) -> Iterator[Finding]:
    """A list holding the one assistant message that replies to the input."""
    if value is None:
        yield error(f"no `{key}`", f"add it: {_OUTPUT_SHAPE}")
    elif not isinstance(value, list):
        yield error(f"`{key}` is {json_type(value)}, not an array", f"write it as {_OUTPUT_SHAPE}")
    elif not value:
        yield error(f"`{key}` is empty", "add the assistant's reply as its one message")
    elif len(value) > 1:
        yield error(
            f"`{key}` holds {len(value)} messages; an output is one assistant message",
            "keep the reply alone: one turn only, and earlier turns belong in input.messages",
        )
    else:
        yield from _output_message(f"{key}[0]", value[0])


def _output_message(path: str, message: Any) -> Iterator[Finding]:
    if not isinstance(message, dict):
        yield error(
            f"{path} is {json_type(message)}, not an object",
            'write it as {"role": "assistant", "content": "..."}',
        )
        return
    role = message.get("role")
    if role != "assistant":
        problem = f"{path} has no role" if role is None else f"{path}: role is {shown(role)}"
        yield error(f"{problem}; an output is the assistant's reply", "set role to assistant")
    calls = sorted(key for key in _CALL_KEYS if message.get(key) is not None)
    if calls:
        yield error(
            f"{path} has {' and '.join(calls)}, but preference outputs are text only "
            "(fine-tuning guide)",
            "give the reply as text in content; train calls with chat examples",
        )
    elif not _is_text(message.get("content")):
        yield error(
            f"{path} has no text: content is {_content_kind(message.get('content'))}",
            "give the assistant's reply as a string in content",
        )
    for key in message:
        if key not in _OUTPUT_MESSAGE_KEYS and key not in _CALL_KEYS:
            yield warning(
                f"{path}: unknown key `{key}`",
                f"remove it; an output message holds {', '.join(sorted(_OUTPUT_MESSAGE_KEYS))}",
            )


def _is_text(content: Any) -> bool:
    """A string, or a non-empty list of text parts (`{"type": "text", "text": "..."}`)."""
    if isinstance(content, str):
        return True
    return isinstance(content, list) and bool(content) and all(map(_is_text_part, content))


def _is_text_part(part: Any) -> bool:
    return (
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
    )


def _content_kind(content: Any) -> str:
    if isinstance(content, list) and content:
        return "a list with parts that are not text"
    return "an empty list" if isinstance(content, list) else json_type(content)


# --- rules of the view: the input ------------------------------------------------------------


def input_weights(example: Example, context: Context) -> Iterator[Finding]:
    """No `weight` in the input: a preference example trains its outputs, the input is context."""
    for index, message in enumerate(example.messages):
        if isinstance(message, dict) and "weight" in message:
            yield warning(
                f"{where(example, index)} has `weight`, but a preference example trains only "
                "its outputs",
                "remove it: the input is context, whatever its weights",
            )


def input_ends_before_outputs(example: Example, context: Context) -> Iterator[Finding]:
    """The input ends before the reply: the outputs are the last assistant message."""
    last = len(example.messages) - 1
    if example.roles[last] == "assistant":
        yield error(
            f"`input.messages` ends with {where(example, last)}: the preferred and "
            "non-preferred outputs are the last assistant message",
            "end the input with the message the outputs reply to, and put the reply in the outputs",
        )
