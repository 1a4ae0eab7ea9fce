"""Write the benchmark's fixed traffic into `fixtures/`: what clients send, what nginx answers.

- `request.json`, `request-stream.json`: a ~12 KB support-agent request offering the 20 tools of
  `policies/support.tools.json` as the application has them (three descriptions edited since
  training, so the `identical` policy has something to undo), and a short conversation.
- `answer.json`: a chat completion calling `track_shipment`, with usage.
- `stream.sse`: the same answer as OpenAI streams it: a role chunk with the first tool-call
  delta (id and name only there), argument fragments, the finish chunk, the usage chunk, `[DONE]`.

The same exchange in the Responses API, for the Responses rows of the load:
- `responses-request.json`, `responses-request-stream.json`: the same request as a
  `/v1/responses` body (the same 20 drifted tools in the flat function shape, the same
  conversation as `input` items), for the route whose upstream speaks the Responses API;
  `responses-bridge-request*.json`: the same bodies for the route whose upstream speaks chat
  only (the proxy translates them). Only `model` differs: it names the route.
- `responses-answer.json`: the same answer as a Response (a `function_call` item, usage), echoing
  the request's fields, its tools included, as OpenAI does.
- `responses-stream.sse`: the same answer as OpenAI streams it: `response.created`,
  `response.in_progress`, `response.output_item.added`, the same argument fragments as
  `response.function_call_arguments.delta` events, `….done`, `response.output_item.done`,
  `response.completed` with the whole Response; each event with its `event:` line, no `[DONE]`.

Every Responses fixture is checked against the installed `openai` SDK's types before it is
written (fixture_types.py). Deterministic, so the committed files can be regenerated and
compared.

Usage: python tests/bench/make_fixtures.py
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from fixture_types import check_responses_fixtures

BENCH = Path(__file__).resolve().parent
FIXTURES = BENCH / "fixtures"
TRAINING_TOOLS = BENCH.parents[1] / "policies" / "support.tools.json"

# The route names of the benchmark config (see run.py): one per answer kind, because nginx
# tells a stream from a JSON answer by path, not by body.
JSON_ROUTE = "bench-json"
STREAM_ROUTE = "bench-sse"
# The Responses routes: one per answer kind and per way the upstream takes the request
# (load.py's MODES). A route is found by the body's `model`, so each has its own body.
RESPONSES_JSON_ROUTE = "bench-responses-json"
RESPONSES_STREAM_ROUTE = "bench-responses-sse"
BRIDGE_JSON_ROUTE = "bench-bridge-json"
BRIDGE_STREAM_ROUTE = "bench-bridge-sse"

# Edits an application made to its copy of the tools after the model was trained.
DRIFT = {
    "lookup_order": "Get an order by number (items, totals, payment, fulfilment, shipments).",
    "track_shipment": "Where a parcel is now and when it should arrive.",
    "create_ticket": "Open a support ticket for a problem the chat cannot solve right away.",
}

CALL_ID = "call_bench0000000000000001"
CALL_NAME = "track_shipment"
CALL_ARGUMENTS = '{"tracking_number":"1Z999AA10123456784","carrier":"ups"}'
COMPLETION_ID = "chatcmpl-bench000000000000000000001"
CREATED = 1767225600
RESPONSE_ID = "resp_bench000000000000000000000000000000000001"
CALL_ITEM_ID = "fc_bench000000000000000000000000000000000001"
MODEL = "ft:gpt-4.1-mini-2025-04-14:northwind:support:bench01"
USAGE = {
    "prompt_tokens": 2874,
    "completion_tokens": 27,
    "total_tokens": 2901,
    "prompt_tokens_details": {"cached_tokens": 2560, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def application_tools() -> list[dict[str, Any]]:
    """The training tools as the application sends them today: a few descriptions drifted."""
    tools: list[dict[str, Any]] = json.loads(TRAINING_TOOLS.read_text(encoding="utf-8"))
    drifted = copy.deepcopy(tools)
    for tool in drifted:
        function = tool["function"]
        if function["name"] in DRIFT:
            function["description"] = DRIFT[function["name"]]
    return drifted


def conversation() -> list[dict[str, Any]]:
    lookup = '{"order_id":"ORD-104233","include":["shipments"]}'
    order = {
        "order_id": "ORD-104233",
        "status": "shipped",
        "shipments": [{"tracking_number": "1Z999AA10123456784", "carrier": "ups"}],
    }
    return [
        {
            "role": "system",
            "content": "You are Northwind's helpful support bot. Answer in the customer's "
            "language and keep it short.",
        },
        {
            "role": "user",
            "content": "Hi! My order ORD-104233 was supposed to arrive on Tuesday and "
            "it still is not here. Can you check what is going on?",
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_bench0000000000000000",
                    "type": "function",
                    "function": {"name": "lookup_order", "arguments": lookup},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_bench0000000000000000", "content": compact(order)},
        {
            "role": "assistant",
            "content": "Your order ORD-104233 has shipped with UPS. Shall I check where "
            "the parcel is right now?",
        },
        {"role": "user", "content": "Yes please, and tell me when it will arrive."},
    ]


def request(model: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": conversation(),
        "tools": application_tools(),
        "tool_choice": "auto",
        "temperature": 0.2,
        "user": "customer-48213",
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def answer() -> dict[str, Any]:
    return {
        "id": COMPLETION_ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_bench01",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "annotations": [],
                    "tool_calls": [
                        {
                            "id": CALL_ID,
                            "type": "function",
                            "function": {"name": CALL_NAME, "arguments": CALL_ARGUMENTS},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": USAGE,
        "service_tier": "default",
    }


def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": COMPLETION_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_bench01",
        "choices": choices,
        "usage": usage,
    }


def delta(content: dict[str, Any], finish_reason: str | None = None) -> list[dict[str, Any]]:
    return [{"index": 0, "delta": content, "logprobs": None, "finish_reason": finish_reason}]


def argument_fragments(arguments: str, size: int = 6) -> list[str]:
    """The arguments string cut as a model streams it: a few characters at a time."""
    return [arguments[start : start + size] for start in range(0, len(arguments), size)]


def stream_events() -> list[str]:
    """The `data:` payloads of the fixed stream, in order."""
    first_call = {
        "index": 0,
        "id": CALL_ID,
        "type": "function",
        "function": {"name": CALL_NAME, "arguments": ""},
    }
    events = [
        chunk(delta({"role": "assistant", "content": None, "tool_calls": [first_call]})),
        *(
            chunk(delta({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}))
            for fragment in argument_fragments(CALL_ARGUMENTS)
        ),
        chunk(delta({}, finish_reason="tool_calls")),
        chunk([], usage=USAGE),
    ]
    return [*(compact(event) for event in events), "[DONE]"]


def sse(payloads: list[str]) -> str:
    return "".join(f"data: {payload}\n\n" for payload in payloads)


# ----------------------------------------------------------------------------- Responses API


def flat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A chat tool in the Responses shape. `strict: false` says what chat's absent `strict`
    means (the SDK's `FunctionToolParam` requires the key)."""
    function = tool["function"]
    return {
        "type": "function",
        "name": function["name"],
        "description": function["description"],
        "parameters": function["parameters"],
        "strict": False,
    }


