"""The built-in fake model: deterministic chat answers, with no I/O.

A request dict goes in; a `chat.completion` dict or the list of `chat.completion.chunk`
dicts comes out. When tools are offered and the last message is the user's, the fake
calls the tool whose name and description share the most words with that message, with
arguments that fit the tool's schema; after tool results it answers in text that quotes
them; otherwise it answers in text. `usage.prompt_tokens` grows with the request's size,
so slimmed tool definitions show up as fewer prompt tokens.

The same request always gets the same answer, ids included (they are derived from the
request), so a streamed answer reassembles to exactly the non-streamed one. Only
`created` reads the clock.

How a request misbehaves (errors, delays, broken streams) is a `Behavior`, parsed from a
word in the model name or from the `x-mock-behavior` header by `parse_behavior`. The
transport side of the steering lives in `fake/server.py`.

`decide` is the one decision of the fake (an `Answer`, before any wire shape); the
Responses fake (`fake/responses.py`) converts its request to the chat form and renders the
same `Answer`, so both APIs answer a conversation alike.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

from proxy.errors import InvalidRequest
from proxy.jsonutil import dumps

STALL_MS = 60_000
"""How long `stall` and `stream-stall` stay silent unless a number follows them."""

DEFAULT_SLOW_MS = 100
"""The delay before each chunk (or before the answer) for a bare `slow`."""

PREFIX_CHUNKS = 3
"""How many chunks `stream-cut` and `stream-stall` send before they break."""

ARGUMENT_FRAGMENT_CHARS = 8
"""Streamed tool-call arguments arrive in fragments of this many characters, as from a model."""

LINGER_MS = 1000
"""How long `linger` keeps a stream's body open after its last event unless a number follows."""

HUGE_MB = 10
"""The size of a `huge` text answer, in MiB, unless a number follows the word."""

LONG_PIECE_CHARS = 64 * 1024
"""A text answer longer than this streams in pieces of this many characters, not word by word."""

SYSTEM_FINGERPRINT = "fp_mock"
MAX_QUOTED_CHARS = 200
CHARS_PER_TOKEN = 4

ToolMode = Literal["auto", "always", "never"]


@dataclass(frozen=True)
class Behavior:
    """How the fake answers one request (the steering); the default is a well-behaved model."""

    delay_ms: int = 0
    """`slow[-MS]`: a delay before each streamed chunk, or before a non-streamed answer."""
    error_status: int | None = None
    """`error-STATUS`: answer that status with an OpenAI error body."""
    tool_mode: ToolMode = "auto"
    """`tool`: always call a tool when any is offered; `text`: never call one."""
    parallel: bool = False
    """`parallel`: call the two best-matching tools at once, whatever `parallel_tool_calls` says."""
    invalid_args: bool = False
    """`invalid-args`: tool-call arguments that parse but lack a required property."""
    bad_json: bool = False
    """`bad-json`: a 200 whose body (or stream event) is not JSON."""
    stall_ms: int = 0
    """`stall[-MS]`: silence before the status line and headers."""
    stream_cut: bool = False
    """`stream-cut`: a few chunks, then the connection drops without `[DONE]`."""
    stream_stall_ms: int = 0
    """`stream-stall[-MS]`: a few chunks (half a non-streamed body), then silence, then the rest."""
    reset: bool = False
    """`reset`: the connection drops before the status line: no byte of an answer."""
    malformed_json: bool = False
    """`malformed-json`: a 200 whose JSON body (or one stream event) is cut short."""
    answer_mb: int = 0
    """`huge[-MB]`: a text answer of that many MiB (default `HUGE_MB`)."""
    leaky_headers: bool = False
    """`leaky-headers`: answers also carry headers no client should see (`set-cookie`, ...)."""
    stream_error: bool = False
    """`stream-error`: a few chunks, then an OpenAI error event in place of the rest."""
    linger_ms: int = 0
    """`linger[-MS]`: a stream's body stays open that long after its last event (`[DONE]`)
    before it ends, as a server that flushes the event and closes the body later."""


