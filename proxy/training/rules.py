"""The rules about an example's shape: its keys, tool definitions, messages, weights, length.

Each rule is a function of one example that yields findings; it reads only the view
(`Example`) and the shared `Context`, and it never raises on a malformed example. The
rules about calls and their answers are in `proxy.training.calls`, those only a preference
example has in `proxy.training.preference`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from proxy.rewrite.fields import json_type
from proxy.training.example import Definition, Example
from proxy.training.findings import Finding, error, warning
from proxy.training.kinds import Kind, path_prefix
from proxy.training.schemas import Schemas

Format = Literal["openai", "azure"]

# The fine-tuning limits (OpenAI contract notes, §5).
MIN_EXAMPLES = 10
DEFAULT_MAX_TOKENS = 65_536  # gpt-4o / gpt-4o-mini per-example training context
MAX_TOOLS = 128

EXAMPLE_KEYS = ("messages", "tools", "parallel_tool_calls", "functions")
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
# The keys each role may carry; anything else is likely a typo (`tool_call`, `toolCalls`).
# `weight` belongs to the assistant only; elsewhere its own rule reports it, as an error.
MESSAGE_KEYS: dict[str, frozenset[str]] = {
    "system": frozenset({"role", "content", "name"}),
    "developer": frozenset({"role", "content", "name"}),
    "user": frozenset({"role", "content", "name"}),
    "assistant": frozenset(
        {"role", "content", "name", "tool_calls", "function_call", "refusal", "weight"}
    ),
    "tool": frozenset({"role", "content", "tool_call_id"}),
    "function": frozenset({"role", "content", "name"}),
}
FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")

CONVERT_LEGACY = "convert the file with `tuned-proxy training rewrite`"


@dataclass
class Context:
    """What the rules share across the examples of one file."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    schemas: Schemas = field(default_factory=Schemas)
    # Serialised definitions already found without a problem: a file (or a capture) offers
    # the same few tools on every line, and a definition's own findings depend on it alone.
    sound_definitions: set[bytes] = field(default_factory=set)


Rule = Callable[[Example, Context], Iterable[Finding]]


def where(example: Example, index: int) -> str:
    """`messages[3] (tool)`: the path, and the role that says which rules apply."""
    role = example.roles[index]
    return f"{example.prefix}messages[{index}]" + (f" ({role})" if role in ROLES else "")


# --- before the view: the conversation's keys ----------------------------------------------


class _Wording(NamedTuple):
    holder: str
    no_messages: str
    empty_messages: str


_WORDING: dict[Kind, _Wording] = {
    "chat": _Wording(
        "an example",
        'each example is {"messages": [...]} with the whole conversation',
        "add the conversation, ending with the assistant",
    ),
    "preference": _Wording(
        "`input`",
        '`input` is {"messages": [...]} with the conversation up to the reply',
        "add the conversation up to the assistant's reply, which the outputs hold",
    ),
}


def conversation_keys(data: dict[str, Any], kind: Kind) -> Iterator[Finding]:
    """`messages` present and a non-empty array; the other keys known and of the right type.

    `data` is the conversation: a chat example's top level, or a preference example's input.
    """
    prefix, wording = path_prefix(kind), _WORDING[kind]
    messages = data.get("messages")
    if messages is None:
        yield error(f"no `{prefix}messages`", wording.no_messages)
    elif not isinstance(messages, list):
        yield error(f"`{prefix}messages` is {json_type(messages)}, not an array", "make it a list")
    elif not messages:
        yield error(f"`{prefix}messages` is empty", wording.empty_messages)
    for key in data:
        if key not in EXAMPLE_KEYS:
            yield warning(
                f"unknown key `{prefix}{key}`",
                f"remove it: {wording.holder} holds messages, tools, parallel_tool_calls and the "
                "deprecated functions",
            )
    parallel = data.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        yield error(
            f"`{prefix}parallel_tool_calls` is {json_type(parallel)}, not a boolean",
            "use true or false",
        )


# --- tools -----------------------------------------------------------------------------------


