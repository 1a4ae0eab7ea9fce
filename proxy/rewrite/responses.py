"""The steps that differ for the Responses API (`POST /v1/responses`): the system prompt on
`instructions` or the input's first system message, and a forced tool choice on a user turn.

The rest is shared with chat: the tools step in its flat shape (`tools.FLAT_TOOLS`),
`parallel_tool_calls`, and the bias, which the Responses API cannot carry (counted, never an
error). Other input items and fields pass untouched.
"""

from __future__ import annotations

from typing import Any

from proxy.rewrite.fields import has_tools, invalid_type, is_system
from proxy.rewrite.policy import Policy, SystemPromptSpec
from proxy.rewrite.result import (
    SYSTEM_PROMPT_INSERTED,
    SYSTEM_PROMPT_PREPENDED,
    SYSTEM_PROMPT_REPLACED,
    TOOL_CHOICE_FORCED,
    Body,
    Change,
)
from proxy.rewrite.system_prompt import prepended_in, replaced_in

INSTRUCTIONS = "instructions"


def apply_system_prompt_to_instructions(body: Body, policy: Policy, changes: list[Change]) -> Body:
    """Runs when `system_prompt.mode` is replace, prepend or if_missing; may change
    `instructions` and `input`.

    `instructions` plays the first system message's part; without it, the input's first
    system (or developer) message item does; without either, the prompt becomes the
    `instructions`. As for chat, a request that already carries the text is left as it is.
    """
    spec = policy.spec.system_prompt
    if spec.mode == "keep" or not spec.text:
        return body
    instructions = body.get(INSTRUCTIONS)
    if instructions is not None:
        if not isinstance(instructions, str):
            raise invalid_type(INSTRUCTIONS, "a string", instructions)
        return _on_instructions(body, instructions, spec, changes)
    items = input_items(body)
    first = _first_system_item(items)
    if first is None:
        changes.append(Change(SYSTEM_PROMPT_INSERTED, INSTRUCTIONS))
        return {**body, INSTRUCTIONS: spec.text}
    if spec.mode == "replace":
        new_items = replaced_in(items, first, spec.text, changes, f"input[{first}]")
    elif spec.mode == "prepend":
        new_items = prepended_in(items, first, spec.text, changes, f"input[{first}]")
    else:  # if_missing, and there is one
        return body
    return body if new_items is items else {**body, "input": new_items}


def _on_instructions(
    body: Body, instructions: str, spec: SystemPromptSpec, changes: list[Change]
) -> Body:
    text = spec.text or ""
    if spec.mode == "replace" and instructions != text:
        changes.append(Change(SYSTEM_PROMPT_REPLACED, INSTRUCTIONS))
        return {**body, INSTRUCTIONS: text}
    if spec.mode == "prepend" and not instructions.startswith(text):
        # The training prompt first, the client's instructions after it as a message of their
        # own, as chat's prepend puts its prompt before the client's system message.
        changes.append(Change(SYSTEM_PROMPT_PREPENDED, INSTRUCTIONS))
        client = {"role": "developer", "content": instructions}
        return {**body, INSTRUCTIONS: text, "input": [client, *as_items(body.get("input"))]}
    return body


def input_items(body: Body) -> list[Any]:
    """The request's input as a list of items (a string input is one user message)."""
    value = body.get("input")
    if value is None or isinstance(value, str):
        return []
    if isinstance(value, list):
        return value
    raise invalid_type("input", "a string or an array of input items", value)


def as_items(value: Any) -> list[Any]:
    """`input` as items: a string is the user's message."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return list(value) if isinstance(value, list) else []


def _first_system_item(items: list[Any]) -> int | None:
    for index, item in enumerate(items):
        if isinstance(item, dict) and _is_message(item) and is_system(item):
            return index
    return None


def _is_message(item: dict[str, Any]) -> bool:
    return item.get("type", "message") == "message" and "role" in item


def force_tool_choice_on_user_input(body: Body, policy: Policy, changes: list[Change]) -> Body:
    """Runs when `tool_choice.on_user_turn` is set; may set `tool_choice`.

    As for chat: only when tools are present, the client left the choice to the model, and
    the input ends with the user's message (a string input is one).
    """
    forced = policy.spec.tool_choice.on_user_turn
    if forced is None or body.get("tool_choice") not in (None, "auto") or not has_tools(body):
        return body
    if not _ends_with_user_message(body.get("input")):
        return body
    changes.append(Change(TOOL_CHOICE_FORCED, forced))
    return {**body, "tool_choice": forced}


def _ends_with_user_message(value: Any) -> bool:
    if isinstance(value, str):
        return True
    if not isinstance(value, list) or not value:
        return False
    last = value[-1]
    return isinstance(last, dict) and _is_message(last) and last.get("role") == "user"