def input_items(message: dict[str, Any]) -> list[dict[str, Any]]:
    """One chat message as the Responses `input` items that say the same."""
    if message["role"] == "tool":
        output = {"type": "function_call_output", "call_id": message["tool_call_id"]}
        return [{**output, "output": message["content"]}]
    items = []
    if message.get("content") is not None:
        items.append({"type": "message", "role": message["role"], "content": message["content"]})
    for call in message.get("tool_calls") or ():
        function = call["function"]
        items.append(
            {
                "type": "function_call",
                "call_id": call["id"],
                "name": function["name"],
                "arguments": function["arguments"],
            }
        )
    return items


def responses_request(model: str, stream: bool) -> dict[str, Any]:
    """`request()` as a Responses body: built from the same conversation and tools, so the two
    cannot drift apart."""
    body: dict[str, Any] = {
        "model": model,
        "input": [item for message in conversation() for item in input_items(message)],
        "tools": [flat_tool(tool) for tool in application_tools()],
        "tool_choice": "auto",
        "temperature": 0.2,
        "user": "customer-48213",
    }
    if stream:
        body["stream"] = True  # a Responses stream always ends with its usage
    return body


def responses_usage() -> dict[str, Any]:
    """`USAGE` in the Response's terms (`cache_write_tokens` is required by the SDK)."""
    return {
        "input_tokens": USAGE["prompt_tokens"],
        "input_tokens_details": {
            "cached_tokens": USAGE["prompt_tokens_details"]["cached_tokens"],
            "cache_write_tokens": 0,
        },
        "output_tokens": USAGE["completion_tokens"],
        "output_tokens_details": {
            "reasoning_tokens": USAGE["completion_tokens_details"]["reasoning_tokens"]
        },
        "total_tokens": USAGE["total_tokens"],
    }


