"""The fake model's Responses API: pure, so every test here is a dict in and a dict out.

The chat fake decides; these tests hold the Responses fake to the same decisions on the same
conversations, and to the shapes of the installed `openai` SDK's types.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from proxy.fake.model import ARGUMENT_FRAGMENT_CHARS, CHARS_PER_TOKEN, Behavior, complete
from proxy.fake.responses import as_chat_request, find_responses_error, respond, stream_events
from proxy.jsonutil import loads

WELL_BEHAVED = Behavior()
STREAM_EVENT = TypeAdapter(ResponseStreamEvent)


def flat(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """A Responses function tool."""
    return {
        "type": "function",
        "name": name,
        "description": description,
        "parameters": parameters,
        "strict": False,
    }


def nested(tool: dict[str, Any]) -> dict[str, Any]:
    """The same tool as chat takes it."""
    return {"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}}


WEATHER = flat(
    "get_weather",
    "Current weather for a city.",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
    },
)
ORDER = flat(
    "lookup_order",
    "Find an order and report its shipping status.",
    {
        "type": "object",
        "properties": {"order_id": {"type": "integer", "minimum": 1}},
        "required": ["order_id"],
    },
)
REFUND = flat(
    "issue-refund",
    "Refund an order to the customer's card.",
    {
        "type": "object",
        "properties": {"order_id": {"type": "integer"}, "reason": {"type": "string"}},
        "required": ["order_id", "reason"],
    },
)
TOOLS = [WEATHER, ORDER, REFUND]


def responses_request(
    said: str, tools: list[dict[str, Any]] | None = None, **fields: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "mock-model", "input": said}
    if tools is not None:
        body["tools"] = tools
    return {**body, **fields}


def chat_request(
    said: str, tools: list[dict[str, Any]] | None = None, **fields: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "mock-model", "messages": [{"role": "user", "content": said}]}
    if tools is not None:
        body["tools"] = [nested(tool) for tool in tools]
    return {**body, **fields}


def after_result_responses(**fields: Any) -> dict[str, Any]:
    return {
        "model": "mock-model",
        "tools": TOOLS,
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Where is order 12345?"}]},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "lookup_order",
                "arguments": '{"order_id":12345}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "shipped on Monday"},
        ],
        **fields,
    }


def after_result_chat(**fields: Any) -> dict[str, Any]:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup_order", "arguments": '{"order_id":12345}'},
    }
    return {
        "model": "mock-model",
        "tools": [nested(tool) for tool in TOOLS],
        "messages": [
            {"role": "user", "content": "Where is order 12345?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "shipped on Monday"},
        ],
        **fields,
    }


def chat_decision(body: dict[str, Any], behavior: Behavior) -> tuple[Any, ...]:
    """(text, [(name, arguments)], finished) of a chat completion."""
    choice = complete(body, behavior)["choices"][0]
    calls = [
        (call["function"]["name"], call["function"]["arguments"])
        for call in choice["message"].get("tool_calls", [])
    ]
    return choice["message"]["content"], calls, choice["finish_reason"] != "length"


def responses_decision(body: dict[str, Any], behavior: Behavior) -> tuple[Any, ...]:
    """(text, [(name, arguments)], finished) of a Response."""
    response = respond(body, behavior)
    calls = [(item["name"], item["arguments"]) for item in function_calls(response)]
    texts = [item["content"][0]["text"] for item in response["output"] if item["type"] == "message"]
    return (texts[0] if texts else None), calls, response["status"] == "completed"


def function_calls(response: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for item in response["output"] if item["type"] == "function_call"]


# ---------------------------------------------------------------------------
# The same decisions as chat


SAME_CONVERSATIONS = {
    "best-tool": (responses_request("What's the weather in Paris?", TOOLS), chat_request(
        "What's the weather in Paris?", TOOLS)),
    "refund": (responses_request("Please refund order 12345 to my card", TOOLS), chat_request(
        "Please refund order 12345 to my card", TOOLS)),
    "no-tools": (responses_request("Say hello"), chat_request("Say hello")),
    "after-result": (after_result_responses(), after_result_chat()),
    "required-after-result": (
        after_result_responses(tool_choice="required"), after_result_chat(tool_choice="required")),
    "none": (responses_request("weather in Paris", TOOLS, tool_choice="none"),
             chat_request("weather in Paris", TOOLS, tool_choice="none")),
    "named": (
        responses_request("weather in Paris", TOOLS, tool_choice={"type": "function",
                                                                   "name": "issue-refund"}),
        chat_request("weather in Paris", TOOLS, tool_choice={"type": "function", "function": {
            "name": "issue-refund"}})),
    "allowed-tools": (
        responses_request("weather in Paris", TOOLS, tool_choice={
            "type": "allowed_tools", "mode": "required",
            "tools": [{"type": "function", "name": "lookup_order"}]}),
        chat_request("weather in Paris", TOOLS, tool_choice={"type": "allowed_tools",
            "allowed_tools": {"mode": "required", "tools": [
                {"type": "function", "function": {"name": "lookup_order"}}]}})),
    "length": (responses_request("Say hello " * 20, max_output_tokens=3),
               chat_request("Say hello " * 20, max_tokens=3)),
    "instructions": (
        responses_request("hi", TOOLS, instructions="You are terse."),
        {**chat_request("hi", TOOLS), "messages": [{"role": "system", "content": "You are terse."},
                                                   {"role": "user", "content": "hi"}]}),
    "json-schema": (
        responses_request("rate it", text={"format": {
            "type": "json_schema", "name": "r", "schema": {
                "type": "object", "properties": {"score": {"type": "number"}},
                "required": ["score"]}}}),
        chat_request("rate it", response_format={"type": "json_schema", "json_schema": {
            "name": "r", "schema": {"type": "object", "properties": {"score": {"type": "number"}},
                                    "required": ["score"]}}})),
}  # fmt: skip


@pytest.mark.parametrize(
    "behavior",
    [
        WELL_BEHAVED,
        Behavior(tool_mode="always"),
        Behavior(tool_mode="never"),
        Behavior(parallel=True),
        Behavior(invalid_args=True),
    ],
    ids=["plain", "tool", "text", "parallel", "invalid-args"],
)
@pytest.mark.parametrize("case", SAME_CONVERSATIONS)
def test_the_same_conversation_gets_the_same_decision_as_chat(
    case: str, behavior: Behavior
) -> None:
    responses_body, chat_body = SAME_CONVERSATIONS[case]
    assert responses_decision(responses_body, behavior) == chat_decision(chat_body, behavior)


def test_the_conversion_to_chat_keeps_turns_parts_and_limits() -> None:
    body = {
        "model": "m",
        "instructions": "Be brief.",
        "input": [
            {"type": "message", "role": "developer", "content": "Use metric units."},
            {"role": "user", "content": [{"type": "input_text", "text": "Oslo and Rome?"}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "cold"},
            {"type": "function_call_output", "call_id": "c2",
             "output": [{"type": "input_text", "text": "warm"}]},
        ],
        "tools": [WEATHER, {"type": "web_search"}],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": False,
        "max_output_tokens": 50,
        "text": {"format": {"type": "json_object"}},
        "temperature": 0.2,
    }  # fmt: skip
    calls = [
        {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
        for call_id in ("c1", "c2")
    ]
    assert as_chat_request(body) == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Use metric units."},
            {"role": "user", "content": [{"type": "text", "text": "Oslo and Rome?"}]},
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "tool_call_id": "c1", "content": "cold"},
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "warm"}]},
        ],
        "tools": [nested(WEATHER), {"type": "web_search"}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "max_tokens": 50,
        "response_format": {"type": "json_object"},
    }


def test_parallel_steering_gives_two_calls_with_distinct_ids() -> None:
    calls = function_calls(
        respond(responses_request("refund order 5", TOOLS), Behavior(parallel=True))
    )
    assert [call["name"] for call in calls] == ["issue-refund", "lookup_order"]
    assert len({call["call_id"] for call in calls}) == len({call["id"] for call in calls}) == 2


def test_after_tool_results_the_text_quotes_them_with_the_function_name() -> None:
    text = respond(after_result_responses(), WELL_BEHAVED)["output"][0]["content"][0]["text"]
    assert "lookup_order" in text
    assert "shipped on Monday" in text


# ---------------------------------------------------------------------------
# The Response object


@pytest.mark.parametrize(
    "body",
    [
        responses_request("What's the weather in Paris?", TOOLS),
        responses_request("Tell me a story"),
        responses_request("Say hello " * 20, max_output_tokens=3),
        after_result_responses(metadata={"k": "v"}, temperature=0.3, store=False),
    ],
    ids=["call", "text", "incomplete", "echoed"],
)
def test_responses_validate_against_the_sdk_type(body: dict[str, Any]) -> None:
    response = respond(body, WELL_BEHAVED)
    parsed = Response.model_validate(response)
    assert parsed.id.startswith("resp_")
    assert parsed.object == "response"
    assert parsed.model == "mock-model"
    for key in ("tools", "metadata", "temperature", "store"):
        if key in body:
            assert response[key] == body[key]


def test_a_tool_call_is_a_function_call_item() -> None:
    response = respond(responses_request("What's the weather in Paris?", TOOLS), WELL_BEHAVED)
    assert response["status"] == "completed"
    assert response["incomplete_details"] is None
    [call] = response["output"]
    assert call["type"] == "function_call"
    assert call["id"].startswith("fc_")
    assert call["call_id"].startswith("call_")
    assert call["status"] == "completed"
    assert loads(call["arguments"]) == {"city": "Paris", "unit": "celsius"}


def test_a_text_answer_is_one_message_with_output_text() -> None:
    response = respond(responses_request("Say hello"), WELL_BEHAVED)
    [message] = response["output"]
    assert message["id"].startswith("msg_")
    assert (message["type"], message["role"], message["status"]) == (
        "message",
        "assistant",
        "completed",
    )
    [part] = message["content"]
    assert part["type"] == "output_text"
    assert part["annotations"] == []
    assert "Say hello" in part["text"]


def test_max_output_tokens_cuts_the_text_and_makes_it_incomplete() -> None:
    response = respond(responses_request("Say hello " * 20, max_output_tokens=3), WELL_BEHAVED)
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["completed_at"] is None
    assert response["output"][0]["status"] == "incomplete"
    assert len(response["output"][0]["content"][0]["text"]) == 3 * CHARS_PER_TOKEN


def test_usage_adds_up_and_slim_tools_cost_fewer_input_tokens() -> None:
    slim = [{"type": "function", "name": tool["name"]} for tool in TOOLS]
    full_usage = respond(responses_request("refund order 5", TOOLS), WELL_BEHAVED)["usage"]
    slim_usage = respond(responses_request("refund order 5", slim), WELL_BEHAVED)["usage"]
    assert full_usage["input_tokens"] > slim_usage["input_tokens"] >= 1
    for usage in (full_usage, slim_usage):
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        assert usage["input_tokens_details"]["cached_tokens"] == 0
        assert usage["output_tokens_details"]["reasoning_tokens"] == 0


@pytest.mark.parametrize("case", ["refund", "instructions", "length"])
def test_usage_is_the_chat_fakes_for_the_same_conversation(case: str) -> None:
    responses_body, chat_body = SAME_CONVERSATIONS[case]
    response = respond(responses_body, WELL_BEHAVED)["usage"]
    chat = complete(chat_body, WELL_BEHAVED)["usage"]
    assert (response["input_tokens"], response["output_tokens"]) == (
        chat["prompt_tokens"],
        chat["completion_tokens"],
    )


def test_answers_are_deterministic_and_leave_the_request_untouched() -> None:
    body = after_result_responses(tool_choice="required")
    before = copy.deepcopy(body)
    first, second = respond(body, WELL_BEHAVED), respond(body, WELL_BEHAVED)
    assert (first["id"], first["output"]) == (second["id"], second["output"])
    assert body == before
    other = respond({**body, "metadata": {"run": "2"}}, WELL_BEHAVED)
    assert other["id"] != first["id"]


# ---------------------------------------------------------------------------
# The stream


def reassemble(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The output items as a client builds them: from the added items and their deltas."""
    items: dict[int, dict[str, Any]] = {}
    for event in events:
        kind = event["type"]
        if kind == "response.output_item.added":
            items[event["output_index"]] = copy.deepcopy(event["item"])
        elif kind == "response.content_part.added":
            items[event["output_index"]]["content"].append(copy.deepcopy(event["part"]))
        elif kind == "response.output_text.delta":
            items[event["output_index"]]["content"][event["content_index"]]["text"] += event[
                "delta"
            ]
        elif kind == "response.function_call_arguments.delta":
            items[event["output_index"]]["arguments"] += event["delta"]
        elif kind == "response.output_item.done":
            items[event["output_index"]]["status"] = event["item"]["status"]
    return [items[index] for index in sorted(items)]


