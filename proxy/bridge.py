"""The Responses bridge, pure: a chat-only upstream serves Responses API requests.

Three translations, dicts or bytes in and out (no I/O, no aiohttp, no logging):

- `responses_to_chat(body)`: a Responses request → the chat request that asks the same, or an
  `InvalidRequest` (400) naming the first field the chat request cannot carry.
- `chat_to_response(completion, request, ids)`: a `chat.completion` → a Response object.
- `StreamTranslator`: `chat.completion.chunk`s → Responses stream events, as SSE bytes.

Decisions, field by field (the installed `openai` types are the reference for every shape):

- Carried: `instructions` → a first `system` message; `input` (a string → one user message;
  message items → messages, `developer` → `system` because open servers' chat templates
  know `system` and OpenAI treats the two as one role; consecutive `function_call` items →
  one assistant message with `tool_calls`, joined to the assistant message just before
  them since a chat turn with text and calls is one message; `function_call_output` → a
  `tool` message); content parts `input_text`/`output_text` → `text`, `refusal` (assistant)
  → `refusal`, `input_image` with a URL → `image_url`, `input_file` with `file_data` or
  `file_id` → chat's `file` part; function tools → nested (`name`, `description`,
  `parameters`, `strict`, those given); `tool_choice` → nested, `allowed_tools` → chat's own
  `allowed_tools` form (a later stage emulates it where an upstream lacks it);
  `max_output_tokens` → `max_tokens` (what vLLM, SGLang, llama.cpp and Ollama all accept);
  `reasoning.effort` → `reasoning_effort` (one knob, one value set in both APIs);
  `text.format` → `response_format`, `text.verbosity` → `verbosity`; `temperature`,
  `top_p`, `parallel_tool_calls`, `user`, `safety_identifier`, `prompt_cache_key`,
  `prompt_cache_retention`, `service_tier` as they are; `logit_bias` too (not a Responses
  field, but vLLM takes it as an extension and a policy may set it for a chat upstream);
  `stream: true` adds `stream_options.include_usage` (the Response needs usage). Without
  tools, `parallel_tool_calls` and a `none`/`auto` choice ask nothing and are not sent
  (chat servers refuse them there). Tool outputs made of text parts stay text parts (chat's
  `tool` messages take them; the upstream joins them as its template does).
- Answered by the bridge: `metadata` is attached to the Response (chat's `metadata` goes
  with stored completions, which the bridge does not make).
- Accepted only at the value that asks nothing: `store` false or absent, `background`
  false, `truncation: disabled`, `include: []`, `stream_options.include_obfuscation` false.
- A 400 naming the field: `previous_response_id`, `conversation`, `prompt`,
  `max_tool_calls`, `top_logprobs`, `context_management` and OpenAI-only options
  (`moderation`, `image`, `prompt_cache_options`, `background_options`, `access_programs`);
  non-function tools, function tools' `output_schema`/`allowed_callers`; input items other
  than messages, calls and call outputs (`reasoning`, `item_reference`, hosted tools' calls:
  chat has no place for them); image and file parts outside user messages and in tool
  outputs (chat's `tool` messages take text only); `input_image` by `file_id` and
  `input_file` by `file_url` (no chat form); `reasoning.summary` and the like; a message's
  `phase`. Unknown fields are a 400 too: nothing is dropped silently. A field set to `null`
  counts as absent; an item's `id` and `status` and an output text's `annotations` and
  `logprobs` are bookkeeping of a past answer and carry nothing to the model.
- Answers: a `message` item when there is text (or a refusal), then one `function_call`
  item per call; `finish_reason` `length` or `content_filter` → `incomplete`, the last item
  `incomplete` too; `model` is the upstream's; `usage` is null when the upstream gave none.
  Not carried back: a chat answer's `reasoning_content` (a vendor extension outside the chat
  types; the bridge makes no `reasoning` items, which it could not take back as input).
- Streams: items are written one after the other, as every known server streams them; a
  call's `id` and `name` come from its first delta (a later name fills an empty one); a
  delta for a call already closed ends the stream in an `error` event, as does an upstream
  `{"error": …}` chunk or a break the caller reports.

Ids are derived from a seed (the proxy's request id), so that a translation is a pure
function of its inputs: `resp_<seed>`, and per output index `msg_<seed>_<n>` or
`fc_<seed>_<n>` (see `ResponseIds`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy import jsonutil
from proxy.errors import InvalidRequest, ProxyError, UpstreamUnreachable
from proxy.jsonutil import JsonList

Body = dict[str, Any]

# ---------------------------------------------------------------------------------------------
# Request: Responses → chat

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
    """`stream`, and the usage a streamed Response needs: the upstream is asked for it."""
    if _is_set(body.get("stream_options")):
        options = _object(body["stream_options"], "stream_options")
        _refuse_extra(options, ("include_obfuscation",), "stream_options")
        if options.get("include_obfuscation") not in (None, False):
            raise _unsupported("stream_options.include_obfuscation", "the bridge adds no padding")
    stream = body.get("stream")
    if stream is None:
        return {}
    return (
        {"stream": True, "stream_options": {"include_usage": True}}
        if stream is True
        else {"stream": stream}
    )


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


# ---------------------------------------------------------------------------------------------
# Answer: chat → Response


@dataclass(frozen=True)
class ResponseIds:
    """The identity of one Response: its ids, derived from `seed`, and its creation time.

    Both are fixed by the caller (the proxy's request id and its clock) so that a translation
    is a pure function of its inputs. Output items are named by their output index, unique
    within the response as the seed is across responses.
    """

    seed: str
    created_at: int

    @classmethod
    def for_request(cls, request_id: str, created_at: int) -> ResponseIds:
        return cls(request_id.removeprefix("req_"), created_at)

    @property
    def response(self) -> str:
        return f"resp_{self.seed}"

    def message(self, output_index: int) -> str:
        return f"msg_{self.seed}_{output_index}"

    def function_call(self, output_index: int) -> str:
        return f"fc_{self.seed}_{output_index}"

    def call(self, output_index: int) -> str:
        """A `call_id` for an upstream call that came without an id."""
        return f"call_{self.seed}_{output_index}"


_INCOMPLETE_REASONS: dict[Any, str] = {
    "length": "max_output_tokens",
    "content_filter": "content_filter",
}


def chat_to_response(completion: Body, request: Body, ids: ResponseIds) -> Body:
    """The Response object for a `chat.completion` answering `request` (the Responses request,
    for the fields a Response echoes). Raises `UpstreamUnreachable` for an answer that is not
    a completion."""
    choice = _first_choice(completion)
    message = choice.get("message")
    if not isinstance(message, dict):
        raise _not_an_answer("a choice without a message")
    output = _message_items(message, ids)
    for call in message.get("tool_calls") or ():
        output.append(_completed_call(call, len(output), ids))
    reason = _INCOMPLETE_REASONS.get(choice.get("finish_reason"))
    if reason is not None and output:
        output[-1]["status"] = "incomplete"  # the item being written when it stopped
    return response_object(
        request,
        ids,
        status="completed" if reason is None else "incomplete",
        output=output,
        usage=response_usage(completion.get("usage")),
        model=completion.get("model") or request.get("model"),
        incomplete_reason=reason,
    )


def _first_choice(completion: Body) -> Body:
    # Only one choice: a Responses request cannot ask for `n`.
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _not_an_answer("no choices")
    return choices[0]


def _message_items(message: Body, ids: ResponseIds) -> list[Body]:
    content = []
    if isinstance(message.get("content"), str) and message["content"]:
        content.append(_text_content(message["content"]))
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        content.append(_refusal_content(message["refusal"]))
    if not content:
        return []
    return [_message_item(ids.message(0), "completed", content)]


def _completed_call(call: Any, output_index: int, ids: ResponseIds) -> Body:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise _not_an_answer("a tool call without a function name")
    return _call_item(
        ids.function_call(output_index),
        "completed",
        call.get("id") or ids.call(output_index),
        function["name"],
        function.get("arguments") or "",
    )


def _not_an_answer(what: str) -> UpstreamUnreachable:
    return UpstreamUnreachable(
        f"The upstream answered with {what}, not a chat completion.", reason="invalid_response"
    )


def _message_item(item_id: str, status: str, content: list[Any]) -> Body:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "content": content,
        "role": "assistant",
    }


def _call_item(item_id: str, status: str, call_id: str, name: str, arguments: Any) -> Body:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


def _text_content(text: Any) -> Body:
    return {"type": "output_text", "text": text, "annotations": []}


def _refusal_content(refusal: Any) -> Body:
    return {"type": "refusal", "refusal": refusal}


def response_usage(usage: Any) -> Body | None:
    """A chat `usage` in the Response's terms; None when the upstream gave none.

    `cache_write_tokens` is required by the `openai` types; chat reports it rarely, and 0
    stands for "not reported" as it does for the other details.
    """
    if not isinstance(usage, dict):
        return None
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": _count(prompt_details.get("cached_tokens")),
            "cache_write_tokens": _count(prompt_details.get("cache_write_tokens")),
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": _count(completion_details.get("reasoning_tokens"))
        },
        "total_tokens": _count(usage.get("total_tokens")) or prompt + completion,
    }


def _count(value: Any) -> int:
    return value if isinstance(value, int) else 0


def response_object(
    request: Body,
    ids: ResponseIds,
    *,
    status: str,
    output: list[Any],
    usage: Body | None,
    model: Any,
    incomplete_reason: str | None = None,
    tools: Any = None,
) -> Body:
    """A Response: what the answer says, and the request fields the `openai` types require or
    OpenAI echoes. `tools` replaces the request's list (the stream passes it pre-written)."""
    return {
        "id": ids.response,
        "object": "response",
        "created_at": ids.created_at,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None if incomplete_reason is None else {"reason": incomplete_reason},
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": _given(request, "parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": request.get("reasoning"),
        "temperature": request.get("temperature"),
        "text": _given(request, "text", {"format": {"type": "text"}}),
        "tool_choice": _given(request, "tool_choice", "auto"),
        "tools": tools if tools is not None else _given(request, "tools", []),
        "top_p": request.get("top_p"),
        "truncation": "disabled",
        "usage": usage,
        "user": request.get("user"),
        "metadata": _given(request, "metadata", {}),
    }


def _given(request: Body, key: str, default: Any) -> Any:
    value = request.get(key)
    return default if value is None else value


# ---------------------------------------------------------------------------------------------
# Stream: chat chunks → Responses events


@dataclass
class _OpenMessage:
    """The message item being streamed: its finished content parts (written once, as JSON
    fragments) and the one open part's kind and text so far."""

    item_id: str
    output_index: int
    parts: list[orjson.Fragment] = field(default_factory=list)
    kind: str | None = None  # "output_text" or "refusal"
    fragments: list[str] = field(default_factory=list)


@dataclass
class _OpenCall:
    item_id: str
    output_index: int
    chat_index: Any
    call_id: str
    name: str
    fragments: list[str] = field(default_factory=list)


class StreamTranslator:
    """Turns one chat stream into the Responses events that say the same, as SSE bytes.

    Call `start()` for the opening events (or let the first `feed` write them), `feed(chunk)`
    for each parsed chat chunk, then `done()` at `[DONE]`, or `fail(error)` when the upstream
    stream broke. Each returns the bytes to send (possibly none). After the terminal event
    (`response.completed`, `response.incomplete` or `error`) every call returns nothing.

    Text and arguments are kept as the fragments that came and joined once, when their item
    closes; each finished item is written to JSON once and reused by the events that repeat it.
    """

    def __init__(self, request: Body, ids: ResponseIds) -> None:
        self._request = request
        self._ids = ids
        self._model = request.get("model")
        # Written once: the lifecycle events repeat the request's tools.
        self._tools = orjson.Fragment(jsonutil.dumps(_given(request, "tools", [])))
        self._sequence = 0
        self._started = False
        self._open: _OpenMessage | _OpenCall | None = None
        self._output: list[orjson.Fragment] = []
        self._calls_seen: set[Any] = set()
        self._finish_reason: Any = None
        self._usage: Body | None = None
        self.finished = False
        # What ended the stream in an `error` event, for the caller's records.
        self.error: ProxyError | None = None

    def start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        opening = orjson.Fragment(jsonutil.dumps(self._response("in_progress", None)))
        return self._event("response.created", {"response": opening}) + self._event(
            "response.in_progress", {"response": opening}
        )

    def feed(self, chunk: Body) -> bytes:
        if self.finished:
            return b""
        out = [self.start()]
        if chunk.get("error") is not None:
            out.append(self._upstream_error(chunk["error"]))
            return b"".join(out)
        if isinstance(chunk.get("model"), str):
            self._model = chunk["model"]
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._choice(choice, out)
        return b"".join(out)

    def done(self) -> bytes:
        """`[DONE]`: close the open item and write the whole Response."""
        if self.finished:
            return b""
        out = [self.start()]
        reason = _INCOMPLETE_REASONS.get(self._finish_reason)
        status = "completed" if reason is None else "incomplete"
        self._close(out, status)  # the item being written when it stopped, if it did
        response = self._response(status, response_usage(self._usage), reason)
        out.append(self._event(f"response.{status}", {"response": response}))
        self.finished = True
        return b"".join(out)

    def fail(self, error: ProxyError) -> bytes:
        """The upstream stream broke: an `error` event, and no Response."""
        if self.finished:
            return b""
        return self.start() + self._error(error)

    def _choice(self, choice: Body, out: list[bytes]) -> None:
        delta = choice.get("delta") or {}
        for kind, key in (("output_text", "content"), ("refusal", "refusal")):
            if isinstance(delta.get(key), str) and delta[key]:
                self._text_delta(kind, delta[key], out)
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                self._call_delta(call, out)
                if self.finished:
                    return
        if choice.get("finish_reason") is not None:
            self._finish_reason = choice["finish_reason"]

    # Text (and refusals): one message item, one content part per kind in a row.

    def _text_delta(self, kind: str, delta: str, out: list[bytes]) -> None:
        message = self._open
        if not isinstance(message, _OpenMessage):
            self._close(out, "completed")
            message = self._open_message(out)
        if message.kind != kind:
            self._close_part(message, out)
            self._open_part(message, kind, out)
        message.fragments.append(delta)
        fields = {**_located(message), "delta": delta, **_LOGPROBS[kind]}
        out.append(self._event(_DELTA_EVENT[kind], fields))

    def _open_message(self, out: list[bytes]) -> _OpenMessage:
        message = _OpenMessage(self._ids.message(len(self._output)), len(self._output))
        item = _message_item(message.item_id, "in_progress", [])
        out.append(self._item_event("response.output_item.added", message.output_index, item))
        self._open = message
        return message

    def _open_part(self, message: _OpenMessage, kind: str, out: list[bytes]) -> None:
        message.kind = kind
        part = _text_content("") if kind == "output_text" else _refusal_content("")
        out.append(self._event("response.content_part.added", {**_located(message), "part": part}))

    def _close_part(self, message: _OpenMessage, out: list[bytes]) -> None:
        if message.kind is None:
            return
        kind, located = message.kind, _located(message)
        text = orjson.Fragment(jsonutil.dumps("".join(message.fragments)))
        key, content = (
            ("text", _text_content) if kind == "output_text" else ("refusal", _refusal_content)
        )
        out.append(self._event(_DONE_EVENT[kind], {**located, key: text, **_LOGPROBS[kind]}))
        part = orjson.Fragment(jsonutil.dumps(content(text)))
        out.append(self._event("response.content_part.done", {**located, "part": part}))
        message.parts.append(part)
        message.kind, message.fragments = None, []

    # Tool calls: one function_call item per chat call index, in the order they come.

    def _call_delta(self, delta: Body, out: list[bytes]) -> None:
        call = self._call_for(delta, out)
        if call is None:
            return
        function = delta.get("function") or {}
        if not call.name and isinstance(function.get("name"), str):
            call.name = function["name"]  # a server that names the call after its first delta
        fragment = function.get("arguments")
        if isinstance(fragment, str) and fragment:
            call.fragments.append(fragment)
            fields = {"item_id": call.item_id, "output_index": call.output_index, "delta": fragment}
            out.append(self._event("response.function_call_arguments.delta", fields))

    def _call_for(self, delta: Body, out: list[bytes]) -> _OpenCall | None:
        """The open call `delta` continues (same index, no other id), else a new one; None
        when it goes back to a call already closed (the stream then ends in an error)."""
        index, current = delta.get("index"), self._open
        if (
            isinstance(current, _OpenCall)
            and current.chat_index == index
            and delta.get("id") in (None, current.call_id)
        ):
            return current
        if index in self._calls_seen:
            # Every known server streams its calls one after the other; an item once done
            # cannot take more arguments, so a stream that goes back cannot be followed.
            message = f"The upstream streamed tool call {index} again after a later call began."
            out.append(self._error(UpstreamUnreachable(message, reason="invalid_response")))
            return None
        return self._open_call(delta, out)

    def _open_call(self, delta: Body, out: list[bytes]) -> _OpenCall:
        self._close(out, "completed")
        output_index = len(self._output)
        name = (delta.get("function") or {}).get("name")
        call = _OpenCall(
            self._ids.function_call(output_index),
            output_index,
            delta.get("index"),
            delta.get("id") or self._ids.call(output_index),
            name if isinstance(name, str) else "",
        )
        self._calls_seen.add(call.chat_index)
        item = _call_item(call.item_id, "in_progress", call.call_id, call.name, "")
        out.append(self._item_event("response.output_item.added", output_index, item))
        self._open = call
        return call

    # Items end one at a time: when the next begins, or at [DONE].

    def _close(self, out: list[bytes], status: str) -> None:
        current, self._open = self._open, None
        if isinstance(current, _OpenMessage):
            self._close_part(current, out)
            item = _message_item(current.item_id, status, current.parts)
        elif isinstance(current, _OpenCall):
            arguments = orjson.Fragment(jsonutil.dumps("".join(current.fragments)))
            located = {"item_id": current.item_id, "output_index": current.output_index}
            out.append(
                self._event(
                    "response.function_call_arguments.done", {**located, "arguments": arguments}
                )
            )
            item = _call_item(current.item_id, status, current.call_id, current.name, arguments)
        else:
            return
        written = orjson.Fragment(jsonutil.dumps(item))
        self._output.append(written)
        out.append(self._item_event("response.output_item.done", current.output_index, written))

    def _item_event(self, kind: str, output_index: int, item: Any) -> bytes:
        return self._event(kind, {"output_index": output_index, "item": item})

    def _response(self, status: str, usage: Body | None, reason: str | None = None) -> Body:
        return response_object(
            self._request,
            self._ids,
            status=status,
            output=self._output,
            usage=usage,
            model=self._model,
            incomplete_reason=reason,
            tools=self._tools,
        )

    def _upstream_error(self, error: Any) -> bytes:
        """An upstream `{"error": …}` chunk, told in its own words (its code, else its type)."""
        error = error if isinstance(error, dict) else {}
        message, param = error.get("message"), error.get("param")
        code = error.get("code") if isinstance(error.get("code"), str) else error.get("type")
        failure = UpstreamUnreachable(
            message if isinstance(message, str) else "The upstream reported an error.",
            reason="error_event",
            code=code if isinstance(code, str) else None,
        )
        failure.param = param if isinstance(param, str) else None
        return self._error(failure)

    def _error(self, error: ProxyError) -> bytes:
        self.finished = True
        self.error = error
        fields = {"code": error.code, "message": error.message, "param": error.param}
        # The error object under `error` too: what makes the SDK raise `APIError`.
        return self._event("error", {**fields, "error": error.body()["error"]})

    def _event(self, kind: str, fields: Body) -> bytes:
        payload = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + jsonutil.dumps(payload) + b"\n\n"


def _located(message: _OpenMessage) -> Body:
    """Where a content event happens: the open part of `message`."""
    return {
        "item_id": message.item_id,
        "output_index": message.output_index,
        "content_index": len(message.parts),
    }


# The types require `logprobs` on text deltas and their done event; the bridge asks for none.
_LOGPROBS: dict[Any, Body] = {"output_text": {"logprobs": []}, "refusal": {}}
_DELTA_EVENT = {"output_text": "response.output_text.delta", "refusal": "response.refusal.delta"}
_DONE_EVENT = {"output_text": "response.output_text.done", "refusal": "response.refusal.done"}