def tools_format(example: Example, context: Context) -> Iterator[Finding]:
    """`tools` and `functions` are arrays, not both; `functions` is deprecated; at most 128."""
    data, prefix = example.data, example.prefix
    for key in ("tools", "functions"):
        value = data.get(key)
        if value is not None and not isinstance(value, list):
            yield error(
                f"`{prefix}{key}` is {json_type(value)}, not an array",
                f"make `{prefix}{key}` a list",
            )
        elif isinstance(value, list) and len(value) > MAX_TOOLS:
            yield error(
                f"`{prefix}{key}` has {len(value)} entries; at most {MAX_TOOLS} are allowed",
                "offer fewer functions in one example",
            )
    if data.get("tools") is not None and data.get("functions") is not None:
        yield error(
            f"has both `{prefix}tools` and the legacy `{prefix}functions`",
            f"keep one: {CONVERT_LEGACY}",
        )
    if example.legacy:
        yield warning(
            "uses the deprecated `functions` format (functions, function_call, role function)",
            f"{CONVERT_LEGACY}; the proxy serves fine-tuned models with tools",
        )


def tool_definitions(example: Example, context: Context) -> Iterator[Finding]:
    """Each tool a function tool with a valid name, description and JSON Schema; no duplicates."""
    tools = example.data.get("tools")
    if isinstance(tools, list):
        for index, tool in enumerate(tools):
            yield from _tool_wrapper(tool, f"{example.prefix}tools[{index}]")
    for definition in example.definitions:
        if not isinstance(definition.function, dict):
            yield error(
                f"{definition.path} is {json_type(definition.function)}, not an object",
                _DEFINITION,
            )
            continue
        yield from _definition_once(definition, context)
        first = example.functions.get(definition.name) if definition.name else None
        if first is not None and first is not definition:
            yield error(
                f"{definition.path}: `{definition.name}` is defined twice ({first.path} and "
                f"{definition.path})",
                "keep one definition per function",
            )


_DEFINITION = '{"type": "function", "function": {"name", "description", "parameters"}}'
MAX_SOUND_DEFINITIONS = 1024
MAX_SOUND_DEFINITION_BYTES = 16 * 1024  # a larger one is checked each time: memory stays small


def _definition_once(definition: Definition, context: Context) -> Iterator[Finding]:
    """A definition's findings, skipped for one found sound before."""
    key = definition.serialized
    if key is not None and key in context.sound_definitions:
        return
    findings = list(_function_definition(definition, context))
    yield from findings
    if key is not None and not findings and len(key) <= MAX_SOUND_DEFINITION_BYTES:
        if len(context.sound_definitions) >= MAX_SOUND_DEFINITIONS:
            context.sound_definitions.clear()
        context.sound_definitions.add(key)


def _tool_wrapper(tool: Any, path: str) -> Iterator[Finding]:
    if isinstance(tool, dict) and tool.get("type") == "function":
        return
    if not isinstance(tool, dict):
        yield error(f"{path} is {json_type(tool)}, not an object", f"write it as {_DEFINITION}")
    elif tool.get("type") != "function":
        kind = tool.get("type")
        yield error(
            f"{path}: type is {shown(kind)}; fine-tuning examples take function tools only",
            f'write it as {_DEFINITION}, with "type": "function"',
        )


def _function_definition(definition: Definition, context: Context) -> Iterator[Finding]:
    function: dict[str, Any] = definition.function
    name = function.get("name")
    if not isinstance(name, str):
        yield error(f"{definition.path} has no name", "give the function a name")
    elif not FUNCTION_NAME.fullmatch(name):
        yield error(
            f"{definition.path}: name `{name}` is not valid",
            "use letters, digits, _ and -, at most 64 characters",
        )
    description = function.get("description")
    if description is not None and not isinstance(description, str):
        yield error(
            f"{definition.path}.description is {json_type(description)}, not a string",
            "write the description as a string",
        )
    parameters = function.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        yield error(
            f"{definition.path}.parameters is {json_type(parameters)}, not an object",
            'write a JSON Schema: {"type": "object", "properties": {...}}',
        )
    problem = context.schemas.problem(definition)
    if problem is not None:
        yield error(
            f"{definition.path}.parameters is not a valid JSON Schema: {problem}",
            "correct the schema",
        )


def shown(value: Any) -> str:
    return f"`{value}`" if isinstance(value, str) else json_type(value)


# --- messages --------------------------------------------------------------------------------


