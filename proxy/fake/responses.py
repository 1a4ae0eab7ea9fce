"""The fake model's Responses API: a `/v1/responses` request in, a Response or its events out.

Pure, like `model.py`, and built on it: the request is turned into the chat fake's form
(`as_chat_request`), `model.decide` makes the one decision, and this module renders that
`Answer` in the Responses shape. So chat and Responses answer a conversation alike: the same
tool with the same arguments, the same text, the same cut at the token limit, the same
steering (`tool`, `text`, `parallel`, `invalid-args`, `huge`).

Ids (`resp_…`, `msg_…`, `fc_…`) derive from the request, as the chat fake's do, so a streamed
answer reassembles to exactly the non-streamed one; only `created_at` reads the clock.
`usage.input_tokens` is the chat fake's estimate for the same conversation, so slimmed tools
cost fewer input tokens here too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from proxy.errors import InvalidRequest
from proxy.fake.model import (
    Answer,
    Behavior,
    argument_fragments,
    chosen_but_not_offered,
    decide,
    request_digest,
    short_hash,
    text_pieces,
    token_counts,
)

ID_HEX_CHARS = 48
"""Hex characters after `resp_`, `msg_` and `fc_`, about as long as OpenAI's ids."""

# Fields of the request a Response repeats, with the value OpenAI reports when it is not given.
_ECHOED_FIELDS: dict[str, Any] = {
    "background": False,
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "prompt_cache_key": None,
    "reasoning": {"effort": None, "summary": None},
    "safety_identifier": None,
    "service_tier": "default",
    "store": True,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}, "verbosity": "medium"},
    "tool_choice": "auto",
    "tools": [],
    "top_logprobs": 0,
    "top_p": 1.0,
    "truncation": "disabled",
    "user": None,
}


# ---------------------------------------------------------------------------
# The request in the chat fake's form


def as_chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """The chat request that asks the same of the fake as this Responses request.

    `instructions` → a first system message; message items → messages (text parts as chat
    `text` parts); consecutive `function_call` items → one assistant message with
    `tool_calls` (`call_id` → `id`); `function_call_output` → a `tool` message; flat function
    tools and `tool_choice` → nested; `max_output_tokens` → `max_tokens`; `text.format` →
    `response_format`. Other items (reasoning, hosted tool calls) say nothing the fake
    uses and are left out; other tools pass as they are, which the fake never calls.
    """
    chat = {
        "model": body.get("model", ""),
        "messages": _chat_messages(body),
        **_chat_tool_fields(body),
    }
    if "parallel_tool_calls" in body:
        chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    if "max_output_tokens" in body:
        chat["max_tokens"] = body["max_output_tokens"]
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    return chat


def _chat_tool_fields(body: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        fields["tools"] = [_nested_tool(tool) for tool in tools]
    if "tool_choice" in body:
        fields["tool_choice"] = _nested_tool_choice(body["tool_choice"])
    return fields


def _input_items(body: dict[str, Any]) -> list[Any]:
    given = body.get("input")
    if isinstance(given, str):
        return [{"type": "message", "role": "user", "content": given}]
    return given if isinstance(given, list) else []


def _item_type(item: dict[str, Any]) -> Any:
    # A message may leave out its type ({"role": "user", "content": "…"}).
    return item.get("type", "message")


def _chat_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    instructions = body.get("instructions")
    messages = [{"role": "system", "content": instructions}] if instructions else []
    for item in _input_items(body):
        if isinstance(item, dict):
            _append_as_message(messages, item)
    return messages


def _append_as_message(messages: list[dict[str, Any]], item: dict[str, Any]) -> None:
    match _item_type(item):
        case "message" if isinstance(item.get("role"), str):
            messages.append({"role": item["role"], "content": _chat_content(item.get("content"))})
        case "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments")},
            }
            previous = messages[-1] if messages else {}
            if previous.get("role") == "assistant" and "tool_calls" in previous:
                previous["tool_calls"].append(call)  # parallel calls: one assistant turn
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        case "function_call_output":
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": item.get("call_id"),
                    "content": _chat_content(item.get("output")),
                }
            )


def _chat_content(content: Any) -> Any:
    """Text parts (`input_text`, `output_text`) as chat `text` parts; other parts as given."""
    if not isinstance(content, list):
        return content
    return [
        {"type": "text", "text": part["text"]}
        if isinstance(part, dict) and isinstance(part.get("text"), str)
        else part
        for part in content
    ]


