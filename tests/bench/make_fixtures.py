"""Write the benchmark's fixed traffic into `fixtures/`: what clients send, what nginx answers.

- `request.json`, `request-stream.json`: a ~12 KB support-agent request offering the 20 tools of
  `policies/support.tools.json` as the application has them (three descriptions edited since
  training, so the `identical` policy has something to undo), and a short conversation.
- `answer.json`: a chat completion calling `track_shipment`, with usage.
- `stream.sse`: the same answer as OpenAI streams it: a role chunk with the first tool-call
  delta (id and name only there), argument fragments, the finish chunk, the usage chunk, `[DONE]`.

Deterministic, so the committed files can be regenerated and compared.

Usage: python tests/bench/make_fixtures.py
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
FIXTURES = BENCH / "fixtures"
TRAINING_TOOLS = BENCH.parents[1] / "policies" / "support.tools.json"

# The route names of the benchmark config (see run.py): one per answer kind, because nginx
# tells a stream from a JSON answer by path, not by body.
JSON_ROUTE = "bench-json"
STREAM_ROUTE = "bench-sse"

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


def write(name: str, text: str) -> None:
    path = FIXTURES / name
    path.write_text(text, encoding="utf-8")
    print(f"{path.relative_to(BENCH)}: {len(text.encode())} bytes")


def main() -> None:
    FIXTURES.mkdir(exist_ok=True)
    write("request.json", compact(request(JSON_ROUTE, stream=False)))
    write("request-stream.json", compact(request(STREAM_ROUTE, stream=True)))
    write("answer.json", compact(answer()))
    write("stream.sse", sse(stream_events()))


if __name__ == "__main__":
    main()
