"""The bridge's request translation: a Responses request → the chat request that asks the
same, or a 400 naming the first field chat cannot carry (see the package docstring).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from proxy import jsonutil
from proxy.bridge.types import Body
from proxy.errors import InvalidRequest
from proxy.jsonutil import JsonList

# Fields a chat request has under the same name and with the same meaning.
_COPIED = (
    "temperature",
    "top_p",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "service_tier",
    "logit_bias",
)
# Fields translated by their own function below, or answered by the bridge itself.
_TRANSLATED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "max_output_tokens",
        "reasoning",
        "text",
        "stream",
        "stream_options",
        "metadata",
    }
)
# Fields accepted only at the value that asks nothing of a stateless chat upstream.
_DEFAULT_ONLY: dict[str, tuple[Any, str]] = {
    "store": (False, "the upstream stores no responses; send `store: false`"),
    "background": (False, "the upstream answers in the foreground only"),
    "truncation": ("disabled", "the upstream does not truncate a conversation"),
}
_STATELESS = "the upstream keeps no conversations: send the whole conversation in `input`"
_OPENAI_ONLY = "an option of OpenAI's own service"
# Fields a chat upstream has no way to honour.
_NOT_CARRIED: dict[str, str] = {
    "previous_response_id": _STATELESS,
    "conversation": _STATELESS,
    "context_management": _STATELESS,
    "prompt": "prompt templates are stored by OpenAI",
    "include": "the bridge adds nothing to the answer",
    "max_tool_calls": "chat has no cap on the number of tool calls",
    "top_logprobs": "the bridge does not return log probabilities",
    "moderation": _OPENAI_ONLY,
    "image": _OPENAI_ONLY,
    "prompt_cache_options": _OPENAI_ONLY,
    "background_options": _OPENAI_ONLY,
    "access_programs": _OPENAI_ONLY,
}
_CHAT_ROLE = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
# Keys of an item that describe a past answer (its id, its status) and ask nothing.
_BOOKKEEPING = ("id", "status")
# A tool's keys whose default asks nothing (a deferred or asynchronous tool would).
_INERT_TOOL_VALUES = {"defer_loading": False, "async": False}
# A parsed `tools` list (a `JsonList`) keeps its translation, as the rewrite engine does.
_MEMO_KEY = "bridge.chat_tools"


def responses_to_chat(body: Body) -> Body:
    """The chat request that asks what the Responses request `body` asks.

    Raises `InvalidRequest` naming the first field it cannot carry. `body` is not changed.
    """
    _refuse_what_chat_cannot_carry(body)
    chat: Body = {"model": body.get("model"), "messages": _messages(body)}
    chat.update(_tool_fields(body))
    chat.update((key, body[key]) for key in _COPIED if body.get(key) is not None)
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    chat.update(_reasoning_fields(body.get("reasoning")))
    chat.update(_text_fields(body.get("text")))
    chat.update(_stream_fields(body))
    return chat


def _refuse_what_chat_cannot_carry(body: Body) -> None:
    for key, value in body.items():
        if not _is_set(value) or key in _TRANSLATED or key in _COPIED:
            continue
        if key in _DEFAULT_ONLY:
            default, why = _DEFAULT_ONLY[key]
            if value != default:
                raise _unsupported(key, why)
        elif key in _NOT_CARRIED:
            raise _unsupported(key, _NOT_CARRIED[key])
        else:
            raise InvalidRequest(
                f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter"
            )


def _is_set(value: Any) -> bool:
    """Whether a field asks anything: `null` and empty lists are as good as absent."""
    return value is not None and value != []


def _messages(body: Body) -> list[Body]:
    messages: list[Body] = []
    if body.get("instructions") is not None:
        messages.append(
            {"role": "system", "content": _string(body["instructions"], "instructions")}
        )
    given = body.get("input")
    if isinstance(given, str):
        messages.append({"role": "user", "content": given})
    elif isinstance(given, list):
        for i, item in enumerate(given):
            _add_item(messages, item, f"input[{i}]")
    elif given is not None:
        raise _invalid_type("input", "a string or an array of input items")
    return messages


def _add_item(messages: list[Body], item: Any, path: str) -> None:
    item = _object(item, path)
    kind = item.get("type") or "message"  # an easy input message may leave it out
    translate = _ITEM_TRANSLATORS.get(kind)
    if translate is None:
        raise _unsupported(path, f"an input item of type `{kind}` has no chat form")
    translate(messages, item, path)


def _add_message(messages: list[Body], item: Body, path: str) -> None:
    _refuse_extra(item, ("type", "role", "content", *_BOOKKEEPING), path)
    role = item.get("role")
    if role not in _CHAT_ROLE:
        raise InvalidRequest(
            f"Invalid value for '{path}.role': expected one of {', '.join(_CHAT_ROLE)}.",
            param=f"{path}.role",
            code="invalid_value",
        )
    content = _message_content(item.get("content"), role, f"{path}.content")
    messages.append({"role": _CHAT_ROLE[role], "content": content})


def _message_content(content: Any, role: str, path: str) -> str | list[Body]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _invalid_type(path, "a string or an array of content parts")
    parts = []
    for j, part in enumerate(content):
        part_path = f"{path}[{j}]"
        part = _object(part, part_path)
        kind = part.get("type")
        translate, roles = _PART_TRANSLATORS.get(kind, (None, ()))
        if translate is None or role not in roles:
            raise _unsupported(part_path, f"a `{kind}` part has no chat form in a {role} message")
        parts.append(translate(part, part_path))
    return parts


def _text_part(part: Body, path: str) -> Body:
    # A past answer's annotations and logprobs describe it; the model is given its text.
    _refuse_extra(part, ("type", "text", "annotations", "logprobs"), path)
    return {"type": "text", "text": _string(part.get("text"), f"{path}.text")}


def _refusal_part(part: Body, path: str) -> Body:
    _refuse_extra(part, ("type", "refusal"), path)
    return {"type": "refusal", "refusal": _string(part.get("refusal"), f"{path}.refusal")}


def _image_part(part: Body, path: str) -> Body:
    if part.get("file_id") is not None:
        raise _unsupported(f"{path}.file_id", "chat takes an image by URL only")
    _refuse_extra(part, ("type", "image_url", "detail"), path)
    image: Body = {"url": _string(part.get("image_url"), f"{path}.image_url")}
    if part.get("detail") is not None:
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _file_part(part: Body, path: str) -> Body:
    if part.get("file_url") is not None:
        raise _unsupported(f"{path}.file_url", "chat takes a file by its data or id only")
    _refuse_extra(part, ("type", "file_data", "file_id", "filename"), path)
    keys = ("file_data", "file_id", "filename")
    file = {key: part[key] for key in keys if part.get(key) is not None}
    if "file_data" not in file and "file_id" not in file:
        raise _missing(f"{path}.file_data")
    return {"type": "file", "file": file}


_ALL_ROLES = tuple(_CHAT_ROLE)
_PART_TRANSLATORS: dict[Any, tuple[Callable[[Body, str], Body], tuple[str, ...]]] = {
    "input_text": (_text_part, _ALL_ROLES),
    "output_text": (_text_part, _ALL_ROLES),
    "refusal": (_refusal_part, ("assistant",)),
    "input_image": (_image_part, ("user",)),
    "input_file": (_file_part, ("user",)),
}


def _add_function_call(messages: list[Body], item: Body, path: str) -> None:
    _refuse_extra(item, ("type", "call_id", "name", "arguments", *_BOOKKEEPING), path)
    call = {
        "id": _string(item.get("call_id"), f"{path}.call_id"),
        "type": "function",
        "function": {
            "name": _string(item.get("name"), f"{path}.name"),
            "arguments": _string(item.get("arguments"), f"{path}.arguments"),
        },
    }
    previous = messages[-1] if messages else None
    # The calls of one model turn, and the text before them, are one chat message.
    if previous is not None and previous["role"] == "assistant":
        previous.setdefault("tool_calls", []).append(call)
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _add_function_call_output(messages: list[Body], item: Body, path: str) -> None:
    # `name` repeats what `call_id` already identifies.
    _refuse_extra(item, ("type", "call_id", "output", "name", *_BOOKKEEPING), path)
    messages.append(
        {
            "role": "tool",
            "tool_call_id": _string(item.get("call_id"), f"{path}.call_id"),
            "content": _tool_output(item.get("output"), f"{path}.output"),
        }
    )


def _tool_output(output: Any, path: str) -> str | list[Body]:
    """A call's output: a string, or text parts kept as chat text parts (the upstream joins
    them as its template does); chat's `tool` messages take no images or files."""
    if isinstance(output, str):
        return output
    if not isinstance(output, list):
        raise _invalid_type(path, "a string or an array of content parts")
    parts = []
    for j, part in enumerate(output):
        part = _object(part, f"{path}[{j}]")
        if part.get("type") != "input_text":
            raise _unsupported(f"{path}[{j}]", "a chat tool message carries text only")
        parts.append(_text_part(part, f"{path}[{j}]"))
    return parts