def _nested_tool(tool: Any) -> Any:
    if isinstance(tool, dict) and tool.get("type") == "function" and "function" not in tool:
        return {"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}}
    return tool


def _nested_tool_choice(choice: Any) -> Any:
    if not isinstance(choice, dict):
        return choice
    if choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    if choice.get("type") == "allowed_tools":
        tools = choice.get("tools")
        allowed = {
            "mode": choice.get("mode", "auto"),
            "tools": [_nested_function_ref(tool) for tool in tools or []],
        }
        return {"type": "allowed_tools", "allowed_tools": allowed}
    return choice


def _nested_function_ref(tool: Any) -> Any:
    if isinstance(tool, dict) and tool.get("type") == "function":
        return {"type": "function", "function": {"name": tool.get("name")}}
    return tool


def _response_format(text: Any) -> dict[str, Any] | None:
    response_format = text.get("format") if isinstance(text, dict) else None
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_schema":
        schema = {key: value for key, value in response_format.items() if key != "type"}
        return {"type": "json_schema", "json_schema": schema}
    return {"type": "json_object"} if kind == "json_object" else None


# ---------------------------------------------------------------------------
# Request checks: the few 400s OpenAI's /v1/responses gives that a proxy could cause


def find_responses_error(body: dict[str, Any]) -> InvalidRequest | None:
    """The 400 that OpenAI's `/v1/responses` would answer to this body, for the mistakes a
    proxy could make.

    Checked: `model` present; `input` a string or a list of objects; a named `tool_choice`
    (or `allowed_tools`) among the offered functions; each `function_call_output` answering
    a `function_call` earlier in `input`. Everything else is accepted as sent.
    """
    for check in _REQUEST_CHECKS:
        problem = check(body)
        if problem is not None:
            return problem
    return None


def _check_model(body: dict[str, Any]) -> InvalidRequest | None:
    if isinstance(body.get("model"), str) and body["model"]:
        return None
    return InvalidRequest(
        "Missing required parameter: 'model'.", param="model", code="missing_required_parameter"
    )


def _check_input(body: dict[str, Any]) -> InvalidRequest | None:
    # No input at all is allowed: a prompt template or a stored conversation may supply it.
    given = body.get("input")
    if given is None or isinstance(given, str):
        return None
    if not isinstance(given, list):
        return _wrong_type("input", "one of a string or array of input items", given)
    for position, item in enumerate(given):
        if not isinstance(item, dict):
            return _wrong_type(f"input[{position}]", "an input item object", item)
    return None


def _wrong_type(param: str, expected: str, value: Any) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{param}': expected {expected}, but got {_json_kind(value)} instead.",
        param=param,
        code="invalid_type",
    )


def _json_kind(value: Any) -> str:
    kinds = ((bool, "a boolean"), (int | float, "a number"), (str, "a string"), (list, "an array"))
    for python_type, name in kinds:
        if isinstance(value, python_type):
            return name
    return "an object" if isinstance(value, dict) else "null"


def _check_tool_choice(body: dict[str, Any]) -> InvalidRequest | None:
    missing, _ = chosen_but_not_offered(_chat_tool_fields(body))
    if not missing:
        return None
    return InvalidRequest(
        f"Invalid value for 'tool_choice': function '{missing[0]}' was not found in the "
        "offered tools.",
        param="tool_choice",
    )


def _check_call_outputs(body: dict[str, Any]) -> InvalidRequest | None:
    # With `previous_response_id` or `conversation` the call may be in the stored
    # history, which the fake does not keep: it cannot tell, so it accepts.
    if body.get("previous_response_id") or body.get("conversation"):
        return None
    called: set[Any] = set()
    for item in _input_items(body):
        kind, call_id = _item_type(item), item.get("call_id")
        if kind == "function_call":
            called.add(call_id)
        elif kind == "function_call_output" and isinstance(call_id, str) and call_id not in called:
            return InvalidRequest(
                f"No tool call found for function call output with call_id {call_id}.",
                param="input",
            )
    return None


_REQUEST_CHECKS: tuple[Callable[[dict[str, Any]], InvalidRequest | None], ...] = (
    _check_model,
    _check_input,
    _check_tool_choice,
    _check_call_outputs,
)


# ---------------------------------------------------------------------------
# The answer: a Response object


def respond(body: dict[str, Any], behavior: Behavior) -> dict[str, Any]:
    """The Response object the fake answers to `body`, a `/v1/responses` request."""
    chat = as_chat_request(body)
    return _response(body, chat, decide(chat, behavior))


