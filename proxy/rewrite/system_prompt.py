"""The system-prompt step: the prompt the model was fine-tuned with."""

from __future__ import annotations

from typing import Any

from proxy.rewrite.fields import is_system, message_at, read_messages
from proxy.rewrite.policy import Policy
from proxy.rewrite.result import (
    SYSTEM_PROMPT_INSERTED,
    SYSTEM_PROMPT_PREPENDED,
    SYSTEM_PROMPT_REPLACED,
    Body,
    Change,
    message_param,
)


def apply_system_prompt(body: Body, policy: Policy, changes: list[Change]) -> Body:
    """Runs when `system_prompt.mode` is replace, prepend or if_missing; changes `messages`.

    `developer` messages count as system messages. Every mode leaves a request that already
    carries the text where the mode puts it as it is.
    """
    spec = policy.spec.system_prompt
    if spec.mode == "keep" or not spec.text:
        return body
    messages = read_messages(body)
    first = _first_system_index(messages)
    if first is None:
        new_messages = [{"role": "system", "content": spec.text}, *messages]
        changes.append(Change(SYSTEM_PROMPT_INSERTED, message_param(0)))
    elif spec.mode == "replace":
        new_messages = replaced_in(messages, first, spec.text, changes, "")
    elif spec.mode == "prepend":
        new_messages = prepended_in(messages, first, spec.text, changes, message_param(first))
    else:  # if_missing, and there is one
        return body
    return body if new_messages is messages else {**body, "messages": new_messages}


def _first_system_index(messages: list[Any]) -> int | None:
    for index in range(len(messages)):
        if is_system(message_at(messages, index)):
            return index
    return None


def replaced_in(
    messages: list[Any], first: int, text: str, changes: list[Change], where: str
) -> list[Any]:
    """`messages` (chat's messages or Responses input items) with the system message at
    `first` saying `text`; `where` names it in the report."""
    message = messages[first]
    if message.get("content") == text:
        return messages
    changes.append(Change(SYSTEM_PROMPT_REPLACED, where))
    new_messages = list(messages)
    # The role stays: a `developer` message is what the model in front expects.
    new_messages[first] = {**message, "content": text}
    return new_messages


def prepended_in(
    messages: list[Any], first: int, text: str, changes: list[Change], where: str
) -> list[Any]:
    """`messages` with a system message saying `text` before the one at `first`, unless that
    one already begins with it (as a string or as its first part)."""
    message = messages[first]
    if _starts_with(message.get("content"), text):
        return messages
    changes.append(Change(SYSTEM_PROMPT_PREPENDED, where))
    prompt = {"role": message["role"], "content": text}
    return [*messages[:first], prompt, *messages[first:]]


def _starts_with(content: Any, text: str) -> bool:
    """Whether a message's content (a string or a list of parts) begins with `text`."""
    if isinstance(content, str):
        return content.startswith(text)
    if isinstance(content, list) and content and isinstance(content[0], dict):
        first_text = content[0].get("text")
        return isinstance(first_text, str) and first_text.startswith(text)
    return False
