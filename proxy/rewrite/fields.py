"""Reading the request fields the rewrite needs, refusing wrong shapes with a 400.

The engine is lenient about traffic: it reads only the fields a policy owns, and only
when a step runs. What it reads must have the shape OpenAI documents, otherwise the client
gets OpenAI's `invalid_type` error naming the field, never a 500.
"""

from __future__ import annotations

from typing import Any

from proxy.errors import InvalidRequest
from proxy.rewrite.result import Body

SYSTEM_ROLES = ("system", "developer")


def json_type(value: Any) -> str:
    """How OpenAI's errors name a JSON value's type ("an array", "a string", …)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def invalid_type(param: str, expected: str, value: Any) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{param}': expected {expected}, but got {json_type(value)} instead.",
        param=param,
        code="invalid_type",
    )


def read_tools(body: Body) -> list[Any] | None:
    """The request's `tools` list, or None when absent."""
    tools = body.get("tools")
    if tools is None or isinstance(tools, list):
        return tools
    raise invalid_type("tools", "an array of tools", tools)


def has_tools(body: Body) -> bool:
    return bool(read_tools(body))


def read_messages(body: Body) -> list[Any]:
    messages = body.get("messages")
    if isinstance(messages, list):
        return messages
    if messages is None:
        raise InvalidRequest(
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    raise invalid_type("messages", "an array of messages", messages)


def message_at(messages: list[Any], index: int) -> dict[str, Any]:
    message = messages[index]
    if isinstance(message, dict):
        return message
    raise invalid_type(f"messages[{index % len(messages)}]", "an object", message)


def is_system(message: dict[str, Any]) -> bool:
    """Whether the message instructs the model (`developer` replaces `system` on newer models)."""
    return message.get("role") in SYSTEM_ROLES


def function_name(tool: Any, index: int) -> str | None:
    """The function name of `tools[index]`, or None for a tool that is not a function.

    Only function tools are the policy's business; other kinds (e.g. `custom`) pass as sent.
    """
    param = f"tools[{index}]"
    if not isinstance(tool, dict):
        raise invalid_type(param, "an object", tool)
    if tool.get("type", "function") != "function":
        return None
    return _name_in(tool.get("function"), f"{param}.function")


def flat_function_name(tool: Any, index: int) -> str | None:
    """`function_name` for the Responses API's flat tools: `{type: function, name, ...}`; the
    other kinds (hosted tools, `custom`, `mcp`, `namespace`, ...) are None."""
    param = f"tools[{index}]"
    if not isinstance(tool, dict):
        raise invalid_type(param, "an object", tool)
    if tool.get("type") != "function":
        return None
    return _name_in(tool, param)


def _name_in(function: Any, param: str) -> str:
    if not isinstance(function, dict):
        raise invalid_type(param, "an object", function)
    name = function.get("name")
    if not isinstance(name, str):
        raise invalid_type(f"{param}.name", "a string", name)
    return name


def tool_choice_names(choice: Any) -> frozenset[str]:
    """The functions `tool_choice` names: its named form, or the list of `allowed_tools`."""
    if not isinstance(choice, dict):
        return frozenset()
    kind = choice.get("type")
    if kind == "function":
        return frozenset({_name_in(choice.get("function"), "tool_choice.function")})
    if kind == "allowed_tools":
        return _allowed_tool_names(choice.get("allowed_tools"))
    return frozenset()


def _allowed_tool_names(allowed: Any) -> frozenset[str]:
    param = "tool_choice.allowed_tools"
    if not isinstance(allowed, dict):
        raise invalid_type(param, "an object", allowed)
    tools = allowed.get("tools")
    if not isinstance(tools, list):
        raise invalid_type(f"{param}.tools", "an array of tools", tools)
    names = set()
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise invalid_type(f"{param}.tools[{index}]", "an object", tool)
        if tool.get("type", "function") == "function":
            names.add(_name_in(tool.get("function"), f"{param}.tools[{index}].function"))
    return frozenset(names)


def flat_tool_choice_names(choice: Any) -> frozenset[str]:
    """`tool_choice_names` for the Responses API: `{type: function, name}`, or
    `{type: allowed_tools, mode, tools: [{type: function, name}, ...]}`."""
    if not isinstance(choice, dict):
        return frozenset()
    kind = choice.get("type")
    if kind == "function":
        return frozenset({_name_in(choice, "tool_choice")})
    if kind != "allowed_tools":
        return frozenset()
    tools = choice.get("tools")
    if not isinstance(tools, list):
        raise invalid_type("tool_choice.tools", "an array of tools", tools)
    names = set()
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise invalid_type(f"tool_choice.tools[{index}]", "an object", tool)
        if tool.get("type") == "function":
            names.add(_name_in(tool, f"tool_choice.tools[{index}]"))
    return frozenset(names)