def _response(body: dict[str, Any], chat: dict[str, Any], answer: Answer) -> dict[str, Any]:
    created_at = int(time.time())
    digest = request_digest(body)
    incomplete = answer.finish_reason == "length"
    status = "incomplete" if incomplete else "completed"
    return {
        "id": f"resp_{_hash(digest)}",
        "object": "response",
        "created_at": created_at,
        "status": status,
        "completed_at": None if incomplete else created_at,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "model": body.get("model", ""),
        "output": _output_items(digest, answer, status),
        "usage": _usage(chat, answer),
        **{key: _given(body, key, default) for key, default in _ECHOED_FIELDS.items()},
    }


def _given(body: dict[str, Any], key: str, default: Any) -> Any:
    value = body.get(key)
    return default if value is None else value


def _hash(text: str) -> str:
    return short_hash(text, ID_HEX_CHARS)


def _output_items(digest: str, answer: Answer, status: str) -> list[dict[str, Any]]:
    """The message, or the function calls; their ids derive from the request's digest."""
    if not answer.calls:
        text = {
            "type": "output_text",
            "text": answer.content or "",
            "annotations": [],
            "logprobs": [],
        }
        message = {
            "id": f"msg_{_hash(digest + ':msg')}",
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": [text],
        }
        return [message]
    return [
        {
            "id": f"fc_{_hash(f'{digest}:fc:{index}')}",
            "type": "function_call",
            "call_id": call.id,
            "name": call.name,
            "arguments": call.arguments,
            "status": "completed",
        }
        for index, call in enumerate(answer.calls)
    ]


def _usage(chat: dict[str, Any], answer: Answer) -> dict[str, Any]:
    input_tokens, output_tokens = token_counts(chat, answer)
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


# ---------------------------------------------------------------------------
# The stream: the same Response, told as events

Step = tuple[str, dict[str, Any]]
"""One event before it is numbered: its type and its fields."""


def stream_events(body: dict[str, Any], behavior: Behavior) -> list[dict[str, Any]]:
    """The Responses stream events of the answer, in order, each with its `sequence_number`.

    `response.created` and `response.in_progress` (the Response without output or usage);
    per output item `response.output_item.added`, its content or argument deltas and
    `response.output_item.done`; last `response.completed` (or `response.incomplete`) with
    the whole Response, exactly as `respond` gives it. No `[DONE]` follows: the Responses
    API sends none.
    """
    final = respond(body, behavior)
    started = {
        **final,
        "status": "in_progress",
        "completed_at": None,
        "incomplete_details": None,
        "output": [],
        "usage": None,
    }
    steps: list[Step] = [
        ("response.created", {"response": started}),
        ("response.in_progress", {"response": started}),
    ]
    for index, item in enumerate(final["output"]):
        steps += _item_steps(index, item)
    steps.append((f"response.{final['status']}", {"response": final}))
    return [
        {"type": kind, "sequence_number": number, **fields}
        for number, (kind, fields) in enumerate(steps)
    ]


def _item_steps(index: int, item: dict[str, Any]) -> Iterator[Step]:
    where = {"item_id": item["id"], "output_index": index}
    if item["type"] == "message":
        yield (
            "response.output_item.added",
            {
                "output_index": index,
                "item": {**item, "status": "in_progress", "content": []},
            },
        )
        yield from _text_steps(where, item["content"][0])
    else:
        # As OpenAI streams a call: `call_id` and `name` only in the added item.
        yield (
            "response.output_item.added",
            {
                "output_index": index,
                "item": {**item, "arguments": "", "status": "in_progress"},
            },
        )
        for fragment in argument_fragments(item["arguments"]):
            yield "response.function_call_arguments.delta", {**where, "delta": fragment}
        yield "response.function_call_arguments.done", {**where, "arguments": item["arguments"]}
    yield "response.output_item.done", {"output_index": index, "item": item}


def _text_steps(where: dict[str, Any], part: dict[str, Any]) -> Iterator[Step]:
    at = {**where, "content_index": 0}
    yield "response.content_part.added", {**at, "part": {**part, "text": ""}}
    for piece in text_pieces(part["text"]):
        yield "response.output_text.delta", {**at, "delta": piece, "logprobs": []}
    yield "response.output_text.done", {**at, "text": part["text"], "logprobs": []}
    yield "response.content_part.done", {**at, "part": part}