_ITEM_TRANSLATORS: dict[Any, Callable[[list[Body], Body, str], None]] = {
    "message": _add_message,
    "function_call": _add_function_call,
    "function_call_output": _add_function_call_output,
}


def _tool_fields(body: Body) -> Body:
    """`tools`, `tool_choice` and `parallel_tool_calls`. Without tools, `parallel_tool_calls`
    and a `none`/`auto` choice ask nothing, and chat servers refuse them: they are not sent."""
    has_tools = _is_set(body.get("tools"))
    fields: Body = {"tools": _chat_tools(body["tools"])} if has_tools else {}
    choice = body.get("tool_choice")
    if choice is not None and (has_tools or choice not in ("none", "auto")):
        fields["tool_choice"] = _chat_tool_choice(choice)
    if has_tools and body.get("parallel_tool_calls") is not None:
        fields["parallel_tool_calls"] = body["parallel_tool_calls"]
    return fields


def _chat_tools(tools: Any) -> list[Body]:
    if not isinstance(tools, list):
        raise _invalid_type("tools", "an array of tools")
    memo = tools.derived.get(_MEMO_KEY) if type(tools) is JsonList else None
    if memo is not None:
        return memo  # type: ignore[no-any-return]
    chat_tools = [_chat_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
    if type(tools) is JsonList:
        # Shared between requests like the list it comes from: its text is written once.
        chat_tools = JsonList(chat_tools, jsonutil.dumps(chat_tools))
        tools.derived[_MEMO_KEY] = chat_tools
    return chat_tools


def _chat_tool(tool: Any, path: str) -> Body:
    tool = _object(tool, path)
    if tool.get("type") != "function":
        raise _unsupported(path, f"a `{tool.get('type')}` tool has no chat form")
    allowed = ("type", "name", "description", "parameters", "strict")
    _refuse_extra(tool, allowed, path, inert=_INERT_TOOL_VALUES)
    function: Body = {"name": _string(tool.get("name"), f"{path}.name")}
    for key in allowed[2:]:
        if tool.get(key) is not None:
            function[key] = tool[key]
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: Any) -> Any:
    if choice in ("none", "auto", "required"):
        return choice
    choice = _object(choice, "tool_choice")
    kind = choice.get("type")
    if kind == "function":
        _refuse_extra(choice, ("type", "name"), "tool_choice")
        return _named_function(choice, "tool_choice")
    if kind != "allowed_tools":
        raise _unsupported("tool_choice", f"a `{kind}` tool choice has no chat form")
    _refuse_extra(choice, ("type", "mode", "tools"), "tool_choice")
    if choice.get("mode") not in ("auto", "required"):
        raise _invalid_value("tool_choice.mode", "expected `auto` or `required`")
    allowed = choice.get("tools")
    if not isinstance(allowed, list):
        raise _invalid_type("tool_choice.tools", "an array of tools")
    tools = [_allowed_tool(tool, f"tool_choice.tools[{i}]") for i, tool in enumerate(allowed)]
    return {"type": "allowed_tools", "allowed_tools": {"mode": choice["mode"], "tools": tools}}


