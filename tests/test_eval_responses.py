"""`eval --api responses`: a chat example's request written as the Responses request an
application moving to that API would send."""

from __future__ import annotations

from proxy.eval.responses import responses_request

TOOL = {
    "type": "function",
    "function": {"name": "lookup_order", "description": "d", "parameters": {"type": "object"}},
}


def test_a_conversation_with_calls_and_results_becomes_input_items() -> None:
    chat = {
        "messages": [
            {"role": "system", "content": "You are ShopBot."},
            {"role": "user", "content": [{"type": "text", "text": "Where is A-1?"}]},
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup_order", "arguments": '{"order_id":"A-1"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "shipped"},
        ],
        "tools": [TOOL],
        "tool_choice": {"type": "function", "function": {"name": "lookup_order"}},
        "parallel_tool_calls": False,
        "max_tokens": 64,
        "temperature": 0,
    }
    assert responses_request(chat) == {
        "input": [
            {"role": "system", "content": "You are ShopBot."},
            {"role": "user", "content": "Where is A-1?"},
            {"role": "assistant", "content": "Let me look."},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "lookup_order",
                "arguments": '{"order_id":"A-1"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "shipped"},
        ],
        "tools": [
            {
                "type": "function",
                "name": "lookup_order",
                "description": "d",
                "parameters": {"type": "object"},
                "strict": False,  # as chat meant it: a flat tool without it may be strict
            }
        ],
        "tool_choice": {"type": "function", "name": "lookup_order"},
        "parallel_tool_calls": False,
        "max_output_tokens": 64,
        "temperature": 0,
    }


def test_an_assistant_message_with_only_calls_adds_no_empty_message() -> None:
    chat = {
        "messages": [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            }
        ]
    }
    (item,) = responses_request(chat)["input"]
    assert item["type"] == "function_call"