# One steering word, optionally followed by a number: `error-429`, `slow-20`, `stall`.
# The alternation lists `stream-stall` before `stall` so the longer word wins.
_STEERING_WORD = re.compile(
    r"(?<![a-z0-9])"
    r"(slow|error|stream-cut|stream-stall|stall|tool|text|parallel|invalid-args|bad-json"
    r"|malformed-json|reset|huge|leaky-headers|stream-error|linger)"
    r"(?:-(\d+))?(?![a-z0-9])"
)
# Words that switch one flag of `Behavior` on.
_FLAG_WORDS = {
    "stream-cut": "stream_cut",
    "parallel": "parallel",
    "invalid-args": "invalid_args",
    "bad-json": "bad_json",
    "malformed-json": "malformed_json",
    "reset": "reset",
    "leaky-headers": "leaky_headers",
    "stream-error": "stream_error",
}


def parse_behavior(model: str, header: str | None) -> Behavior:
    """The steering of one request: words in the model name, then in the header.

    Words may be separated by any punctuation (`ft-error-429`, `ft_slow_20`,
    `x-mock-behavior: slow-10, tool`); where both name the same setting the header wins.
    Unknown words are ignored, so ordinary model names steer nothing.
    """
    behavior = Behavior()
    for text in (model, header or ""):
        normalised = "-".join(re.findall(r"[a-z0-9]+", text.lower()))
        for word, number in _STEERING_WORD.findall(normalised):
            behavior = _apply_word(behavior, word, int(number) if number else None)
    return behavior


def _apply_word(behavior: Behavior, word: str, number: int | None) -> Behavior:
    match word:
        case "slow":
            return replace(behavior, delay_ms=DEFAULT_SLOW_MS if number is None else number)
        case "error":
            valid = number is not None and 400 <= number <= 599
            return replace(behavior, error_status=number if valid else 500)
        case "stall":
            return replace(behavior, stall_ms=STALL_MS if number is None else number)
        case "stream-stall":
            return replace(behavior, stream_stall_ms=STALL_MS if number is None else number)
        case "linger":
            return replace(behavior, linger_ms=LINGER_MS if number is None else number)
        case "huge":
            return replace(behavior, answer_mb=HUGE_MB if number is None else number)
        case "tool":
            return replace(behavior, tool_mode="always")
        case "text":
            return replace(behavior, tool_mode="never")
        case _:  # a flag word
            flag: dict[str, Any] = {_FLAG_WORDS[word]: True}
            return replace(behavior, **flag)


# ---------------------------------------------------------------------------
# Request checks: the few 400s a real OpenAI endpoint gives that a proxy could cause


def find_request_error(body: dict[str, Any]) -> InvalidRequest | None:
    """The 400 that OpenAI would answer to this body, for the mistakes a proxy could make.

    Checked: `model` and `messages` present; `tool_choice` and `parallel_tool_calls` only
    with `tools` (and `function_call` only with `functions`); a named tool choice among the
    tools; `stream_options` only with `stream`. Everything else is accepted as sent.
    """
    for check in _REQUEST_CHECKS:
        problem = check(body)
        if problem is not None:
            return problem
    return None


def _check_model(body: dict[str, Any]) -> InvalidRequest | None:
    if isinstance(body.get("model"), str) and body["model"]:
        return None
    return InvalidRequest("you must provide a model parameter", param="model")


def _check_messages(body: dict[str, Any]) -> InvalidRequest | None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return InvalidRequest(
            "Invalid 'messages': expected a non-empty array of messages.", param="messages"
        )
    for position, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return InvalidRequest(
                f"Invalid 'messages[{position}]': expected an object with a 'role'.",
                param=f"messages[{position}]",
            )
    return None


def _check_tool_fields(body: dict[str, Any]) -> InvalidRequest | None:
    for owner, dependants in (
        ("tools", ("tool_choice", "parallel_tool_calls")),
        ("functions", ("function_call",)),
    ):
        for name in dependants:
            if name in body and not body.get(owner):
                return InvalidRequest(
                    f"Invalid value for '{name}': '{name}' is only allowed when "
                    f"'{owner}' are specified.",
                    param=name,
                )
    return None


def _check_named_choice(body: dict[str, Any]) -> InvalidRequest | None:
    missing, legacy = chosen_but_not_offered(body)
    if not missing:
        return None
    param = "function_call" if legacy else "tool_choice"
    return InvalidRequest(
        f"Invalid value for '{param}': function '{missing[0]}' was not found in the offered "
        f"{'functions' if legacy else 'tools'}.",
        param=param,
    )


