"""Legacy `functions` / `function_call`: translated to tools on the way in, back on the way out.

OpenAI deprecated `functions` in favour of `tools`, and fine-tuned models are served with
tools, so an old client's request is rewritten in the tools shape before any other step and
the answer is turned back into the shape that client reads. The mapping (OpenAI contract
notes, §1): `functions[i]` is `tools[i]` = `{"type": "function", "function": functions[i]}`;
`function_call` "none"/"auto" stay, `{"name": X}` becomes the named tool choice; history's
assistant `function_call` becomes one `tool_calls` entry and a `role: function` message
the `role: tool` answer to it. A legacy answer holds one call, so parallel calls are off.
"""

from __future__ import annotations

from typing import Any

from proxy.errors import InvalidRequest
from proxy.rewrite.fields import invalid_type, message_at, read_messages
from proxy.rewrite.policy import Policy
from proxy.rewrite.result import LEGACY_FUNCTIONS_TRANSLATED, Body, Change


def translate_legacy_functions(body: Body, policy: Policy, changes: list[Change]) -> Body:
    """Runs when `legacy_functions` is translate and the request has functions or function_call.

    Replaces them with `tools`/`tool_choice` (in place, key order kept), sets
    `parallel_tool_calls: false` when the client did not, and translates the history.
    """
    if policy.spec.legacy_functions != "translate":
        return body
    functions, function_call = body.get("functions"), body.get("function_call")
    if functions is None and function_call is None:
        return body
    _refuse_mixed(body, functions, function_call)
    translated: Body = {}
    for key, value in body.items():
        if key == "functions":
            if value is not None:
                translated["tools"] = _tools_from_functions(value)
        elif key == "function_call":
            if value is not None:
                translated["tool_choice"] = _tool_choice_from_function_call(value)
        elif key not in ("tools", "tool_choice") or value is not None:
            # a null `tools`/`tool_choice` is an absent one, which the translation fills
            translated[key] = value
    if translated.get("tools"):
        translated.setdefault("parallel_tool_calls", False)
    translated["messages"] = _translate_history(read_messages(body))
    changes.append(Change(LEGACY_FUNCTIONS_TRANSLATED))
    return translated


def _refuse_mixed(body: Body, functions: Any, function_call: Any) -> None:
    for legacy, current, value in (
        ("functions", "tools", functions),
        ("function_call", "tool_choice", function_call),
    ):
        if value is not None and body.get(current) is not None:
            raise InvalidRequest(
                f"'{legacy}' and '{current}' cannot be used together: "
                f"'{legacy}' is the deprecated form of '{current}'.",
                param=legacy,
                code="invalid_request",
            )


def _tools_from_functions(functions: Any) -> list[dict[str, Any]]:
    if not isinstance(functions, list):
        raise invalid_type("functions", "an array of functions", functions)
    tools = []
    for index, function in enumerate(functions):
        if not isinstance(function, dict):
            raise invalid_type(f"functions[{index}]", "an object", function)
        # checked here so that the error names the field the client sent, not its translation
        if not isinstance(function.get("name"), str):
            raise invalid_type(f"functions[{index}].name", "a string", function.get("name"))
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice_from_function_call(function_call: Any) -> Any:
    if isinstance(function_call, str):
        return function_call  # "none" and "auto" mean the same in both forms
    if isinstance(function_call, dict) and isinstance(function_call.get("name"), str):
        return {"type": "function", "function": {"name": function_call["name"]}}
    raise invalid_type("function_call", '"none", "auto" or {"name": ...}', function_call)


def _translate_history(messages: list[Any]) -> list[Any]:
    """Assistant function calls become tool calls with a synthetic id that their results cite."""
    translated: list[Any] | None = None
    call_id: str | None = None
    for index in range(len(messages)):
        message = message_at(messages, index)
        role = message.get("role")
        if role == "assistant" and message.get("function_call") is not None:
            call_id = f"call_legacy_{index}"
            replacement = _assistant_tool_call(message, call_id, index)
        elif role == "function":
            if call_id is None:
                raise InvalidRequest(
                    "A message with role 'function' must follow an assistant message "
                    "with 'function_call'.",
                    param=f"messages[{index}]",
                    code="invalid_value",
                )
            replacement = _tool_result(message, call_id)
        else:
            continue
        translated = translated if translated is not None else list(messages)
        translated[index] = replacement
    return messages if translated is None else translated