STREAMED = {
    "call": (responses_request("refund order 5 because it broke", TOOLS), WELL_BEHAVED),
    "parallel": (responses_request("refund order 5", TOOLS), Behavior(parallel=True)),
    "text": (responses_request("Tell me a story about a lighthouse keeper"), WELL_BEHAVED),
    "after-result": (after_result_responses(), WELL_BEHAVED),
    "incomplete": (responses_request("Say hello " * 20, max_output_tokens=3), WELL_BEHAVED),
}


@pytest.mark.parametrize("case", STREAMED)
def test_stream_reassembles_to_the_non_stream_answer(case: str) -> None:
    body, behavior = STREAMED[case]
    expected = respond(body, behavior)
    events = stream_events({**body, "stream": True}, behavior)
    assert reassemble(events) == expected["output"]
    last = events[-1]
    assert last["type"] == f"response.{expected['status']}"
    assert {**last["response"], "created_at": 0, "completed_at": 0} == {
        **expected,
        "created_at": 0,
        "completed_at": 0,
    }


@pytest.mark.parametrize("case", STREAMED)
def test_every_event_validates_and_numbers_rise_from_zero(case: str) -> None:
    body, behavior = STREAMED[case]
    events = stream_events({**body, "stream": True}, behavior)
    for event in events:
        STREAM_EVENT.validate_python(event)
    assert [event["sequence_number"] for event in events] == list(range(len(events)))


