"""The Responses bridge is pure: literal requests, completions and chunks in, literal chat
requests, Responses and events out; every shape it writes is checked against the installed
`openai` types, and the SDK itself parses what it streams (see the last section).

Request cases are data: `tests/bridge_cases/<case>/{request.json,chat.json}`, compared as
serialised bytes (key order counts: it is what the upstream reads), and
`tests/bridge_cases/refused.json` lists the fields that are a 400, with the `param` and `code`
each must name.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from proxy import jsonutil
from proxy.bridge import (
    ResponseIds,
    StreamTranslator,
    chat_to_response,
    responses_to_chat,
)
from proxy.errors import InvalidRequest, UpstreamUnreachable
from proxy.jsonutil import JsonList
from proxy.server import bound_port
from proxy.sse import EventSplitter, event_data

CASES = Path(__file__).parent / "bridge_cases"
CASE_DIRS = sorted(path for path in CASES.iterdir() if path.is_dir())
IDS = ResponseIds("t1", 1_700_000_000)
STREAM_EVENT = TypeAdapter(ResponseStreamEvent)

# ---------------------------------------------------------------------------------------------
# Request


@pytest.mark.parametrize("case", CASE_DIRS, ids=lambda path: path.name)
def test_request_case(case: Path) -> None:
    request = jsonutil.loads((case / "request.json").read_bytes())
    expected = jsonutil.loads((case / "chat.json").read_bytes())
    original = copy.deepcopy(request)
    chat = responses_to_chat(request)
    assert chat == expected
    assert jsonutil.dumps(chat) == jsonutil.dumps(expected)
    assert request == original  # the client's body is never changed


def test_request_cases_exist() -> None:
    assert len(CASE_DIRS) >= 7


FUNCTION = {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": None}


REFUSED = jsonutil.loads((CASES / "refused.json").read_bytes())


@pytest.mark.parametrize("case", REFUSED, ids=lambda case: case["param"])
def test_what_chat_cannot_carry_is_a_400_naming_it(case: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as refused:
        responses_to_chat({"model": "m", "input": "hi", **case["fields"]})
    assert (refused.value.param, refused.value.code, refused.value.status) == (
        case["param"],
        case["code"],
        400,
    )


def test_a_refusal_says_what_and_why() -> None:
    with pytest.raises(InvalidRequest) as refused:
        responses_to_chat({"model": "m", "input": "hi", "previous_response_id": "resp_1"})
    assert refused.value.message == (
        "Unsupported parameter: 'previous_response_id' cannot be served by this model: the "
        "upstream keeps no conversations: send the whole conversation in `input`."
    )


def test_null_fields_count_as_absent() -> None:
    nulls = {key: None for key in ("previous_response_id", "conversation", "store", "prompt")}
    assert responses_to_chat({"model": "m", "input": "hi", **nulls}) == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_a_named_choice_without_tools_is_still_sent() -> None:
    # The upstream refuses it, as OpenAI would: only `none` and `auto` ask nothing.
    chat = responses_to_chat({"model": "m", "input": "hi", "tool_choice": "required"})
    assert chat["tool_choice"] == "required"


def test_a_shared_tools_list_is_translated_once() -> None:
    tools = [FUNCTION]
    shared = JsonList(tools, jsonutil.dumps(tools))
    first = responses_to_chat({"model": "m", "input": "hi", "tools": shared})["tools"]
    second = responses_to_chat({"model": "m", "input": "hi", "tools": shared})["tools"]
    assert first is second
    assert isinstance(first, JsonList)
    assert (
        first.json
        == b'[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]'
    )


# ---------------------------------------------------------------------------------------------
# Answer


def completion(
    message: dict[str, Any], finish_reason: str = "stop", **extra: Any
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_699_999_999,
        "model": "support-bot-v2",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        **extra,
    }


USAGE = {
    "prompt_tokens": 120,
    "completion_tokens": 30,
    "total_tokens": 150,
    "prompt_tokens_details": {"cached_tokens": 64},
    "completion_tokens_details": {"reasoning_tokens": 0},
}
RESPONSE_USAGE = {
    "input_tokens": 120,
    "input_tokens_details": {"cached_tokens": 64, "cache_write_tokens": 0},
    "output_tokens": 30,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 150,
}
LOOKUP = {
    "type": "function",
    "name": "lookup_order",
    "description": "Find an order.",
    "parameters": {"type": "object", "properties": {"id": {"type": "integer"}}},
    "strict": False,
}


def test_a_text_answer_is_a_completed_response() -> None:
    request = {"model": "support-bot", "input": "Where is 42?", "instructions": "Be brief."}
    answer = completion({"role": "assistant", "content": "It shipped."}, usage=USAGE)
    assert chat_to_response(answer, request, IDS) == {
        "id": "resp_t1",
        "object": "response",
        "created_at": 1_700_000_000,
        "status": "completed",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": "Be brief.",
        "max_output_tokens": None,
        "model": "support-bot-v2",
        "output": [
            {
                "id": "msg_t1_0",
                "type": "message",
                "status": "completed",
                "content": [{"type": "output_text", "text": "It shipped.", "annotations": []}],
                "role": "assistant",
            }
        ],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": None,
        "temperature": None,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": None,
        "truncation": "disabled",
        "usage": RESPONSE_USAGE,
        "user": None,
        "metadata": {},
    }


def test_calls_are_function_call_items_after_the_text() -> None:
    message = {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {
                "id": "call_a",
                "type": "function",
                "function": {"name": "lookup_order", "arguments": '{"id":42}'},
            },
            {"type": "function", "function": {"name": "lookup_order", "arguments": '{"id":43}'}},
        ],
    }
    response = chat_to_response(completion(message, "tool_calls"), {"model": "m"}, IDS)
    assert response["status"] == "completed"
    assert response["output"][1:] == [
        {
            "id": "fc_t1_1",
            "type": "function_call",
            "status": "completed",
            "arguments": '{"id":42}',
            "call_id": "call_a",
            "name": "lookup_order",
        },
        {
            "id": "fc_t1_2",
            "type": "function_call",
            "status": "completed",
            "arguments": '{"id":43}',
            "call_id": "call_t1_2",  # the upstream gave none: one the next turn can name
            "name": "lookup_order",
        },
    ]


def test_calls_without_text_have_no_message_item() -> None:
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }
    output = chat_to_response(completion(message, "tool_calls"), {"model": "m"}, IDS)["output"]
    assert [item["id"] for item in output] == ["fc_t1_0"]


@pytest.mark.parametrize(
    ("finish_reason", "reason"),
    [("length", "max_output_tokens"), ("content_filter", "content_filter")],
)
def test_a_cut_answer_is_incomplete(finish_reason: str, reason: str) -> None:
    answer = completion({"role": "assistant", "content": "It ship"}, finish_reason)
    response = chat_to_response(answer, {"model": "m"}, IDS)
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": reason}
    assert response["output"][0]["status"] == "incomplete"


def test_a_refusal_is_a_refusal_part() -> None:
    answer = completion(
        {"role": "assistant", "content": None, "refusal": "I can't help with that."}
    )
    content = chat_to_response(answer, {"model": "m"}, IDS)["output"][0]["content"]
    assert content == [{"type": "refusal", "refusal": "I can't help with that."}]


def test_the_response_echoes_the_request() -> None:
    request = {
        "model": "support-bot",
        "input": "hi",
        "tools": [LOOKUP],
        "tool_choice": {"type": "function", "name": "lookup_order"},
        "parallel_tool_calls": False,
        "temperature": 0.2,
        "top_p": 0.9,
        "max_output_tokens": 64,
        "text": {"format": {"type": "json_object"}},
        "reasoning": {"effort": "low"},
        "metadata": {"ticket": "T-9"},
        "user": "u-1",
    }
    response = chat_to_response(completion({"role": "assistant", "content": "{}"}), request, IDS)
    # `model` says what answered (the upstream's name), as a chat answer's does.
    assert response["model"] == "support-bot-v2"
    echoed = {key: response[key] for key in request if key not in ("input", "model")}
    assert echoed == {key: value for key, value in request.items() if key not in ("input", "model")}


def test_usage_details_are_zero_when_not_reported_and_usage_none_when_absent() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    answer = completion({"role": "assistant", "content": "ok"}, usage=usage)
    assert chat_to_response(answer, {"model": "m"}, IDS)["usage"] == {
        "input_tokens": 3,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 5,
    }
    assert chat_to_response(completion({"content": "ok"}), {"model": "m"}, IDS)["usage"] is None


@pytest.mark.parametrize(
    "answer",
    [
        {"object": "chat.completion", "choices": []},
        {"error": {"message": "boom"}},
        {"choices": [{"index": 0, "finish_reason": "stop"}]},
        {"choices": [{"message": {"tool_calls": [{"id": "c", "function": {}}]}}]},
    ],
)
def test_an_answer_that_is_not_a_completion_is_the_upstreams_failure(
    answer: dict[str, Any],
) -> None:
    with pytest.raises(UpstreamUnreachable) as failed:
        chat_to_response(answer, {"model": "m"}, IDS)
    assert failed.value.reason == "invalid_response"


@pytest.mark.parametrize(
    "message",
    [
        {"role": "assistant", "content": "It shipped."},
        {"role": "assistant", "content": None, "refusal": "No."},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
    ],
)
def test_every_response_is_a_valid_sdk_response(message: dict[str, Any]) -> None:
    request = {"model": "m", "input": "hi", "tools": [LOOKUP], "tool_choice": "required"}
    response = chat_to_response(completion(message, usage=USAGE), request, IDS)
    assert Response.model_validate(response).model_dump(exclude_unset=True) == response


def test_ids_come_from_the_request_id() -> None:
    ids = ResponseIds.for_request("req_0a1b2c3d00000007", 1_700_000_000)
    assert (ids.response, ids.message(0), ids.function_call(3)) == (
        "resp_0a1b2c3d00000007",
        "msg_0a1b2c3d00000007_0",
        "fc_0a1b2c3d00000007_3",
    )


# ---------------------------------------------------------------------------------------------
# Stream


def chunk(
    delta: dict[str, Any] | None = None, finish_reason: str | None = None, **extra: Any
) -> dict[str, Any]:
    choices = (
        [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    )
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1_699_999_999,
        "model": "support-bot-v2",
        "choices": choices,
        **extra,
    }


def call_delta(
    index: int, arguments: str, call_id: str | None = None, name: str | None = None
) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id is not None:
        call.update(id=call_id, type="function")
        call["function"]["name"] = name
    return {"tool_calls": [call]}


def events(stream: bytes) -> list[dict[str, Any]]:
    """The events of an SSE stream, each checked for its framing and against the SDK type."""
    splitter = EventSplitter()
    parsed = []
    for event in splitter.feed(stream):
        data = event_data(event)
        assert data is not None
        payload = jsonutil.loads(data)
        assert event.startswith(b"event: " + payload["type"].encode() + b"\ndata: ")
        STREAM_EVENT.validate_python(payload)
        parsed.append(payload)
    assert splitter.pending == b""
    return parsed


def translate(
    chunks: list[dict[str, Any]], request: dict[str, Any] | None = None, end: str = "done"
) -> list[dict[str, Any]]:
    translator = StreamTranslator(request or {"model": "support-bot", "input": "hi"}, IDS)
    stream = translator.start() + b"".join(translator.feed(c) for c in chunks)
    if end == "done":
        stream += translator.done()
    else:
        stream += translator.fail(
            UpstreamUnreachable(
                "The upstream ended the stream before [DONE].", reason="broken_stream"
            )
        )
    assert translator.finished
    found = events(stream)
    assert [event["sequence_number"] for event in found] == list(range(len(found)))
    return found


def test_a_text_stream_in_every_detail() -> None:
    found = translate(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "It "}),
            chunk({"content": "shipped."}),
            chunk({}, "stop"),
            chunk(usage=USAGE),
        ]
    )
    in_progress = {
        "id": "resp_t1",
        "object": "response",
        "created_at": 1_700_000_000,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": "support-bot",
        "output": [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": None,
        "temperature": None,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": None,
        "truncation": "disabled",
        "usage": None,
        "user": None,
        "metadata": {},
    }
    located = {"item_id": "msg_t1_0", "output_index": 0, "content_index": 0}
    text = {"type": "output_text", "text": "It shipped.", "annotations": []}
    item = {
        "id": "msg_t1_0",
        "type": "message",
        "status": "completed",
        "content": [text],
        "role": "assistant",
    }
    assert found == [
        {"type": "response.created", "sequence_number": 0, "response": in_progress},
        {"type": "response.in_progress", "sequence_number": 1, "response": in_progress},
        {
            "type": "response.output_item.added",
            "sequence_number": 2,
            "output_index": 0,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {
            "type": "response.content_part.added",
            "sequence_number": 3,
            **located,
            "part": {**text, "text": ""},
        },
        {
            "type": "response.output_text.delta",
            "sequence_number": 4,
            **located,
            "delta": "It ",
            "logprobs": [],
        },
        {
            "type": "response.output_text.delta",
            "sequence_number": 5,
            **located,
            "delta": "shipped.",
            "logprobs": [],
        },
        {
            "type": "response.output_text.done",
            "sequence_number": 6,
            **located,
            "text": "It shipped.",
            "logprobs": [],
        },
        {"type": "response.content_part.done", "sequence_number": 7, **located, "part": text},
        {
            "type": "response.output_item.done",
            "sequence_number": 8,
            "output_index": 0,
            "item": item,
        },
        {
            "type": "response.completed",
            "sequence_number": 9,
            "response": {
                **in_progress,
                "status": "completed",
                "model": "support-bot-v2",
                "output": [item],
                "usage": RESPONSE_USAGE,
            },
        },
    ]


CALLS_CHUNKS = [
    chunk({"role": "assistant", "content": "Checking"}),
    chunk({"content": " both."}),
    chunk(call_delta(0, "", "call_a", "lookup_order")),
    chunk(call_delta(0, '{"id"')),
    chunk(call_delta(0, ": 42}")),
    chunk(call_delta(1, '{"id": 43}', "call_b", "lookup_order")),
    chunk({}, "tool_calls"),
    chunk(usage=USAGE),
]
CALLS_COMPLETION = completion(
    {
        "role": "assistant",
        "content": "Checking both.",
        "tool_calls": [
            {
                "id": "call_a",
                "type": "function",
                "function": {"name": "lookup_order", "arguments": '{"id": 42}'},
            },
            {
                "id": "call_b",
                "type": "function",
                "function": {"name": "lookup_order", "arguments": '{"id": 43}'},
            },
        ],
    },
    "tool_calls",
    usage=USAGE,
)


def test_text_then_calls_are_items_one_after_the_other() -> None:
    found = translate(CALLS_CHUNKS)
    assert [(e["type"], e.get("output_index")) for e in found] == [
        ("response.created", None),
        ("response.in_progress", None),
        ("response.output_item.added", 0),
        ("response.content_part.added", 0),
        ("response.output_text.delta", 0),
        ("response.output_text.delta", 0),
        ("response.output_text.done", 0),
        ("response.content_part.done", 0),
        ("response.output_item.done", 0),
        ("response.output_item.added", 1),
        ("response.function_call_arguments.delta", 1),
        ("response.function_call_arguments.delta", 1),
        ("response.function_call_arguments.done", 1),
        ("response.output_item.done", 1),
        ("response.output_item.added", 2),
        ("response.function_call_arguments.delta", 2),
        ("response.function_call_arguments.done", 2),
        ("response.output_item.done", 2),
        ("response.completed", None),
    ]
    assert found[9]["item"] == {
        "id": "fc_t1_1",
        "type": "function_call",
        "status": "in_progress",
        "arguments": "",
        "call_id": "call_a",
        "name": "lookup_order",
    }
    assert [e["delta"] for e in found[10:12]] == ['{"id"', ": 42}"]
    assert found[12] == {
        "type": "response.function_call_arguments.done",
        "sequence_number": 12,
        "item_id": "fc_t1_1",
        "output_index": 1,
        "arguments": '{"id": 42}',
    }


def test_a_streamed_response_is_the_one_the_whole_answer_makes() -> None:
    request = {"model": "support-bot", "input": "hi", "tools": [LOOKUP]}
    streamed = translate(CALLS_CHUNKS, request)[-1]["response"]
    assert streamed == chat_to_response(CALLS_COMPLETION, request, IDS)
    items_done = [
        e["item"]
        for e in translate(CALLS_CHUNKS, request)
        if e["type"] == "response.output_item.done"
    ]
    assert items_done == streamed["output"]


def test_a_cut_stream_ends_incomplete() -> None:
    found = translate([chunk({"content": "It ship"}), chunk({}, "length"), chunk(usage=USAGE)])
    last = found[-1]
    assert last["type"] == "response.incomplete"
    assert last["response"]["status"] == "incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert last["response"]["output"][0]["status"] == "incomplete"


def test_a_call_fragment_after_a_later_call_began_is_an_error() -> None:
    translator = StreamTranslator({"model": "m"}, IDS)
    stream = translator.start()
    for delta in (
        call_delta(0, "{", "call_a", "f"),
        call_delta(1, "{}", "call_b", "g"),
        call_delta(0, "}"),
    ):
        stream += translator.feed(chunk(delta))
    assert translator.finished
    assert translator.feed(chunk({"content": "more"})) == b""
    assert translator.done() == b""
    assert events(stream)[-1] == error_event(
        8, "upstream_error", "The upstream streamed tool call 0 again after a later call began."
    )


def test_a_call_whose_id_repeats_in_every_delta_is_one_item() -> None:
    found = translate(
        [chunk(call_delta(0, "{", "call_a", "f")), chunk(call_delta(0, "}", "call_a", "f"))]
    )
    assert [e["item"]["arguments"] for e in found if e["type"] == "response.output_item.done"] == [
        "{}"
    ]


def test_text_after_a_call_is_a_message_item_after_it() -> None:
    found = translate([chunk(call_delta(0, "{}", "call_a", "f")), chunk({"content": "Done."})])
    assert [e["item"]["id"] for e in found if e["type"] == "response.output_item.done"] == [
        "fc_t1_0",
        "msg_t1_1",
    ]


def test_a_name_that_comes_after_the_first_delta_still_names_the_call() -> None:
    late = {"tool_calls": [{"index": 0, "id": "call_a", "function": {"arguments": ""}}]}
    found = translate(
        [
            chunk(late),
            chunk(call_delta(0, "{}")),
            chunk({"tool_calls": [{"index": 0, "function": {"name": "f"}}]}),
        ]
    )
    assert found[-1]["response"]["output"][0]["name"] == "f"


def error_event(sequence: int, code: str, message: str) -> dict[str, Any]:
    """The `error` event: `ResponseErrorEvent`'s fields, and the error object under `error`
    (what makes the SDK raise `APIError`)."""
    error = {"message": message, "type": "server_error", "param": None, "code": code}
    return {
        "type": "error",
        "sequence_number": sequence,
        "code": code,
        "message": message,
        "param": None,
        "error": error,
    }


def test_a_broken_upstream_ends_with_an_error_event_and_no_response() -> None:
    found = translate([chunk({"content": "It "})], end="fail")
    assert found[-1] == error_event(
        5, "upstream_error", "The upstream ended the stream before [DONE]."
    )
    assert not any(e["type"].startswith("response.completed") for e in found)


def test_an_upstream_error_chunk_ends_with_an_error_event() -> None:
    translator = StreamTranslator({"model": "m"}, IDS)
    upstream_error = {
        "error": {
            "message": "CUDA out of memory",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    found = events(translator.feed(chunk({"content": "It"})) + translator.feed(upstream_error))
    assert found[-1] == error_event(5, "server_error", "CUDA out of memory")
    assert translator.error is not None
    assert (translator.error.message, translator.error.reason) == (
        "CUDA out of memory",
        "error_event",
    )
    assert translator.done() == b""


def test_a_refusal_streams_as_a_refusal_part() -> None:
    found = translate(
        [chunk({"refusal": "I can't"}), chunk({"refusal": " help."}), chunk({}, "stop")]
    )
    assert [e["type"] for e in found[3:7]] == [
        "response.content_part.added",
        "response.refusal.delta",
        "response.refusal.delta",
        "response.refusal.done",
    ]
    assert found[6]["refusal"] == "I can't help."
    assert found[-1]["response"]["output"][0]["content"] == [
        {"type": "refusal", "refusal": "I can't help."}
    ]


def test_a_stream_without_usage_or_content_still_completes() -> None:
    found = translate([chunk({"role": "assistant", "content": ""}), chunk({}, "stop")])
    assert [e["type"] for e in found] == [
        "response.created",
        "response.in_progress",
        "response.completed",
    ]
    assert found[-1]["response"]["usage"] is None
    assert found[-1]["response"]["output"] == []


def test_start_is_written_once_even_if_feed_comes_first() -> None:
    translator = StreamTranslator({"model": "m"}, IDS)
    first = events(translator.feed(chunk({"content": "a"})))
    assert [e["type"] for e in first[:2]] == ["response.created", "response.in_progress"]
    assert translator.start() == b""


# ---------------------------------------------------------------------------------------------
# The `openai` SDK reads what the bridge writes


def bridge_app(
    scripts: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]], seen: list[dict[str, Any]]
) -> web.Application:
    """A server that answers `POST /v1/responses` through the bridge, with the chat answer
    scripted by model name: the chunks for a stream, the completion otherwise."""

    async def responses(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen.append(responses_to_chat(body))
        chunks, whole = scripts[body["model"]]
        if not body.get("stream"):
            return web.json_response(
                chat_to_response(whole, body, IDS), dumps=lambda v: jsonutil.dumps(v).decode()
            )
        translator = StreamTranslator(body, IDS)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(translator.start())
        for piece in chunks:
            await response.write(translator.feed(piece))
        if body["model"] == "broken":
            await response.write(
                translator.fail(UpstreamUnreachable("The upstream ended the stream before [DONE]."))
            )
        else:
            await response.write(translator.done())
        return response

    app = web.Application()
    app.router.add_post("/v1/responses", responses)
    return app


SCRIPTS = {
    "calls": (CALLS_CHUNKS, CALLS_COMPLETION),
    "broken": ([chunk({"content": "It "})], CALLS_COMPLETION),
}


@pytest.fixture
async def sdk() -> AsyncIterator[tuple[openai.AsyncOpenAI, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    runner = web.AppRunner(bridge_app(SCRIPTS, seen))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{bound_port(runner)}/v1", api_key="k", max_retries=0
    )
    try:
        yield client, seen
    finally:
        await client.close()
        await runner.cleanup()


SDK_TOOL: Any = {
    **LOOKUP,
    "strict": True,
    "parameters": {**LOOKUP["parameters"], "required": ["id"], "additionalProperties": False},
}


def matters(response: Any) -> dict[str, Any]:
    """What a client reads of a Response: items, text, calls, usage and status."""
    return {
        "id": response.id,
        "status": response.status,
        "output": [
            item.model_dump(exclude={"parsed_arguments"}, exclude_none=True)
            for item in response.output
        ],
        "output_text": response.output_text,
        "usage": response.usage.model_dump(exclude_none=True),
    }


async def test_sdk_stream_assembles_the_completed_response(
    sdk: tuple[openai.AsyncOpenAI, Any],
) -> None:
    client, seen = sdk
    async with client.responses.stream(
        model="calls", input="Check 42 and 43.", tools=[SDK_TOOL]
    ) as stream:
        received = [event async for event in stream]
        final = await stream.get_final_response()
    assert seen[0]["stream"] is True  # usage is asked for by the rewrite stage, not here
    assert "stream_options" not in seen[0]
    completed = received[-1]
    assert completed.type == "response.completed"
    assert matters(final) == matters(completed.response)
    assert matters(final) == {
        "id": "resp_t1",
        "status": "completed",
        "output": chat_to_response(CALLS_COMPLETION, {"model": "calls"}, IDS)["output"],
        "output_text": "Checking both.",
        "usage": RESPONSE_USAGE,
    }
    assert final.output[1].parsed_arguments == {"id": 42}  # type: ignore[union-attr]
    text_done = next(e for e in received if e.type == "response.output_text.done")
    assert text_done.text == "Checking both."


async def test_sdk_create_stream_yields_every_event_in_order(
    sdk: tuple[openai.AsyncOpenAI, Any],
) -> None:
    client, _ = sdk
    stream = await client.responses.create(model="calls", input="Check 42 and 43.", stream=True)
    received = [event async for event in stream]
    assert [e.sequence_number for e in received] == list(range(len(received)))
    assert [type(e).__name__ for e in received] == [
        type(STREAM_EVENT.validate_python(e)).__name__ for e in translate(CALLS_CHUNKS)
    ]
    assert received[-1].type == "response.completed"
    assert received[-1].response.output_text == "Checking both."


async def test_sdk_create_reads_the_whole_response(sdk: tuple[openai.AsyncOpenAI, Any]) -> None:
    client, seen = sdk
    response = await client.responses.create(
        model="calls", input="Check 42 and 43.", tools=[SDK_TOOL], tool_choice="required"
    )
    assert "stream" not in seen[0]
    assert response.output_text == "Checking both."
    calls = [item for item in response.output if item.type == "function_call"]
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [
        ("call_a", "lookup_order", '{"id": 42}'),
        ("call_b", "lookup_order", '{"id": 43}'),
    ]
    assert response.usage is not None
    assert response.usage.input_tokens_details.cached_tokens == 64
    assert [tool.type for tool in response.tools] == ["function"]
    assert response.tool_choice == "required"


async def test_sdk_sees_a_broken_stream_as_an_error_event(
    sdk: tuple[openai.AsyncOpenAI, Any],
) -> None:
    client, _ = sdk
    received: list[str] = []

    async def read_all() -> None:
        async with client.responses.stream(model="broken", input="hi") as stream:
            async for event in stream:
                received.append(event.type)

    with pytest.raises(openai.APIError, match=r"before \[DONE\]"):  # at the error event
        await read_all()
    assert received[:2] == ["response.created", "response.in_progress"]
    assert "error" not in received  # raised, not yielded
