"""One training example, read once into the view the rules share.

The view is of the example's conversation: a chat example, or a preference example's `input`
(`proxy.training.kinds`); the paths it builds say which. It is tolerant: it never raises on a
malformed example. It keeps what is well formed (the offered functions, the calls) and leaves
every shape problem to the rule that reports it, so one mistake is reported once and does not
hide the others. It is computed once per example because a large file has hundreds of
thousands of them and a dozen rules read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from proxy import jsonutil
from proxy.training.kinds import Kind, conversation, kind_of, path_prefix

# No tokenizer is available offline: about four characters of English make one token. The
# estimate counts the bytes of the example's line, which are a few more than the characters
# the model reads (JSON punctuation, escapes, multi-byte UTF-8), so it errs on the side of
# warning; and it costs nothing to compute on a file of a million lines.
BYTES_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class Call:
    """One function call of an assistant message, in either format."""

    message: int  # index of the assistant message that makes it
    position: int  # index in its `tool_calls`; 0 for a legacy call
    raw: Any  # the call object as written
    legacy: bool  # a `function_call`: no id, no type, answered by a `function` message
    function: dict[str, Any] | None  # the object holding `name` and `arguments`
    name: str | None
    id: Any  # as written; None for a legacy call
    prefix: str  # of its path: "input." in a preference example

    @property
    def where(self) -> str:
        """The call's path, e.g. `messages[2].tool_calls[0]`."""
        if self.legacy:
            return f"{self.prefix}messages[{self.message}].function_call"
        return f"{self.prefix}messages[{self.message}].tool_calls[{self.position}]"

    @property
    def function_path(self) -> str:
        return self.where if self.legacy else f"{self.where}.function"


def _call(message: int, position: int, raw: Any, *, legacy: bool, prefix: str) -> Call:
    function = (raw if legacy else raw.get("function")) if isinstance(raw, dict) else None
    if not isinstance(function, dict):
        function = None
    name = function.get("name") if function is not None else None
    call_id = raw.get("id") if isinstance(raw, dict) and not legacy else None
    return Call(
        message=message,
        position=position,
        raw=raw,
        legacy=legacy,
        function=function,
        name=name if isinstance(name, str) else None,
        id=call_id,
        prefix=prefix,
    )


class Definition(NamedTuple):
    """A function definition as written: `tools[i].function` or legacy `functions[i]`."""

    key: str  # "tools" or "functions"
    position: int  # in that array
    function: Any  # the function object (`{name, description?, parameters?}`), as written
    # The definition in request shape (a legacy function wrapped as a function tool) and its
    # serialisation, which keys every comparison of definitions; None unless well formed.
    tool: dict[str, Any] | None
    serialized: bytes | None
    prefix: str  # of its path: "input." in a preference example

    @property
    def path(self) -> str:
        if self.key == "tools":
            return f"{self.prefix}tools[{self.position}].function"
        return f"{self.prefix}functions[{self.position}]"

    @property
    def name(self) -> str | None:
        return self.function["name"] if self.tool is not None else None


@dataclass(frozen=True)
class Example:
    kind: Kind
    data: dict[str, Any]  # the conversation: the example itself, or a preference example's input
    messages: list[Any]
    roles: list[str | None]  # per message; None when it is not an object or has no string role
    definitions: list[Definition]  # every function tool and legacy function, as written
    functions: dict[str, Definition]  # by name: the well-formed ones, the first of duplicates
    calls: list[Call]
    calls_by_message: dict[int, list[Call]]  # assistant message index -> its calls
    legacy: bool  # whether the deprecated `functions` format is used anywhere
    size: int  # bytes of the example's line

    @property
    def prefix(self) -> str:
        """What goes before the paths of `data` in a finding: "input." in a preference example."""
        return path_prefix(self.kind)

    @property
    def estimated_tokens(self) -> int:
        """Tokens of the example, estimated from the bytes of its line."""
        return -(-self.size // BYTES_PER_TOKEN)

    @property
    def parallel_tool_calls(self) -> bool:
        # The API's default is true; only an explicit false turns parallel calls off.
        return self.data.get("parallel_tool_calls") is not False

    def message(self, index: int) -> dict[str, Any] | None:
        message = self.messages[index]
        return message if isinstance(message, dict) else None


def read_example(example: dict[str, Any], size: int = 0) -> Example | None:
    """The view of `example`, whose line has `size` bytes; None when it has no messages to read."""
    kind = kind_of(example)
    data = conversation(example)
    if not isinstance(data, dict):
        return None
    prefix = path_prefix(kind)
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    roles: list[str | None] = []
    calls: list[Call] = []
    calls_by_message: dict[int, list[Call]] = {}
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        roles.append(role if isinstance(role, str) else None)
        if role == "assistant":
            message_calls = _calls(index, message, prefix)
            if message_calls:
                calls_by_message[index] = message_calls
                calls.extend(message_calls)
    definitions = function_definitions(data, prefix)
    functions: dict[str, Definition] = {}
    for definition in definitions:
        if definition.name is not None:
            functions.setdefault(definition.name, definition)
    legacy = "functions" in data or "function" in roles or any(call.legacy for call in calls)
    return Example(
        kind, data, messages, roles, definitions, functions, calls, calls_by_message, legacy, size
    )


def function_definitions(data: dict[str, Any], prefix: str) -> list[Definition]:
    """Every function tool and legacy function of the conversation `data`, as written."""
    found: list[Definition] = []
    tools = data.get("tools")
    if isinstance(tools, list):
        for index, tool in enumerate(tools):
            if isinstance(tool, dict) and tool.get("type") == "function":
                found.append(_definition("tools", index, tool.get("function"), tool, prefix))
    functions = data.get("functions")
    if isinstance(functions, list):
        for index, function in enumerate(functions):
            # Wrapped as `tools extract` wraps it, so a legacy function compares equal to
            # the same function offered as a tool.
            tool = {"type": "function", "function": function}
            found.append(_definition("functions", index, function, tool, prefix))
    return found


def _definition(
    key: str, position: int, function: Any, tool: dict[str, Any], prefix: str
) -> Definition:
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        return Definition(key, position, function, None, None, prefix)
    return Definition(key, position, function, tool, jsonutil.dumps(tool), prefix)


def _calls(index: int, message: dict[str, Any], prefix: str) -> list[Call]:
    calls = []
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        calls = [
            _call(index, position, raw, legacy=False, prefix=prefix)
            for position, raw in enumerate(tool_calls)
        ]
    function_call = message.get("function_call")
    if function_call is not None:
        calls.append(_call(index, 0, function_call, legacy=True, prefix=prefix))
    return calls