def test_text_events_come_in_the_documented_order() -> None:
    events = stream_events(responses_request("hello there friend", stream=True), WELL_BEHAVED)
    kinds = [event["type"] for event in events]
    deltas = kinds.count("response.output_text.delta")
    assert deltas > 1
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[0]["response"]["status"] == "in_progress"
    assert events[0]["response"]["output"] == []
    assert events[0]["response"]["usage"] is None


def test_call_events_give_name_and_call_id_once_and_arguments_in_fragments() -> None:
    body = responses_request("refund order 5 because it broke", TOOLS, stream=True)
    events = stream_events(body, WELL_BEHAVED)
    [added] = [event for event in events if event["type"] == "response.output_item.added"]
    assert added["item"]["arguments"] == ""
    assert added["item"]["status"] == "in_progress"
    call = respond(body, WELL_BEHAVED)["output"][0]
    assert (added["item"]["call_id"], added["item"]["name"]) == (call["call_id"], call["name"])
    fragments = [
        e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"
    ]
    assert len(fragments) > 1
    assert all(len(fragment) <= ARGUMENT_FRAGMENT_CHARS for fragment in fragments)
    [done] = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert done["arguments"] == "".join(fragments) == call["arguments"]


# ---------------------------------------------------------------------------
# Request checks


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": "m", "input": {"role": "user", "content": "hi"}}, "input"),
        ({"model": "m", "input": 42}, "input"),
        ({"model": "m", "input": [{"role": "user", "content": "hi"}, "hi"]}, "input[1]"),
        (responses_request("hi", TOOLS, tool_choice={"type": "function", "name": "gone"}),
         "tool_choice"),
        (responses_request("hi", tool_choice={"type": "function", "name": "get_weather"}),
         "tool_choice"),
        (responses_request("hi", TOOLS, tool_choice={
            "type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "x"}]}),
         "tool_choice"),
        ({"model": "m", "input": [{"type": "function_call_output", "call_id": "c9",
                                   "output": "x"}]}, "input"),
    ],
)  # fmt: skip
def test_find_responses_error_names_the_param(body: dict[str, Any], param: str) -> None:
    problem = find_responses_error(body)
    assert problem is not None
    assert problem.status == 400
    assert problem.param == param


@pytest.mark.parametrize(
    "body",
    [
        responses_request("hi", TOOLS, tool_choice="required", parallel_tool_calls=False),
        responses_request("hi", tool_choice="auto", parallel_tool_calls=True),
        {"model": "m"},  # input may come from a stored prompt or conversation
        after_result_responses(),
        # The answered call is in the stored history, which the fake does not keep.
        {
            "model": "m",
            "previous_response_id": "resp_1",
            "input": [{"type": "function_call_output", "call_id": "c9", "output": "x"}],
        },
    ],
    ids=["choices", "choices-without-tools", "no-input", "answered-call", "stored-history"],
)
def test_find_responses_error_accepts_good_requests(body: dict[str, Any]) -> None:
    assert find_responses_error(body) is None
