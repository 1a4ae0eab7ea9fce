"""The fake model's answers: pure, so every test here is a dict in and a dict out."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest

from proxy.fake import model as fake_model
from proxy.fake.model import Behavior, complete, find_request_error, parse_behavior, stream_chunks
from proxy.jsonutil import loads

WELL_BEHAVED = Behavior()

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
ORDER = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Find an order and report its shipping status.",
        "parameters": {
            "type": "object",
            "properties": {
                "order_id": {"type": "integer", "minimum": 1},
                "include_items": {"type": "boolean"},
            },
            "required": ["order_id"],
        },
    },
}
REFUND = {
    "type": "function",
    "function": {
        "name": "issue-refund",
        "description": "Refund an order to the customer's card.",
        "parameters": {
            "type": "object",
            "properties": {
                "order_id": {"type": "integer"},
                "reason": {"type": "string", "maxLength": 40},
            },
            "required": ["order_id", "reason"],
        },
    },
}
TOOLS = [WEATHER, ORDER, REFUND]


def request(text: str, tools: list[dict[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "mock-model", "messages": [{"role": "user", "content": text}]}
    if tools is not None:
        body["tools"] = tools
    return {**body, **fields}


def message_of(body: dict[str, Any], behavior: Behavior = WELL_BEHAVED) -> dict[str, Any]:
    message: dict[str, Any] = complete(body, behavior)["choices"][0]["message"]
    return message


def called_names(body: dict[str, Any], behavior: Behavior = WELL_BEHAVED) -> list[str]:
    return [call["function"]["name"] for call in message_of(body, behavior).get("tool_calls", [])]


def first_arguments(body: dict[str, Any], behavior: Behavior = WELL_BEHAVED) -> Any:
    return loads(message_of(body, behavior)["tool_calls"][0]["function"]["arguments"])


def schema_of(tool: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = tool["function"]["parameters"]
    return schema


# ---------------------------------------------------------------------------
# Steering


@pytest.mark.parametrize(
    ("model", "header", "expected"),
    [
        ("gpt-4o-mini", None, Behavior()),
        ("ft:gpt-4o-2024-08-06:acme::abc123", None, Behavior()),
        ("ft-error-429", None, Behavior(error_status=429)),
        ("ft_error_503", None, Behavior(error_status=503)),
        ("ft-error", None, Behavior(error_status=500)),
        ("ft-error-999", None, Behavior(error_status=500)),
        ("ft-slow", None, Behavior(delay_ms=fake_model.DEFAULT_SLOW_MS)),
        ("ft-slow-20", None, Behavior(delay_ms=20)),
        ("ft-stall", None, Behavior(stall_ms=fake_model.STALL_MS)),
        ("ft-stall-50", None, Behavior(stall_ms=50)),
        ("ft-stream-stall", None, Behavior(stream_stall_ms=fake_model.STALL_MS)),
        ("ft-stream-cut", None, Behavior(stream_cut=True)),
        ("ft-tool", None, Behavior(tool_mode="always")),
        ("ft-text", None, Behavior(tool_mode="never")),
        ("ft-parallel", None, Behavior(parallel=True)),
        ("ft-invalid-args", None, Behavior(invalid_args=True)),
        ("ft-bad-json", None, Behavior(bad_json=True)),
        ("ft-tools-textual", None, Behavior()),
        ("mock-model", "error-429", Behavior(error_status=429)),
        ("mock-model", "slow-10, tool", Behavior(delay_ms=10, tool_mode="always")),
        ("ft-text-slow-5", "tool", Behavior(delay_ms=5, tool_mode="always")),
        ("FT-Error-404", None, Behavior(error_status=404)),
    ],
)
def test_parse_behavior_reads_words_of_the_model_then_the_header(
    model: str, header: str | None, expected: Behavior
) -> None:
    assert parse_behavior(model, header) == expected


# ---------------------------------------------------------------------------
# Which tool, and when


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What's the weather in Paris?", "get_weather"),
        ("Where is my order 12345? What is its shipping status?", "lookup_order"),
        ("Please refund order 12345 to my card", "issue-refund"),
        ("Hello there", "get_weather"),  # no shared word: the first tool
    ],
)
def test_calls_the_tool_sharing_most_words_with_the_message(text: str, expected: str) -> None:
    assert called_names(request(text, TOOLS)) == [expected]


def test_a_tie_goes_to_the_first_tool() -> None:
    # "order" is in both lookup_order's and issue-refund's words, and nothing else matches.
    assert called_names(request("order", [ORDER, REFUND])) == ["lookup_order"]
    assert called_names(request("order", [REFUND, ORDER])) == ["issue-refund"]


def test_slimmed_tools_are_matched_by_name_and_called_with_empty_arguments() -> None:
    slim = [
        {"type": "function", "function": {"name": "getWeather", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "lookup_order"}},
    ]
    message = message_of(request("Look up order 7", slim))
    assert [call["function"]["name"] for call in message["tool_calls"]] == ["lookup_order"]
    assert message["tool_calls"][0]["function"]["arguments"] == "{}"
    assert called_names(request("weather in Rome", slim)) == ["getWeather"]


@pytest.mark.parametrize("required", [True, "order_id", {"order_id": 1}, None])
def test_a_schema_whose_required_is_not_a_list_gets_a_call_all_the_same(required: Any) -> None:
    """A client's schema is anything: a `required` that lists nothing names no argument (the
    fake answered a 500 for a `true` there)."""
    tool = {
        "type": "function",
        "function": {"name": "lookup_order", "parameters": {"required": required}},
    }
    message = message_of(request("Look up order 7", [tool]))
    assert message["tool_calls"][0]["function"]["arguments"] == "{}"


def test_tool_call_answer_has_openai_shape() -> None:
    response = complete(request("weather in Paris", TOOLS), WELL_BEHAVED)
    choice = response["choices"][0]
    assert response["object"] == "chat.completion"
    assert response["model"] == "mock-model"
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function"
    assert call["id"].startswith("call_")
    assert isinstance(call["function"]["arguments"], str)


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("none", []),
        ("auto", ["get_weather"]),
        ("required", ["get_weather"]),
        ({"type": "function", "function": {"name": "issue-refund"}}, ["issue-refund"]),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "lookup_order"}}],
                },
            },
            ["lookup_order"],
        ),
    ],
)
def test_tool_choice_is_obeyed(tool_choice: Any, expected: list[str]) -> None:
    body = request("weather in Paris", TOOLS, tool_choice=tool_choice)
    assert called_names(body) == expected


def after_tool_result(**fields: Any) -> dict[str, Any]:
    return {
        "model": "mock-model",
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": "Where is order 12345?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup_order", "arguments": '{"order_id":12345}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "shipped on Monday"},
        ],
        **fields,
    }


def test_after_tool_results_it_answers_in_text_quoting_them() -> None:
    response = complete(after_tool_result(), WELL_BEHAVED)
    message = response["choices"][0]["message"]
    assert response["choices"][0]["finish_reason"] == "stop"
    assert "tool_calls" not in message
    assert "shipped on Monday" in message["content"]
    assert "lookup_order" in message["content"]


def test_tool_results_given_as_text_parts_are_quoted() -> None:
    body = after_tool_result()
    body["messages"][-1]["content"] = [{"type": "text", "text": "out for delivery"}]
    assert "out for delivery" in message_of(body)["content"]


def test_required_choice_calls_again_after_tool_results() -> None:
    assert called_names(after_tool_result(tool_choice="required")) == ["lookup_order"]


def test_steering_tool_and_text_override_the_defaults() -> None:
    assert called_names(after_tool_result(), Behavior(tool_mode="always")) == ["lookup_order"]
    assert called_names(request("weather in Paris", TOOLS), Behavior(tool_mode="never")) == []
    forced = request("weather in Paris", TOOLS, tool_choice="none")
    assert called_names(forced, Behavior(tool_mode="always")) == ["get_weather"]


def test_parallel_steering_calls_the_two_best_tools_with_distinct_ids() -> None:
    message = message_of(request("refund order 5", TOOLS), Behavior(parallel=True))
    calls = message["tool_calls"]
    assert [call["function"]["name"] for call in calls] == ["issue-refund", "lookup_order"]
    assert calls[0]["id"] != calls[1]["id"]


def test_without_tools_it_answers_in_text_quoting_the_user() -> None:
    response = complete(request("Say hello"), WELL_BEHAVED)
    assert response["choices"][0]["finish_reason"] == "stop"
    assert "Say hello" in response["choices"][0]["message"]["content"]


def test_max_tokens_truncates_the_text_with_finish_length() -> None:
    response = complete(request("Say hello " * 20, max_tokens=3), WELL_BEHAVED)
    assert response["choices"][0]["finish_reason"] == "length"
    assert len(response["choices"][0]["message"]["content"]) == 3 * fake_model.CHARS_PER_TOKEN


def test_json_schema_response_format_gets_content_that_fits() -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}, "score": {"type": "number"}},
        "required": ["answer", "score"],
        "additionalProperties": False,
    }
    body = request(
        "rate it",
        response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema}},
    )
    jsonschema.validate(loads(message_of(body)["content"]), schema)


# ---------------------------------------------------------------------------
# Arguments


def test_string_and_integer_values_come_from_the_message() -> None:
    assert first_arguments(request("What's the weather in Paris?", [WEATHER])) == {
        "city": "Paris",
        "unit": "celsius",
    }
    assert first_arguments(request("Status of order 4242", [ORDER])) == {"order_id": 4242}


NESTED_SCHEMA = {
    "type": "object",
    "$defs": {
        "address": {
            "type": "object",
            "properties": {
                "street": {"type": "string", "minLength": 12},
                "zip": {"type": "string", "pattern": "^.*$"},
                "country": {"const": "FR"},
            },
            "required": ["street", "country"],
        }
    },
    "properties": {
        "customer": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "email": {"type": "string", "format": "email"},
                "address": {"$ref": "#/$defs/address"},
                "nickname": {"type": "string"},
            },
            "required": ["name", "email", "address"],
        },
        "quantity": {"type": "integer", "minimum": 3, "maximum": 9},
        "discount": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1.5},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "note": {"type": ["string", "null"], "maxLength": 3},
        "priority": {"anyOf": [{"type": "null"}, {"enum": ["high", "low"]}]},
        "gift": {"type": "boolean"},
        "extras": {"type": "object", "additionalProperties": {"type": "integer"}},
        "when": {"type": "string", "format": "date-time"},
        "both": {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                {"properties": {"b": {"type": "boolean"}}, "required": ["b"]},
            ]
        },
    },
    "required": [
        "customer",
        "quantity",
        "discount",
        "tags",
        "note",
        "priority",
        "gift",
        "extras",
        "when",
        "both",
    ],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    "schema",
    [schema_of(WEATHER), schema_of(ORDER), schema_of(REFUND), NESTED_SCHEMA],
    ids=["weather", "order", "refund", "nested"],
)
@pytest.mark.parametrize(
    "text", ["Please order 12345 for Marie-Claire", "", "what about 99999999999999999999?"]
)
def test_arguments_fit_the_schema(schema: dict[str, Any], text: str) -> None:
    tool = {"type": "function", "function": {"name": "act", "parameters": schema}}
    arguments = first_arguments(request(text, [tool]))
    jsonschema.validate(arguments, schema)
    assert set(arguments) == set(schema["required"])


def test_invalid_args_steering_drops_a_required_property() -> None:
    arguments = first_arguments(request("refund order 9", [REFUND]), Behavior(invalid_args=True))
    assert arguments == {"reason": "9"}
    with pytest.raises(jsonschema.ValidationError, match="order_id"):
        jsonschema.validate(arguments, schema_of(REFUND))


# ---------------------------------------------------------------------------
# Legacy functions


def legacy_request(**fields: Any) -> dict[str, Any]:
    functions = [tool["function"] for tool in TOOLS]
    return request("weather in Paris", None, functions=functions, **fields)


def test_legacy_functions_get_a_function_call() -> None:
    choice = complete(legacy_request(), WELL_BEHAVED)["choices"][0]
    assert choice["finish_reason"] == "function_call"
    assert choice["message"]["function_call"]["name"] == "get_weather"
    assert "tool_calls" not in choice["message"]
    assert loads(choice["message"]["function_call"]["arguments"])["city"] == "Paris"


def test_legacy_function_call_none_and_named() -> None:
    assert "function_call" not in message_of(legacy_request(function_call="none"))
    named = message_of(legacy_request(function_call={"name": "lookup_order"}))
    assert named["function_call"]["name"] == "lookup_order"


def test_legacy_function_result_is_quoted() -> None:
    body = legacy_request()
    body["messages"] += [
        {
            "role": "assistant",
            "content": None,
            "function_call": {"name": "get_weather", "arguments": "{}"},
        },
        {"role": "function", "name": "get_weather", "content": "sunny, 21 degrees"},
    ]
    assert "sunny, 21 degrees" in message_of(body)["content"]


def test_legacy_stream_reassembles() -> None:
    body = legacy_request(stream=True)
    chunks = stream_chunks(body, WELL_BEHAVED)
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks]
    assert deltas[0]["function_call"]["name"] == "get_weather"
    assert all("name" not in delta.get("function_call", {}) for delta in deltas[1:])
    arguments = "".join(delta.get("function_call", {}).get("arguments", "") for delta in deltas)
    assert arguments == message_of(body)["function_call"]["arguments"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "function_call"


# ---------------------------------------------------------------------------
# Usage


def test_usage_counts_and_grows_with_the_request() -> None:
    slim = [{"type": "function", "function": {"name": tool["function"]["name"]}} for tool in TOOLS]
    full_usage = complete(request("refund order 5", TOOLS), WELL_BEHAVED)["usage"]
    slim_usage = complete(request("refund order 5", slim), WELL_BEHAVED)["usage"]
    assert full_usage["prompt_tokens"] > slim_usage["prompt_tokens"] >= 1
    for usage in (full_usage, slim_usage):
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert usage["completion_tokens"] >= 1
        assert usage["prompt_tokens_details"]["cached_tokens"] == 0


def test_completion_tokens_grow_with_the_answer() -> None:
    short = complete(request("hi"), WELL_BEHAVED)["usage"]["completion_tokens"]
    long = complete(request("hi " * 40), WELL_BEHAVED)["usage"]["completion_tokens"]
    assert long > short


# ---------------------------------------------------------------------------
# Streaming


def reassemble(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Join deltas as a client does: content concatenated, tool calls by index."""
    content: str | None = None
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            delta = choice["delta"]
            if delta.get("content") is not None:
                content = (content or "") + delta["content"]
            for fragment in delta.get("tool_calls", []):
                call = calls.setdefault(
                    fragment["index"], {"function": {"name": "", "arguments": ""}}
                )
                call.update({key: fragment[key] for key in ("id", "type") if key in fragment})
                call["function"]["name"] += fragment["function"].get("name", "")
                call["function"]["arguments"] += fragment["function"].get("arguments", "")
    message: dict[str, Any] = {"content": content}
    if calls:
        message["tool_calls"] = [calls[index] for index in sorted(calls)]
    return message