def message_roles(example: Example, context: Context) -> Iterator[Finding]:
    """Every message an object with a valid role, the content its role needs, no unknown keys."""
    for index, message in enumerate(example.messages):
        if not isinstance(message, dict):
            yield error(
                f"{where(example, index)} is {json_type(message)}, not an object",
                'write it as {"role": ..., "content": ...}',
            )
            continue
        role = message.get("role")
        if role is None:
            yield error(
                f"{where(example, index)} has no role",
                f"set role to one of {', '.join(ROLES[:5])}",
            )
        elif role not in ROLES:
            yield error(
                f"{where(example, index)}: role {shown(role)} is not a valid role",
                f"use one of {', '.join(ROLES[:5])}",
            )
        elif not _plain(message, role):
            yield from _content(example, index, message, role)
            yield from _unknown_keys(example, index, message, role)


def _plain(message: dict[str, Any], role: str) -> bool:
    """The common case (string content, known keys), decided without building any finding."""
    return isinstance(message.get("content"), str) and message.keys() <= MESSAGE_KEYS[role]


def _content(example: Example, index: int, message: dict[str, Any], role: str) -> Iterator[Finding]:
    content = message.get("content")
    if role == "assistant":
        if content is None and not message.get("tool_calls") and not message.get("function_call"):
            yield error(
                f"{where(example, index)} has neither content nor tool_calls",
                "give the assistant's reply as content, or its calls as tool_calls",
            )
        elif content is not None and not isinstance(content, str | list):
            yield error(
                f"{where(example, index)}: content is {json_type(content)}", "make it a string"
            )
    elif role in ("tool", "function"):
        if not isinstance(content, str):
            yield error(
                f"{where(example, index)}: content is {json_type(content)}, not a string",
                "put the tool's result in one string; the fine-tuning validator rejects "
                "content parts in tool messages",
            )
    elif content is None:
        yield error(f"{where(example, index)} has no content", f"give the {role} message's text")
    elif not isinstance(content, str | list):
        yield error(
            f"{where(example, index)}: content is {json_type(content)}, not a string",
            f"give the {role} message's text as a string",
        )


def _unknown_keys(
    example: Example, index: int, message: dict[str, Any], role: str
) -> Iterator[Finding]:
    allowed = MESSAGE_KEYS[role]
    if message.keys() <= allowed:
        return  # the common case, checked without a loop
    for key in message:
        if key not in allowed and key != "weight":
            yield warning(
                f"{where(example, index)}: unknown key `{key}`",
                f"remove it; a {role} message holds {', '.join(sorted(allowed))}",
            )


def weights(example: Example, context: Context) -> Iterator[Finding]:
    """`weight` only on assistant messages, only 0 or 1; and something left to train (chat)."""
    trained = 0
    for index, message in enumerate(example.messages):
        if not isinstance(message, dict):
            continue
        is_assistant = message.get("role") == "assistant"
        trained += is_assistant and message.get("weight", 1) != 0
        if "weight" not in message:
            continue
        weight = message["weight"]
        if not is_assistant:
            yield error(
                f"{where(example, index)} has `weight`; only assistant messages take one",
                "remove it: only assistant messages are trained, the others are context",
            )
        elif type(weight) is not int or weight not in (0, 1):
            yield error(
                f"{where(example, index)}: weight is {_value(weight)}; it must be 0 or 1",
                "weight 1, the default, trains on the message; 0 keeps it as context only",
            )
    if trained == 0 and "assistant" in example.roles:
        yield warning(
            "every assistant message has weight 0: the example trains nothing",
            "set weight 1, or remove weight, on the turns the model should learn",
        )


def _value(value: Any) -> str:
    text = repr(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    return text or json_type(value)


def ends_with_assistant(example: Example, context: Context) -> Iterator[Finding]:
    """The last message is the assistant's: only assistant messages are trained (chat)."""
    last = len(example.messages) - 1
    if example.roles[last] != "assistant":
        yield error(
            f"the example ends with {where(example, last)}, not an assistant message",
            "add the assistant's reply, or remove the messages after the last one",
        )


def token_limit(example: Example, context: Context) -> Iterator[Finding]:
    """An example longer than the training context is cut from the end."""
    tokens = example.estimated_tokens
    if tokens > context.max_tokens:
        yield warning(
            f"about {tokens:,} tokens (estimated at 4 bytes per token), over the "
            f"{context.max_tokens:,}-token limit: training truncates it from the end",
            "shorten or split the conversation, or pass --max-tokens for your base model",
        )
