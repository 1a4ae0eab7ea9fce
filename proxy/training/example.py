"""One training example, read once into the view the rules share.

The view is tolerant: it never raises on a malformed example. It keeps what is well formed
(the offered functions, the calls) and leaves every shape problem to the rule that reports
it, so one mistake is reported once and does not hide the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from proxy import jsonutil

# No tokenizer is available offline: about four characters of English make one token, and
# an example's compact JSON is close to what the model reads (a little more, so the
# estimate errs on the side of warning).
CHARS_PER_TOKEN = 4

# Where an assistant's calls live: `tool_calls` (a list) or the legacy `function_call`.
TOOL_CALLS = "tool_calls"
FUNCTION_CALL = "function_call"


@dataclass(frozen=True)
class Call:
    """One function call of an assistant message, in either format."""

    where: str  # the call's path, e.g. `messages[2].tool_calls[0]`
    message: int  # index of the assistant message that makes it
    raw: Any  # the call object as written
    legacy: bool  # a `function_call`: no id, no type, answered by a `function` message

    @property
    def function(self) -> dict[str, Any] | None:
        """The object holding `name` and `arguments`."""
        if not isinstance(self.raw, dict):
            return None
        function = self.raw if self.legacy else self.raw.get("function")
        return function if isinstance(function, dict) else None

    @property
    def name(self) -> str | None:
        name = self.function.get("name") if self.function is not None else None
        return name if isinstance(name, str) else None

    @property
    def id(self) -> Any:
        return None if self.legacy or not isinstance(self.raw, dict) else self.raw.get("id")

    @property
    def function_path(self) -> str:
        return self.where if self.legacy else f"{self.where}.function"


@dataclass(frozen=True)
class Example:
    data: dict[str, Any]
    messages: list[Any]
    # function name -> its definition (`{name, description?, parameters?}`), from `tools`
    # and the legacy `functions`; only well-formed entries, the first of duplicates
    functions: dict[str, dict[str, Any]]
    calls: list[Call]

    @cached_property
    def legacy(self) -> bool:
        """Whether the example uses the deprecated `functions` format anywhere."""
        return "functions" in self.data or any(call.legacy for call in self.calls) or any(
            isinstance(message, dict) and message.get("role") == "function"
            for message in self.messages
        )

    @cached_property
    def estimated_tokens(self) -> int:
        """Tokens of the example, estimated from the characters of its compact JSON."""
        characters = len(jsonutil.dumps(self.data).decode())
        return -(-characters // CHARS_PER_TOKEN)

    @property
    def parallel_tool_calls(self) -> bool:
        # The API's default is true; only an explicit false turns parallel calls off.
        return self.data.get("parallel_tool_calls") is not False

    def message(self, index: int) -> dict[str, Any] | None:
        message = self.messages[index]
        return message if isinstance(message, dict) else None

    def role(self, index: int) -> str | None:
        message = self.message(index)
        role = message.get("role") if message is not None else None
        return role if isinstance(role, str) else None


def read_example(data: dict[str, Any]) -> Example | None:
    """The view of `data`; None when it has no non-empty `messages` list to look at."""
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    return Example(
        data=data,
        messages=messages,
        functions=offered_functions(data),
        calls=[call for index, message in enumerate(messages) for call in _calls(index, message)],
    )


def offered_functions(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    functions: dict[str, dict[str, Any]] = {}
    for _, function in function_definitions(data):
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            functions.setdefault(function["name"], function)
    return functions


def function_definitions(data: dict[str, Any]) -> list[tuple[str, Any]]:
    """(path, function object) for every function tool and legacy function, as written."""
    found: list[tuple[str, Any]] = []
    tools = data.get("tools")
    if isinstance(tools, list):
        for index, tool in enumerate(tools):
            if isinstance(tool, dict) and tool.get("type") == "function":
                found.append((f"tools[{index}].function", tool.get("function")))
    functions = data.get("functions")
    if isinstance(functions, list):
        found.extend((f"functions[{index}]", function) for index, function in enumerate(functions))
    return found


def _calls(index: int, message: Any) -> list[Call]:
    if not isinstance(message, dict) or message.get("role") != "assistant":
        return []
    where = f"messages[{index}]"
    calls = []
    tool_calls = message.get(TOOL_CALLS)
    if isinstance(tool_calls, list):
        calls = [
            Call(f"{where}.{TOOL_CALLS}[{position}]", index, call, legacy=False)
            for position, call in enumerate(tool_calls)
        ]
    if message.get(FUNCTION_CALL) is not None:
        calls.append(Call(f"{where}.{FUNCTION_CALL}", index, message[FUNCTION_CALL], legacy=True))
    return calls