@pytest.mark.parametrize(
    ("body", "behavior"),
    [
        (request("refund order 5 because it broke", TOOLS), WELL_BEHAVED),
        (request("refund order 5", TOOLS), Behavior(parallel=True)),
        (request("Tell me a story about a lighthouse keeper"), WELL_BEHAVED),
        (after_tool_result(), WELL_BEHAVED),
    ],
    ids=["tool", "parallel", "text", "after-tool"],
)
def test_stream_reassembles_to_the_non_stream_answer(
    body: dict[str, Any], behavior: Behavior
) -> None:
    expected = message_of(body, behavior)
    streamed = reassemble(stream_chunks({**body, "stream": True}, behavior))
    assert streamed["content"] == expected["content"]
    assert streamed.get("tool_calls") == expected.get("tool_calls")


def test_tool_call_ids_and_names_only_in_first_delta_of_each_index() -> None:
    chunks = stream_chunks(request("refund order 5", TOOLS, stream=True), Behavior(parallel=True))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    seen: set[int] = set()
    fragments_per_index: dict[int, int] = {}
    for chunk in chunks:
        for fragment in chunk["choices"][0]["delta"].get("tool_calls", []):
            index = fragment["index"]
            first = index not in seen
            seen.add(index)
            assert ("id" in fragment) is first
            assert ("type" in fragment) is first
            assert ("name" in fragment["function"]) is first
            if not first:
                fragments_per_index[index] = fragments_per_index.get(index, 0) + 1
    assert seen == {0, 1}
    assert set(fragments_per_index) == seen  # each call goes on past its first delta
    assert all(count >= 2 for count in fragments_per_index.values())


