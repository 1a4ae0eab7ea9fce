"""One captured exchange as a training example (`proxy.capture.example`), from literal answers:
a chat completion, a chat stream's chunks, a Response and its final event."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from proxy.capture.example import (
    Uncapturable,
    build_example,
    example_line,
    redact,
    student_tools,
)
from proxy.capture.pending import PendingCapture
from proxy.config import Capture
from proxy.outgoing import Outgoing
from proxy.policies import load_policy
from proxy.rewrite import rewrite
from proxy.training.rules import Context
from tests.support.captures import capture_spec
from tests.support.configs import POLICIES

TOOLS = json.loads((POLICIES / "support.tools.json").read_text())
LOOKUP = next(tool for tool in TOOLS if tool["function"]["name"] == "lookup_order")
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "lookup_order", "arguments": '{"order_id":"ORD-123456"}'},
}
USER = {"role": "user", "content": "Where is my order ORD-123456? Mail me at ann@example.com"}


def pending(
    body: dict[str, Any],
    answer: list[bytes],
    *,
    streamed: bool = False,
    api: str = "chat",
    capture: Capture | None = None,
) -> PendingCapture:
    captured = PendingCapture(capture or capture_spec(), body, api, 100)
    captured.outgoing = Outgoing(dict(body, model="ft"), [], False, False, api=api)
    captured.streamed = streamed
    for data in answer:
        captured.keep(data)
    return captured


def completion(message: dict[str, Any], finish: str) -> bytes:
    choice = {"index": 0, "message": message, "finish_reason": finish}
    return json.dumps({"id": "c", "object": "chat.completion", "choices": [choice]}).encode()


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return json.dumps({"object": "chat.completion.chunk", "choices": [choice]}).encode()


CALL_STREAM = [
    chunk({"role": "assistant"}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup_order", "arguments": ""},
                }
            ]
        }
    ),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"order_id":'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"ORD-123456"}'}}]}),
    chunk({}, "tool_calls"),
    json.dumps({"choices": [], "usage": {"prompt_tokens": 5}}).encode(),
]


def test_a_call_answer_is_the_last_assistant_message_with_the_tools_sent() -> None:
    body = {"messages": [USER], "tools": [LOOKUP], "parallel_tool_calls": False}
    example = build_example(
        pending(body, [completion({"role": "assistant", **_calls()}, "tool_calls")])
    )
    assert example == {
        "messages": [USER, {"role": "assistant", "tool_calls": [CALL]}],
        "tools": [LOOKUP],
        "parallel_tool_calls": False,
    }


def _calls() -> dict[str, Any]:
    return {"content": None, "tool_calls": [CALL], "refusal": None, "annotations": []}


def test_a_stream_is_put_back_together_as_the_json_answer_says_it() -> None:
    body = {"messages": [USER], "tools": [LOOKUP]}
    whole = build_example(
        pending(body, [completion({"role": "assistant", **_calls()}, "tool_calls")])
    )
    streamed = build_example(pending(body, CALL_STREAM, streamed=True))
    assert streamed == whole


def test_a_streamed_text_answer_joins_its_deltas() -> None:
    chunks = [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"})]
    chunks += [chunk({"content": "lo"}), chunk({}, "stop")]
    example = build_example(pending({"messages": [USER]}, chunks, streamed=True))
    assert example["messages"][-1] == {"role": "assistant", "content": "Hello"}
    assert "tools" not in example


def test_earlier_messages_keep_the_training_keys_and_earlier_answers_are_not_trained() -> None:
    """An SDK's `message.model_dump()` appended to the history carries nulls and keys a
    training file refuses; an earlier answer was not seen made, so it gets weight 0."""
    dumped = {"role": "assistant", **_calls(), "audio": None, "function_call": None}
    tool = {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "ok"}]}
    body = {"messages": [USER, dumped, tool], "tools": [LOOKUP]}
    answer = completion({"role": "assistant", "content": "Shipped."}, "stop")
    messages = build_example(pending(body, [answer]))["messages"]
    assert messages[1] == {"role": "assistant", "tool_calls": [CALL], "weight": 0}
    assert messages[2] == {"role": "tool", "tool_call_id": "call_1", "content": "ok"}
    assert messages[3] == {"role": "assistant", "content": "Shipped."}


def test_redaction_reaches_every_string_and_leaves_the_structure() -> None:
    patterns = (re.compile(r"[\w.]+@[\w.]+"), re.compile(r"secret"))
    value = {"a": ["x ann@example.com y", {"secret": "the secret"}], "n": 3, "b": None}
    assert redact(value, patterns) == {
        "a": ["x [REDACTED] y", {"secret": "the [REDACTED]"}],
        "n": 3,
        "b": None,
    }


def test_a_redacted_example_is_checked_after_redaction() -> None:
    """A pattern that changes a value the schema constrains makes an example the check
    refuses: it is not written (the reason says which rule)."""
    body = {"messages": [USER], "tools": [LOOKUP]}
    answer = completion({"role": "assistant", **_calls()}, "tool_calls")
    emails = pending(body, [answer], capture=capture_spec(redact=(re.compile(r"[\w.]+@[\w.]+"),)))
    line = json.loads(example_line(emails, Context()))
    assert "ann@example.com" not in json.dumps(line)
    assert "[REDACTED]" in line["messages"][0]["content"]
    orders = pending(body, [answer], capture=capture_spec(redact=(re.compile(r"ORD-\d+"),)))
    with pytest.raises(Uncapturable) as refused:
        example_line(orders, Context())
    assert refused.value.reason == "training_check"
    assert "does not match" in refused.value.detail


def test_the_capture_policy_serves_the_tools_the_example_carries() -> None:
    """The student's policy (slim) gives the tools; the messages stay as the model saw them."""
    slim = load_policy(POLICIES / "support-slim.yaml", "support-slim")
    body = {"messages": [USER], "tools": TOOLS}
    answer = completion({"role": "assistant", **_calls()}, "tool_calls")
    captured = pending(body, [answer], capture=capture_spec(policy=slim))
    example = build_example(captured, student_tools(captured))
    served = rewrite(body, slim).body
    assert example["tools"] == served["tools"]
    assert example["tools"] != TOOLS
    assert example["parallel_tool_calls"] == served["parallel_tool_calls"]