def call_item(status: str, arguments: str) -> dict[str, Any]:
    return {
        "id": CALL_ITEM_ID,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": CALL_ID,
        "name": CALL_NAME,
    }


def response(completed: bool) -> dict[str, Any]:
    """The Response: finished (the JSON answer, the stream's last event) or just started (the
    stream's first events: no output, no usage yet). It echoes the request as OpenAI does."""
    echoed = responses_request(RESPONSES_JSON_ROUTE, stream=False)
    return {
        "id": RESPONSE_ID,
        "object": "response",
        "created_at": CREATED,
        "status": "completed" if completed else "in_progress",
        "background": False,
        "completed_at": CREATED + 1 if completed else None,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "max_tool_calls": None,
        "model": MODEL,
        "output": [call_item("completed", CALL_ARGUMENTS)] if completed else [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "prompt_cache_key": None,
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": None,
        "service_tier": "default",
        "temperature": echoed["temperature"],
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": echoed["tool_choice"],
        "tools": echoed["tools"],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": responses_usage() if completed else None,
        "user": echoed["user"],
        "metadata": {},
    }


def responses_stream_events() -> list[dict[str, Any]]:
    """The Responses stream of the same answer, numbered, in order."""
    at = {"item_id": CALL_ITEM_ID, "output_index": 0}
    steps: list[dict[str, Any]] = [
        {"type": "response.created", "response": response(completed=False)},
        {"type": "response.in_progress", "response": response(completed=False)},
        # As OpenAI streams a call: the item opens with its name and empty arguments.
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": call_item("in_progress", ""),
        },
        *(
            {"type": "response.function_call_arguments.delta", **at, "delta": fragment}
            for fragment in argument_fragments(CALL_ARGUMENTS)
        ),
        {"type": "response.function_call_arguments.done", **at, "arguments": CALL_ARGUMENTS},
        {
            "type": "response.output_item.done",
            "output_index": 0,
            "item": call_item("completed", CALL_ARGUMENTS),
        },
        {"type": "response.completed", "response": response(completed=True)},
    ]
    return [{**step, "sequence_number": number} for number, step in enumerate(steps)]


def named_sse(events: list[dict[str, Any]]) -> str:
    """Responses events as OpenAI writes them: an `event:` line naming each one's type."""
    return "".join(f"event: {event['type']}\ndata: {compact(event)}\n\n" for event in events)


def write(name: str, text: str) -> None:
    path = FIXTURES / name
    path.write_text(text, encoding="utf-8")
    print(f"{path.relative_to(BENCH)}: {len(text.encode())} bytes")


def responses_fixtures() -> dict[str, str]:
    """Every Responses fixture by file name, held to the SDK's types first."""
    requests = {
        "responses-request.json": responses_request(RESPONSES_JSON_ROUTE, stream=False),
        "responses-request-stream.json": responses_request(RESPONSES_STREAM_ROUTE, stream=True),
        "responses-bridge-request.json": responses_request(BRIDGE_JSON_ROUTE, stream=False),
        "responses-bridge-request-stream.json": responses_request(BRIDGE_STREAM_ROUTE, stream=True),
    }
    final, events = response(completed=True), responses_stream_events()
    check_responses_fixtures(list(requests.values()), final, events)
    return {
        **{name: compact(body) for name, body in requests.items()},
        "responses-answer.json": compact(final),
        "responses-stream.sse": named_sse(events),
    }


def main() -> None:
    fixtures = {
        "request.json": compact(request(JSON_ROUTE, stream=False)),
        "request-stream.json": compact(request(STREAM_ROUTE, stream=True)),
        "answer.json": compact(answer()),
        "stream.sse": sse(stream_events()),
        **responses_fixtures(),  # checked before anything is written
    }
    FIXTURES.mkdir(exist_ok=True)
    for name, text in fixtures.items():
        write(name, text)


if __name__ == "__main__":
    main()