def test_text_stream_starts_with_a_role_chunk_and_ends_with_finish() -> None:
    chunks = stream_chunks(request("hello there", stream=True), WELL_BEHAVED)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks[:-1]] == [None] * (
        len(chunks) - 1
    )
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert len([chunk for chunk in chunks if chunk["choices"][0]["delta"].get("content")]) > 1


def test_chunks_share_id_created_and_model() -> None:
    chunks = stream_chunks(request("hello", TOOLS, stream=True), WELL_BEHAVED)
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in chunks} == {
        (chunks[0]["id"], chunks[0]["created"], "mock-model", "chat.completion.chunk")
    }


def test_include_usage_adds_a_usage_chunk_and_null_usage_elsewhere() -> None:
    body = request("hello", TOOLS, stream=True, stream_options={"include_usage": True})
    chunks = stream_chunks(body, WELL_BEHAVED)
    *deltas, last = chunks
    assert last["choices"] == []
    assert last["usage"] == complete(body, WELL_BEHAVED)["usage"]
    assert all(chunk["usage"] is None for chunk in deltas)
    assert deltas[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("options", [None, {"include_usage": False}])
def test_without_include_usage_no_chunk_has_usage(options: Any) -> None:
    body = request("hello", TOOLS, stream=True)
    if options is not None:
        body["stream_options"] = options
    chunks = stream_chunks(body, WELL_BEHAVED)
    assert all("usage" not in chunk for chunk in chunks)
    assert all(chunk["choices"] for chunk in chunks)


def test_answers_are_deterministic_and_leave_the_request_untouched() -> None:
    body = request("refund order 5", TOOLS)
    before = copy.deepcopy(body)
    first, second = complete(body, WELL_BEHAVED), complete(body, WELL_BEHAVED)
    assert first["choices"] == second["choices"]
    assert first["id"] == second["id"]
    assert body == before


# ---------------------------------------------------------------------------
# Request checks


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": ["hi"]}, "messages[0]"),
        (request("hi", tool_choice="auto"), "tool_choice"),
        (request("hi", parallel_tool_calls=False), "parallel_tool_calls"),
        (request("hi", function_call="auto"), "function_call"),
        (
            request("hi", TOOLS, tool_choice={"type": "function", "function": {"name": "gone"}}),
            "tool_choice",
        ),
        (request("hi", stream_options={"include_usage": True}), "stream_options"),
    ],
)
def test_find_request_error_names_the_param(body: dict[str, Any], param: str) -> None:
    problem = find_request_error(body)
    assert problem is not None
    assert problem.status == 400
    assert problem.param == param


def test_find_request_error_accepts_a_good_request() -> None:
    body = request("hi", TOOLS, tool_choice="required", parallel_tool_calls=False, stream=True)
    assert find_request_error({**body, "stream_options": {"include_usage": True}}) is None