def test_redaction_leaves_the_capture_policys_tools_as_trained() -> None:
    """A pattern that matches a word of a training description changes the conversation only:
    the student's tools stay byte for byte what serving will send."""
    slim = load_policy(POLICIES / "support-slim.yaml", "support-slim")
    body = {"messages": [USER], "tools": TOOLS}
    answer = completion({"role": "assistant", **_calls()}, "tool_calls")
    word = re.compile(r"(?i)\border\b")
    captured = pending(body, [answer], capture=capture_spec(policy=slim, redact=(word,)))
    example = build_example(captured, student_tools(captured))
    assert example["tools"] == rewrite(body, slim).body["tools"]
    assert "order" in json.dumps(example["tools"]).lower()
    assert "[REDACTED]" in example["messages"][0]["content"]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (completion({"role": "assistant", "content": "cut"}, "length"), "unfinished"),
        (completion({"role": "assistant", "content": None}, "stop"), "empty_answer"),
        (completion({"role": "assistant", "refusal": "no"}, "stop"), "refusal"),
        (b'{"choices": []}', "not_one_choice"),
        (b"[1]", "invalid_answer"),
    ],
)
def test_an_answer_that_teaches_nothing_is_no_example(answer: bytes, reason: str) -> None:
    with pytest.raises(Uncapturable) as refused:
        build_example(pending({"messages": [USER]}, [answer]))
    assert refused.value.reason == reason


def test_a_second_choice_in_a_stream_is_no_example() -> None:
    second = json.dumps({"choices": [{"index": 1, "delta": {"content": "b"}}]}).encode()
    with pytest.raises(Uncapturable, match="not_one_choice"):
        build_example(
            pending({"messages": [USER]}, [chunk({"content": "a"}), second], streamed=True)
        )


RESPONSE = {
    "id": "resp_1",
    "object": "response",
    "status": "completed",
    "output": [
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {
            "type": "function_call",
            "id": "fc_1",
            "call_id": "call_1",
            "name": "lookup_order",
            "arguments": '{"order_id":"ORD-123456"}',
            "status": "completed",
        },
    ],
}
FLAT = {"type": "function", "strict": False, **LOOKUP["function"]}


def test_a_response_answer_in_chat_form_from_the_json_or_the_final_event() -> None:
    body = {"input": USER["content"], "tools": [FLAT], "instructions": "Be brief."}
    whole = build_example(pending(body, [json.dumps(RESPONSE).encode()], api="responses"))
    final = {"type": "response.completed", "sequence_number": 9, "response": RESPONSE}
    events = [json.dumps(final).encode()]
    streamed = build_example(pending(body, events, streamed=True, api="responses"))
    assert whole == streamed
    assert whole["messages"] == [
        {"role": "system", "content": "Be brief."},
        USER,
        {"role": "assistant", "tool_calls": [CALL]},
    ]
    assert whole["tools"] == [
        {"type": "function", "function": {**LOOKUP["function"], "strict": False}}
    ]


def test_a_response_that_did_not_complete_is_no_example() -> None:
    incomplete = {**RESPONSE, "status": "incomplete"}
    with pytest.raises(Uncapturable, match="unfinished"):
        build_example(pending({"input": "hi"}, [json.dumps(incomplete).encode()], api="responses"))


def test_an_answer_too_large_to_keep_is_dropped_from_memory() -> None:
    captured = pending({"messages": [USER]}, [])
    captured.keep(b"x" * (9 * 1024 * 1024))
    assert captured.too_large
    assert captured.answer == []
