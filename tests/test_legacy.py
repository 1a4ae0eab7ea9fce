"""Answers translated back for clients that sent legacy `functions` (OpenAI notes §1, §2)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from proxy import jsonutil
from proxy.errors import InvalidRequest
from proxy.rewrite import rewrite
from proxy.rewrite.legacy import chunk_to_legacy, response_to_legacy
from proxy.rewrite.policy import PASSTHROUGH, PolicySpec, build_policy

TRANSLATE = build_policy("legacy", PolicySpec())


def completion(message: dict[str, Any], finish_reason: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "ft",
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "ft",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def call(index: int, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def test_response_tool_call_becomes_function_call() -> None:
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "lookup_order", "arguments": '{"order_id":"A-1"}'},
            }
        ],
        "refusal": None,
    }
    response = completion(message, "tool_calls")
    original = copy.deepcopy(response)

    legacy = response_to_legacy(response)

    assert legacy["choices"][0]["message"] == {
        "role": "assistant",
        "content": None,
        "function_call": {"name": "lookup_order", "arguments": '{"order_id":"A-1"}'},
        "refusal": None,
    }
    assert legacy["choices"][0]["finish_reason"] == "function_call"
    assert legacy["usage"] == response["usage"]
    assert response == original


def test_response_keeps_only_the_first_of_parallel_calls() -> None:
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [call(0, "a", "first", "{}"), call(1, "b", "second", "{}")],
    }
    legacy = response_to_legacy(completion(message, "tool_calls"))
    assert legacy["choices"][0]["message"]["function_call"] == {"name": "first", "arguments": "{}"}


def test_response_without_calls_is_returned_as_is() -> None:
    response = completion({"role": "assistant", "content": "Hello"}, "stop")
    assert response_to_legacy(response) is response


def test_response_null_tool_calls_key_is_removed() -> None:
    response = completion({"role": "assistant", "content": "Hi", "tool_calls": None}, "stop")
    assert response_to_legacy(response)["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hi",
    }


@pytest.mark.parametrize(
    "response",
    [{"error": {"message": "x"}}, {"choices": "nope"}, {"choices": [None, 3]}],
)
def test_response_odd_shapes_are_returned_as_is(response: dict[str, Any]) -> None:
    assert response_to_legacy(response) is response


def test_response_unreadable_tool_calls_are_dropped() -> None:
    response = {"choices": [{"message": {"tool_calls": "odd"}, "finish_reason": "stop"}]}
    assert response_to_legacy(response) == {"choices": [{"message": {}, "finish_reason": "stop"}]}


def test_stream_is_translated_chunk_by_chunk() -> None:
    """The captured gpt-4o tool-call stream shape, in legacy form."""
    stream = [
        chunk({"role": "assistant", "content": None}),
        chunk({"tool_calls": [call(0, "call_4Xzl", "get_weather", "")], "refusal": None}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'city":"Paris"}'}}]}),
        chunk({}, "tool_calls"),
        {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": {}},
    ]
    legacy = [chunk_to_legacy(item) for item in stream]

    deltas = [item["choices"][0]["delta"] for item in legacy[:5]]
    assert deltas == [
        {"role": "assistant", "content": None},
        {"function_call": {"name": "get_weather", "arguments": ""}, "refusal": None},
        {"function_call": {"arguments": '{"'}},
        {"function_call": {"arguments": 'city":"Paris"}'}},
        {},
    ]
    assert legacy[4]["choices"][0]["finish_reason"] == "function_call"
    # chunks with nothing to translate are the same objects: a relay can forward their bytes
    assert legacy[0] is stream[0]
    assert legacy[5] is stream[5]
    joined = "".join(d.get("function_call", {}).get("arguments", "") for d in deltas)
    assert jsonutil.loads(joined) == {"city": "Paris"}


def test_stream_drops_fragments_of_later_calls() -> None:
    second_start = chunk({"tool_calls": [call(1, "call_2", "get_time", "")]})
    mixed = chunk(
        {
            "tool_calls": [
                {"index": 0, "function": {"arguments": "}"}},
                {"index": 1, "function": {"arguments": "{"}},
            ]
        }
    )
    assert chunk_to_legacy(second_start)["choices"][0]["delta"] == {}
    assert chunk_to_legacy(mixed)["choices"][0]["delta"] == {"function_call": {"arguments": "}"}}


def test_stream_azure_filter_chunk_passes() -> None:
    first = {
        "id": "",
        "object": "",
        "created": 0,
        "model": "",
        "prompt_filter_results": [],
        "choices": [],
    }
    assert chunk_to_legacy(first) is first


def test_request_history_ids_match_their_results() -> None:
    body = {
        "model": "m",
        "functions": [{"name": "f"}],
        "messages": [
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "f", "arguments": "{}"},
            },
            {"role": "function", "name": "f", "content": None},
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "f", "arguments": "{}"},
            },
            {"role": "function", "name": "f", "content": "2"},
        ],
    }
    messages = rewrite(body, TRANSLATE).body["messages"]
    first_id = messages[1]["tool_calls"][0]["id"]
    second_id = messages[3]["tool_calls"][0]["id"]
    assert first_id != second_id
    assert messages[2] == {"role": "tool", "tool_call_id": first_id, "content": ""}
    assert messages[4] == {"role": "tool", "tool_call_id": second_id, "content": "2"}


def test_request_legacy_flag_is_set_only_when_translated() -> None:
    body = {"model": "m", "messages": [], "functions": [{"name": "f"}]}
    assert rewrite(body, TRANSLATE).legacy_functions is True
    assert rewrite(body, PASSTHROUGH).legacy_functions is False
    assert rewrite({"model": "m", "messages": []}, TRANSLATE).legacy_functions is False


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"functions": "f"}, "functions"),
        ({"functions": [1]}, "functions[0]"),
        ({"function_call": 5}, "function_call"),
        ({"function_call": {"name": 5}}, "function_call"),
        ({"function_call": "auto", "tool_choice": "auto"}, "function_call"),
    ],
)
def test_request_wrong_shapes_are_400(fields: dict[str, Any], param: str) -> None:
    body = {"model": "m", "messages": [], **fields}
    with pytest.raises(InvalidRequest) as refused:
        rewrite(body, TRANSLATE)
    assert refused.value.param == param


def test_request_assistant_function_call_must_be_an_object() -> None:
    body = {
        "model": "m",
        "functions": [{"name": "f"}],
        "messages": [{"role": "assistant", "function_call": "f"}],
    }
    with pytest.raises(InvalidRequest) as refused:
        rewrite(body, TRANSLATE)
    assert refused.value.param == "messages[0].function_call"


def test_request_null_tools_do_not_hide_the_translation() -> None:
    body = {"model": "m", "messages": [], "functions": [{"name": "f"}], "tools": None}
    assert rewrite(body, TRANSLATE).body == {
        "model": "m",
        "messages": [],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "parallel_tool_calls": False,
    }