def chosen_but_not_offered(body: dict[str, Any]) -> tuple[list[str], bool]:
    """The functions a named or `allowed_tools` choice asks for that are not offered (sorted),
    and whether the request used the legacy `functions` form."""
    functions, legacy = _offered_functions(body)
    choice = _tool_choice(body, legacy)
    offered = {function["name"] for function in functions}
    return sorted((choice.names or frozenset()) - offered), legacy


def _check_stream_options(body: dict[str, Any]) -> InvalidRequest | None:
    if body.get("stream_options") is not None and not body.get("stream"):
        return InvalidRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )
    return None


_REQUEST_CHECKS: tuple[Callable[[dict[str, Any]], InvalidRequest | None], ...] = (
    _check_model,
    _check_messages,
    _check_tool_fields,
    _check_named_choice,
    _check_stream_options,
)


# ---------------------------------------------------------------------------
# Deciding the answer


@dataclass(frozen=True)
class Call:
    """One tool call the fake decided on; `arguments` is the JSON text, as models send it."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Answer:
    """What the fake answers, before any wire shape: the chat and Responses fakes render it."""

    content: str | None
    calls: tuple[Call, ...]
    legacy: bool
    """Answer with `function_call` (the request used `functions`) rather than `tool_calls`."""
    finish_reason: str


@dataclass(frozen=True)
class _ToolChoice:
    mode: Literal["auto", "none", "required"]
    names: frozenset[str] | None = None
    """The functions the choice allows; None means every offered one."""


def _offered_functions(body: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """The function definitions offered, and whether they came in the legacy `functions` form.

    Only well-formed function tools count; custom tools are never called by the fake.
    """
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        kept = [
            tool["function"]
            for tool in tools
            if isinstance(tool, dict)
            and tool.get("type") == "function"
            and _is_named(tool.get("function"))
        ]
        return kept, False
    functions = body.get("functions")
    if isinstance(functions, list) and functions:
        return [function for function in functions if _is_named(function)], True
    return [], False


def _is_named(definition: Any) -> bool:
    return isinstance(definition, dict) and isinstance(definition.get("name"), str)


def _tool_choice(body: dict[str, Any], legacy: bool) -> _ToolChoice:
    raw = body.get("function_call" if legacy else "tool_choice")
    if raw in ("none", "auto", "required"):
        return _ToolChoice(mode=raw)
    if not isinstance(raw, dict):
        return _ToolChoice(mode="auto")
    if legacy or raw.get("type") == "function":
        named = raw if legacy else raw.get("function")
        name = named.get("name") if isinstance(named, dict) else None
        return _ToolChoice(mode="required", names=frozenset([name]) if name else None)
    if raw.get("type") == "allowed_tools":
        return _allowed_tools_choice(raw.get("allowed_tools"))
    return _ToolChoice(mode="auto")


def _allowed_tools_choice(allowed: Any) -> _ToolChoice:
    if not isinstance(allowed, dict):
        return _ToolChoice(mode="auto")
    names = {
        tool["function"]["name"]
        for tool in allowed.get("tools") or []
        if isinstance(tool, dict) and _is_named(tool.get("function"))
    }
    if allowed.get("mode") == "required":
        return _ToolChoice(mode="required", names=frozenset(names))
    return _ToolChoice(mode="auto", names=frozenset(names))


def decide(body: dict[str, Any], behavior: Behavior) -> Answer:
    """The fake's answer to a chat request: which tools it calls, or the text it writes."""
    functions, legacy = _offered_functions(body)
    choice = _tool_choice(body, legacy)
    candidates = [f for f in functions if choice.names is None or f["name"] in choice.names]
    messages = _messages(body)
    if candidates and _should_call(choice, _last_role(messages), behavior):
        calls = _calls(body, candidates, legacy, behavior)
        return Answer(
            content=None,
            calls=calls,
            legacy=legacy,
            finish_reason="function_call" if legacy else "tool_calls",
        )
    if behavior.answer_mb > 0:
        return Answer(_filler(behavior.answer_mb * 1024 * 1024), (), legacy, "stop")
    return _text_answer(body, messages, legacy)