def _allowed_tool(tool: Any, path: str) -> Body:
    tool = _object(tool, path)
    if tool.get("type") != "function":
        raise _unsupported(path, f"a `{tool.get('type')}` tool has no chat form")
    _refuse_extra(tool, ("type", "name"), path)
    return _named_function(tool, path)


def _named_function(choice: Body, path: str) -> Body:
    return {"type": "function", "function": {"name": _string(choice.get("name"), f"{path}.name")}}


def _reasoning_fields(reasoning: Any) -> Body:
    if reasoning is None:
        return {}
    _refuse_extra(_object(reasoning, "reasoning"), ("effort",), "reasoning")
    effort = reasoning.get("effort")
    return {} if effort is None else {"reasoning_effort": effort}


def _text_fields(text: Any) -> Body:
    if text is None:
        return {}
    _refuse_extra(_object(text, "text"), ("format", "verbosity"), "text")
    fields: Body = {}
    if text.get("format") is not None:
        fields.update(_response_format(_object(text["format"], "text.format")))
    if text.get("verbosity") is not None:
        fields["verbosity"] = text["verbosity"]
    return fields


def _response_format(given: Body) -> Body:
    kind = given.get("type")
    if kind == "text":
        return {}  # chat's default
    if kind == "json_object":
        _refuse_extra(given, ("type",), "text.format")
        return {"response_format": {"type": "json_object"}}
    if kind != "json_schema":
        raise _invalid_value("text.format.type", "expected `text`, `json_schema` or `json_object`")
    _refuse_extra(given, ("type", "name", "description", "schema", "strict"), "text.format")
    schema: Body = {"name": _string(given.get("name"), "text.format.name")}
    for key in ("description", "schema", "strict"):
        if given.get(key) is not None:
            schema[key] = given[key]
    return {"response_format": {"type": "json_schema", "json_schema": schema}}