def _assistant_tool_call(message: dict[str, Any], call_id: str, index: int) -> dict[str, Any]:
    call = message["function_call"]
    if not isinstance(call, dict):
        raise invalid_type(f"messages[{index}].function_call", "an object", call)
    tool_calls = [{"id": call_id, "type": "function", "function": call}]
    return _rename_key(message, "function_call", "tool_calls", tool_calls)


def _tool_result(message: dict[str, Any], call_id: str) -> dict[str, Any]:
    result: dict[str, Any] = {"role": "tool", "tool_call_id": call_id}
    for key, value in message.items():
        if key not in ("role", "name", "tool_call_id"):
            result[key] = value
    if result.get("content") is None:
        result["content"] = ""  # a tool message needs content; a legacy one could be null
    return result


def _rename_key(mapping: dict[str, Any], old: str, new: str, value: Any) -> dict[str, Any]:
    """`mapping` with `old` replaced by `new: value` at the same position."""
    renamed: dict[str, Any] = {}
    for key, item in mapping.items():
        if key == old:
            renamed[new] = value
        else:
            renamed[key] = item
    return renamed


# --- the answer, back to the legacy shape ---------------------------------------------------


def response_to_legacy(response: dict[str, Any]) -> dict[str, Any]:
    """A chat completion with `message.function_call` and `finish_reason: function_call`.

    A legacy message holds one call: the first tool call is kept. Returns the same object
    when there was nothing to translate. Unexpected shapes are left as they are.
    """
    return _choices_to_legacy(response, "message")


def chunk_to_legacy(chunk: dict[str, Any]) -> dict[str, Any]:
    """A stream chunk with `delta.function_call` (`name`/`arguments`, no index, no id).

    Only the first call's fragments (index 0) are kept, as in `response_to_legacy`. Returns
    the same object when there was nothing to translate, so a relay can send the original
    bytes.
    """
    return _choices_to_legacy(chunk, "delta")


def _choices_to_legacy(payload: dict[str, Any], part: str) -> dict[str, Any]:
    choices = payload.get("choices")
    if not isinstance(choices, list):
        return payload
    new_choices = [_choice_to_legacy(choice, part) for choice in choices]
    if all(new is old for new, old in zip(new_choices, choices, strict=True)):
        return payload
    return {**payload, "choices": new_choices}


def _choice_to_legacy(choice: Any, part: str) -> Any:
    if not isinstance(choice, dict):
        return choice
    new_choice = choice
    content = choice.get(part)
    if isinstance(content, dict) and "tool_calls" in content:
        calls = content["tool_calls"]
        function_call = _first_call(calls) if part == "message" else _first_call_fragment(calls)
        new_choice = {**new_choice, part: _with_function_call(content, function_call)}
    if choice.get("finish_reason") == "tool_calls":
        new_choice = {**new_choice, "finish_reason": "function_call"}
    return new_choice


def _with_function_call(content: dict[str, Any], call: dict[str, Any] | None) -> dict[str, Any]:
    if call:
        return _rename_key(content, "tool_calls", "function_call", call)
    return {key: value for key, value in content.items() if key != "tool_calls"}


def _first_call(calls: Any) -> dict[str, Any] | None:
    if not isinstance(calls, list) or not calls or not isinstance(calls[0], dict):
        return None
    function = calls[0].get("function")
    if not isinstance(function, dict):
        return None
    return {"name": function.get("name"), "arguments": function.get("arguments")}


def _first_call_fragment(calls: Any) -> dict[str, Any] | None:
    """The name and argument fragment of call 0 in one delta; later calls have no legacy form."""
    if not isinstance(calls, list):
        return None
    fragment: dict[str, Any] = {}
    for call in calls:
        if not isinstance(call, dict) or call.get("index", 0) != 0:
            continue
        function = call.get("function")
        if not isinstance(function, dict):
            continue
        if "name" in function:
            fragment["name"] = function["name"]
        if isinstance(function.get("arguments"), str):
            fragment["arguments"] = fragment.get("arguments", "") + function["arguments"]
    return fragment
