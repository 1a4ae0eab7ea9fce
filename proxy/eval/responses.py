"""Replaying a chat example through the Responses API (`eval --api responses`): the example's
request written as a Responses request, and the answer's calls read back.

The conversion is the one an application makes when it moves from chat to the Responses API,
so that both APIs can be checked to give the fine-tune the same requests: messages become
input items (an assistant's tool calls become `function_call` items, a tool message a
`function_call_output`), nested function tools become flat ones, `max_tokens` becomes
`max_output_tokens`. Fields it does not know pass as they are.
"""

from __future__ import annotations

from typing import Any

from proxy.eval.compare import AnsweredCall
from proxy.rewrite.schema import flat_function_tool

_RENAMED = {"max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens"}
_CHAT_ONLY = frozenset({"messages", "stream_options", "n", "logprobs", "response_format"})


def responses_request(chat: dict[str, Any]) -> dict[str, Any]:
    """The Responses request equivalent to the chat request `chat`."""
    body: dict[str, Any] = {"input": input_items(chat.get("messages") or [])}
    for key, value in chat.items():
        if key in _CHAT_ONLY:
            continue
        if key == "tools":
            body["tools"] = [flat_tool(tool) for tool in value]
        elif key == "tool_choice":
            body["tool_choice"] = flat_tool_choice(value)
        else:
            body[_RENAMED.get(key, key)] = value
    return body


def input_items(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.get("tool_call_id"),
                    "output": _text(message.get("content")),
                }
            )
            continue
        if message.get("content"):
            items.append({"role": role, "content": _text(message["content"])})
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            items.append(
                {
                    "type": "function_call",
                    "call_id": call.get("id"),
                    "name": function.get("name"),
                    "arguments": function.get("arguments"),
                }
            )
    return items


def _text(content: Any) -> str:
    """A message's content as text (chat parts joined; the examples are text)."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def flat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A chat tool as the Responses API takes it (`strict` said as chat meant it)."""
    if tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
        return tool
    return flat_function_tool(tool)


def flat_tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "name": (choice.get("function") or {}).get("name")}
    return choice


def answered_calls(response: Any) -> tuple[AnsweredCall, ...]:
    """The function calls of a Response (the SDK's object), in order."""
    return tuple(
        AnsweredCall(str(item.name), str(item.arguments))
        for item in response.output
        if getattr(item, "type", None) == "function_call"
    )