def _filler(size: int) -> str:
    sentence = "All work and no play makes a very long answer. "
    return (sentence * (size // len(sentence) + 1))[:size]


def _should_call(choice: _ToolChoice, last_role: str | None, behavior: Behavior) -> bool:
    if behavior.tool_mode != "auto":
        return behavior.tool_mode == "always"
    if choice.mode != "auto":
        return choice.mode == "required"
    return last_role == "user"


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return []
    return [message for message in messages if isinstance(message, dict)]


def _last_role(messages: list[dict[str, Any]]) -> str | None:
    return messages[-1].get("role") if messages else None


def _calls(
    body: dict[str, Any], candidates: list[dict[str, Any]], legacy: bool, behavior: Behavior
) -> tuple[Call, ...]:
    user_text = _last_user_text(_messages(body))
    count = 2 if behavior.parallel and not legacy else 1
    chosen = _best_matches(candidates, user_text, count)
    digest = request_digest(body)
    return tuple(
        Call(
            id=f"call_{short_hash(f'{digest}:{index}', 24)}",
            name=function["name"],
            arguments=_arguments(function, user_text, behavior),
        )
        for index, function in enumerate(chosen)
    )


def _text_answer(body: dict[str, Any], messages: list[dict[str, Any]], legacy: bool) -> Answer:
    results = _trailing_tool_results(messages)
    if results:
        content = "Here is what the tools returned: " + "; ".join(
            f'{name} said "{output}"' for name, output in results
        )
    else:
        content = f'This is the mock model answering: "{_quote(_last_user_text(messages))}"'
    content = _formatted(body, content)
    limit = _max_tokens(body)
    if limit is not None and len(content) > limit * CHARS_PER_TOKEN:
        return Answer(content[: limit * CHARS_PER_TOKEN], (), legacy, "length")
    return Answer(content=content, calls=(), legacy=legacy, finish_reason="stop")


def _formatted(body: dict[str, Any], text: str) -> str:
    """The text answer in the shape `response_format` asks for."""
    response_format = body.get("response_format")
    if not isinstance(response_format, dict):
        return text
    if response_format.get("type") == "json_object":
        return dumps({"answer": text}).decode()
    json_schema = response_format.get("json_schema")
    if response_format.get("type") == "json_schema" and isinstance(json_schema, dict):
        schema = json_schema.get("schema", {})
        return dumps(_example_value(schema, _Hints.from_text(text), schema)).decode()
    return text


def _max_tokens(body: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _quote(text: str) -> str:
    return text if len(text) <= MAX_QUOTED_CHARS else text[:MAX_QUOTED_CHARS] + "…"


def _trailing_tool_results(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(function name, output) of the tool or function messages that end the conversation."""
    names_by_call_id = {
        call.get("id"): call["function"]["name"]
        for message in messages
        if message.get("role") == "assistant"
        for call in message.get("tool_calls") or []
        if isinstance(call, dict) and _is_named(call.get("function"))
    }
    results: list[tuple[str, str]] = []
    for message in reversed(messages):
        role = message.get("role")
        if role == "tool":
            name = names_by_call_id.get(message.get("tool_call_id"), "tool")
        elif role == "function":
            name = str(message.get("name", "function"))
        else:
            break
        results.append((str(name), _quote(_text_of(message.get("content")))))
    return results[::-1]


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _text_of(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return "" if content is None else dumps(content).decode()


# ---------------------------------------------------------------------------
# Choosing the tool: shared words between the user's message and name + description

# Words too common to say anything about which tool the user wants.
# (A word list reads better as one string than as fifty quoted items.)
_STOPWORDS = frozenset(
    (  # noqa: SIM905
        "a an and are as at be by can could do does for from get give how i in is it its me my "
        "of on or please s set show tell that the this to up use was what whats when where which "
        "who why will with would you your"
    ).split()
)


def _words(text: str) -> set[str]:
    """Lowercase content words; `lookup_order`, `lookup-order` and `lookupOrder` all split."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text)
    return {
        _singular(word)
        for word in re.findall(r"[a-z0-9]+", spaced.lower())
        if word not in _STOPWORDS
    }


def _singular(word: str) -> str:
    # "orders" should match "order"; the crude rule is applied to both sides alike.
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def _function_words(function: dict[str, Any]) -> set[str]:
    description = function.get("description")
    return _words(function["name"]) | _words(description if isinstance(description, str) else "")


def _best_matches(
    candidates: list[dict[str, Any]], user_text: str, count: int
) -> list[dict[str, Any]]:
    """The `count` functions sharing the most words with the message; ties go to the first."""
    message_words = _words(user_text)
    ranked = sorted(
        candidates, key=lambda function: -len(_function_words(function) & message_words)
    )
    return ranked[:count]


# ---------------------------------------------------------------------------
# Arguments that fit a JSON schema


@dataclass(frozen=True)
class _Hints:
    """What the user's message offers for argument values."""

    word: str = "example"
    number: int | None = None

    @classmethod
    def from_text(cls, text: str, skip: frozenset[str] = frozenset()) -> _Hints:
        # The last content word is usually the object of the request ("… in Paris",
        # "… order 12345"), and words of the tool's own name are not values.
        tokens = re.findall(r"[A-Za-z0-9][A-Za-z0-9.@_-]*", text)
        content = [token for token in tokens if not (_words(token) <= skip)]
        numbers = [int(token) for token in tokens if token.isdigit() and len(token) < 16]
        return cls(
            word=content[-1] if content else "example",
            number=numbers[0] if numbers else None,
        )


def _arguments(function: dict[str, Any], user_text: str, behavior: Behavior) -> str:
    schema = function.get("parameters")
    if not isinstance(schema, dict):
        schema = {}
    hints = _Hints.from_text(user_text, skip=frozenset(_function_words(function)))
    arguments = _example_value({"type": "object", **schema}, hints, schema)
    if behavior.invalid_args and isinstance(arguments, dict):
        arguments = _without_first_required(arguments, schema)
    return dumps(arguments).decode()


def _without_first_required(arguments: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Valid JSON that breaks the schema; a schema with nothing required cannot be broken so."""
    required = [name for name in schema.get("required") or [] if name in arguments]
    return {key: value for key, value in arguments.items() if required[:1] != [key]}


MAX_SCHEMA_DEPTH = 12


def _example_value(schema: Any, hints: _Hints, root: Any, depth: int = 0) -> Any:
    """A simple value valid against `schema` (a JSON Schema as tools use it).

    enum/const give their first value, anyOf/oneOf their first non-null branch, objects
    their required properties, strings a word of the message (or a value for the format),
    numbers the message's first number when it fits the bounds, else 1 or a value near them.
    Local `$ref`s (`#/$defs/…`, `#/definitions/…`) are followed against `root`.
    """
    if depth > MAX_SCHEMA_DEPTH or not isinstance(schema, dict):
        return hints.word
    schema = _resolve_ref(schema, root)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for combinator in ("anyOf", "oneOf"):
        branches = schema.get(combinator)
        if isinstance(branches, list) and branches:
            return _example_value(_first_non_null(branches, root), hints, root, depth + 1)
    if isinstance(schema.get("allOf"), list):
        schema = _merged_all_of(schema, root)
    builder = _VALUE_BUILDERS.get(_schema_type(schema), _string_value)
    return builder(schema, hints, root, depth)


def _resolve_ref(schema: dict[str, Any], root: Any) -> dict[str, Any]:
    reference = schema.get("$ref")
    if not isinstance(reference, str) or not reference.startswith("#/"):
        return schema
    target: Any = root
    for part in reference[2:].split("/"):
        target = target.get(part) if isinstance(target, dict) else None
    return target if isinstance(target, dict) else {}


def _first_non_null(branches: list[Any], root: Any) -> Any:
    for branch in branches:
        if not (isinstance(branch, dict) and _resolve_ref(branch, root).get("type") == "null"):
            return branch
    return branches[0]


def _merged_all_of(schema: dict[str, Any], root: Any) -> dict[str, Any]:
    """allOf's parts folded into one schema: properties and required lists are united."""
    merged = {key: value for key, value in schema.items() if key != "allOf"}
    for part in schema["allOf"]:
        part = _resolve_ref(part, root) if isinstance(part, dict) else {}
        for key, value in part.items():
            if key == "properties" and isinstance(value, dict):
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required" and isinstance(value, list):
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged


def _schema_type(schema: dict[str, Any]) -> str:
    declared = schema.get("type")
    if isinstance(declared, list):
        declared = next((kind for kind in declared if kind != "null"), "null")
    if isinstance(declared, str):
        return declared
    if "properties" in schema or "required" in schema:
        return "object"
    return "array" if "items" in schema else "string"


def _object_value(schema: dict[str, Any], hints: _Hints, root: Any, depth: int) -> Any:
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    listed = schema.get("required")
    # A client's schema is anything: `required` that is not a list names nothing.
    listed = listed if isinstance(listed, list) else []
    required = [name for name in listed if isinstance(name, str)]
    return {
        name: _example_value(properties.get(name, {}), hints, root, depth + 1) for name in required
    }


def _array_value(schema: dict[str, Any], hints: _Hints, root: Any, depth: int) -> Any:
    items = schema.get("items")
    if not isinstance(items, dict):
        return []
    count = max(_int_keyword(schema, "minItems", 1), 1)
    maximum = _int_keyword(schema, "maxItems", count)
    return [_example_value(items, hints, root, depth + 1) for _ in range(min(count, maximum))]


_FORMAT_EXAMPLES = {
    "date": "2025-01-01",
    "date-time": "2025-01-01T12:00:00Z",
    "time": "12:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com",
    "url": "https://example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def _string_value(schema: dict[str, Any], hints: _Hints, root: Any, depth: int) -> Any:
    value = _FORMAT_EXAMPLES.get(str(schema.get("format")), hints.word)
    minimum = _int_keyword(schema, "minLength", 0)
    maximum = _int_keyword(schema, "maxLength", max(len(value), minimum))
    return value.ljust(minimum, "x")[:maximum]


def _number_value(schema: dict[str, Any], hints: _Hints, root: Any, depth: int) -> Any:
    integer = _schema_type(schema) == "integer"
    for candidate in (hints.number, 1, *_numbers_near_bounds(schema, integer)):
        if candidate is not None and _within_bounds(candidate, schema):
            return candidate
    return 1  # no value fits (e.g. an empty integer range): any number will do


def _numbers_near_bounds(schema: dict[str, Any], integer: bool) -> list[int | float]:
    """Values at, beside and between the bounds; `_within_bounds` picks one that fits."""
    lows = [schema[key] for key in ("minimum", "exclusiveMinimum") if _is_number(schema.get(key))]
    highs = [schema[key] for key in ("maximum", "exclusiveMaximum") if _is_number(schema.get(key))]
    values: list[int | float] = []
    for low in lows:
        values += [low, low + 1] + [(low + high) / 2 for high in highs]
    for high in highs:
        values += [high, high - 1]
    return [math.floor(value) + step for value in values for step in (0, 1)] if integer else values


def _within_bounds(value: int | float, schema: dict[str, Any]) -> bool:
    bound: dict[str, int | float] = {
        key: schema[key] for key in _BOUND_KEYWORDS if _is_number(schema.get(key))
    }
    return (
        value >= bound.get("minimum", value)
        and value > bound.get("exclusiveMinimum", value - 1)
        and value <= bound.get("maximum", value)
        and value < bound.get("exclusiveMaximum", value + 1)
    )


_BOUND_KEYWORDS = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int_keyword(schema: dict[str, Any], key: str, default: int) -> int:
    value = schema.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _constant(value: Any) -> Callable[[dict[str, Any], _Hints, Any, int], Any]:
    return lambda schema, hints, root, depth: value


_VALUE_BUILDERS: dict[str, Callable[[dict[str, Any], _Hints, Any, int], Any]] = {
    "object": _object_value,
    "array": _array_value,
    "string": _string_value,
    "integer": _number_value,
    "number": _number_value,
    "boolean": _constant(True),
    "null": _constant(None),
}


# ---------------------------------------------------------------------------
# Wire shapes


def complete(body: dict[str, Any], behavior: Behavior) -> dict[str, Any]:
    """The `chat.completion` the fake answers to `body`."""
    answer = decide(body, behavior)
    return {
        **_envelope(body, "chat.completion"),
        "choices": [
            {
                "index": 0,
                "message": _message(answer),
                "logprobs": None,
                "finish_reason": answer.finish_reason,
            }
        ],
        "usage": _usage(body, answer),
    }


def stream_chunks(body: dict[str, Any], behavior: Behavior) -> list[dict[str, Any]]:
    """The `chat.completion.chunk` objects of the streamed answer, in order, without `[DONE]`.

    A role chunk, content or tool-call deltas, a chunk with `finish_reason`, then the usage
    chunk (with `choices: []`) only when `stream_options.include_usage` is true; in that
    case every other chunk carries `"usage": null`, as OpenAI's do.
    """
    answer = decide(body, behavior)
    envelope = _envelope(body, "chat.completion.chunk")
    include_usage = _include_usage(body)
    steps: list[tuple[dict[str, Any], str | None]] = [(delta, None) for delta in _deltas(answer)]
    steps.append(({}, answer.finish_reason))
    chunks = []
    for delta, finish_reason in steps:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        chunk = {**envelope, "choices": [choice]}
        if include_usage:
            chunk["usage"] = None
        chunks.append(chunk)
    if include_usage:
        chunks.append({**envelope, "choices": [], "usage": _usage(body, answer)})
    return chunks


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _envelope(body: dict[str, Any], kind: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-mock{short_hash(request_digest(body), 20)}",
        "object": kind,
        "created": int(time.time()),
        "model": body.get("model", ""),
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def _message(answer: Answer) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": answer.content,
        "refusal": None,
        "annotations": [],
    }
    if answer.legacy and answer.calls:
        call = answer.calls[0]
        message["function_call"] = {"name": call.name, "arguments": call.arguments}
    elif answer.calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in answer.calls
        ]
    return message


def _deltas(answer: Answer) -> list[dict[str, Any]]:
    if answer.legacy and answer.calls:
        return list(_legacy_call_deltas(answer.calls[0]))
    if answer.calls:
        return list(_tool_call_deltas(answer.calls))
    return [
        {"role": "assistant", "content": "", "refusal": None},
        *({"content": piece} for piece in text_pieces(answer.content or "")),
    ]


def text_pieces(content: str) -> list[str]:
    """A text answer as it streams: word by word, or in long pieces when it is long."""
    if len(content) > LONG_PIECE_CHARS:
        return [
            content[start : start + LONG_PIECE_CHARS]
            for start in range(0, len(content), LONG_PIECE_CHARS)
        ]
    return re.findall(r"\S+\s*|\s+", content)


def _tool_call_deltas(calls: tuple[Call, ...]) -> Iterator[dict[str, Any]]:
    # As OpenAI streams them: `id`, `type` and `name` only in the first delta of each index.
    yield {"role": "assistant", "content": None}
    for index, call in enumerate(calls):
        opening = {
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        yield {"tool_calls": [opening]}
        for fragment in argument_fragments(call.arguments):
            yield {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}


def _legacy_call_deltas(call: Call) -> Iterator[dict[str, Any]]:
    yield {
        "role": "assistant",
        "content": None,
        "function_call": {"name": call.name, "arguments": ""},
    }
    for fragment in argument_fragments(call.arguments):
        yield {"function_call": {"arguments": fragment}}


def argument_fragments(text: str) -> list[str]:
    """Tool-call arguments as they stream, in fragments of `ARGUMENT_FRAGMENT_CHARS`."""
    size = ARGUMENT_FRAGMENT_CHARS
    return [text[start : start + size] for start in range(0, len(text), size)]


def _usage(body: dict[str, Any], answer: Answer) -> dict[str, Any]:
    prompt_tokens, completion_tokens = token_counts(body, answer)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def token_counts(body: dict[str, Any], answer: Answer) -> tuple[int, int]:
    """(prompt, completion) tokens, estimated from the sizes of the request and the answer."""
    prompt = {key: body[key] for key in ("messages", "tools", "functions") if key in body}
    answered = (answer.content or "") + "".join(call.name + call.arguments for call in answer.calls)
    return _estimate_tokens(len(dumps(prompt))), _estimate_tokens(len(answered.encode()))


def _estimate_tokens(size_in_bytes: int) -> int:
    return max(1, size_in_bytes // CHARS_PER_TOKEN)


def request_digest(body: dict[str, Any]) -> str:
    """A hash of the request, from which the answer's ids are derived."""
    # Streaming fields are left out so that a request gets the same ids streamed or not.
    asked = {key: value for key, value in body.items() if key not in _STREAM_FIELDS}
    return hashlib.sha256(dumps(asked)).hexdigest()


_STREAM_FIELDS = frozenset({"stream", "stream_options"})


def short_hash(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]