def _stream_fields(body: Body) -> Body:
    """`stream` (the rewrite stage asks a stream for its usage, where the upstream takes
    `stream_options`, as for any chat request)."""
    if _is_set(body.get("stream_options")):
        options = _object(body["stream_options"], "stream_options")
        _refuse_extra(options, ("include_obfuscation",), "stream_options")
        if options.get("include_obfuscation") not in (None, False):
            raise _unsupported("stream_options.include_obfuscation", "the bridge adds no padding")
    stream = body.get("stream")
    if stream is None:
        return {}
    return {"stream": stream}


# Shapes and their errors, named as OpenAI names them (`param` is the field's path).


def _refuse_extra(
    given: Body, allowed: Iterable[str], path: str, inert: Body | None = None
) -> None:
    """400 for the first key of `given` outside `allowed` that asks something."""
    allowed = set(allowed)
    for key, value in given.items():
        if key in allowed or value is None or (inert and inert.get(key, ...) == value):
            continue
        raise _unsupported(f"{path}.{key}", "the bridge has no chat form for it")


def _object(value: Any, path: str) -> Body:
    if not isinstance(value, dict):
        raise _invalid_type(path, "an object")
    return value


def _string(value: Any, path: str) -> str:
    if value is None:
        raise _missing(path)
    if not isinstance(value, str):
        raise _invalid_type(path, "a string")
    return value


def _unsupported(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(
        f"Unsupported parameter: '{param}' cannot be served by this model: {why}.",
        param=param,
        code="unsupported_parameter",
    )


def _invalid_type(param: str, expected: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{param}': expected {expected}.", param=param, code="invalid_type"
    )


def _invalid_value(param: str, expected: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid value for '{param}': {expected}.", param=param, code="invalid_value"
    )


def _missing(param: str) -> InvalidRequest:
    return InvalidRequest(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )
