"""The Responses API through the bridge to a real chat-only server, driven by the `openai` SDK.

llama-server speaks chat completions; the proxy's upstream is `kind: compatible`, which
bridges the Responses API to chat by default. For each of the first N held-out user turns
whose answer calls a tool, the same request is sent twice through `tuned-proxy serve`:
`client.responses.create(...)` (one JSON Response) and `client.responses.stream(...)` (the
SDK assembles the final Response from the events and checks their order), then
`responses.create` once more: the server's own repeatability, against which the stream's
agreement with the JSON answer is read (llama-server reuses the prompt it cached for the
first request, and a near tie can then go the other way). The table says how many requests
answered, how many `function_call` items the SDK parsed, how many call the function the
held-out answer calls, and how often the answers agree.

Usage (from the repository root, after setup.sh):
    .venv/bin/python tests/bench/real_model/run_responses.py [--limit 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import llama
import openai
import yaml
from openai.types.responses import Response, ResponseFunctionToolCall

ROUTE = "support-agent"
MODES = ("json", "stream", "again")  # each turn's requests, in the order they are sent


def write_config(run: Path, base: str) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    config = {
        "policies_dir": str(llama.POLICIES),
        "upstreams": {
            # `responses` is left out: a compatible upstream bridges by default.
            "llama": {
                "kind": "compatible",
                "server": "llama.cpp",
                "base_url": f"{base}/v1",
                "timeout_s": 900,
                "idle_timeout_s": 900,
            }
        },
        "routes": {
            ROUTE: {
                "variants": [
                    {
                        "name": "ft-full",
                        "upstream": "llama",
                        "model": llama.MODEL_NAME,
                        "policy": "support-full",
                    }
                ]
            }
        },
    }
    path = run / "responses.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def request_for(case: Any, max_tokens: int) -> dict[str, Any]:
    """The held-out turn as a Responses request, as an application moving from chat writes it."""
    from proxy.eval.responses import responses_request

    chat = {**case.request, "temperature": 0, "max_tokens": max_tokens}
    return responses_request(chat)


def summary(response: Response) -> dict[str, Any]:
    """What an answer said, in a form two answers can be compared by."""
    calls = [item for item in response.output if isinstance(item, ResponseFunctionToolCall)]
    return {
        "status": response.status,
        "calls": [{"name": c.name, "arguments": c.arguments, "call_id": c.call_id} for c in calls],
        "text": response.output_text,
        "usage": response.usage.total_tokens if response.usage else None,
    }


def failure(exc: Exception) -> str:
    if isinstance(exc, openai.APIStatusError):
        body = exc.body
        message = body.get("message") if isinstance(body, dict) else None
        return f"HTTP {exc.status_code}: {message or exc.message}"[:200]
    return f"{type(exc).__name__}: {exc}"[:200]


def ask_json(client: openai.OpenAI, body: dict[str, Any]) -> dict[str, Any]:
    try:
        return summary(client.responses.create(model=ROUTE, **body))
    except openai.OpenAIError as exc:
        return {"error": failure(exc)}


def ask_stream(client: openai.OpenAI, body: dict[str, Any]) -> dict[str, Any]:
    events: Counter[str] = Counter()
    last: Any = None
    try:
        with client.responses.stream(model=ROUTE, **body) as stream:
            for event in stream:
                events[event.type] += 1
                if event.type in ("response.completed", "response.incomplete"):
                    last = event
            # The SDK assembles a final Response only from `response.completed`: an answer cut
            # at max_output_tokens ends in `response.incomplete`, whose event carries it (as
            # OpenAI's own streams do).
            if last is not None and last.type == "response.incomplete":
                final = last.response
            else:
                final = stream.get_final_response()
    except (openai.OpenAIError, RuntimeError) as exc:
        # An `error` event is raised as an APIError; a broken order as a RuntimeError.
        return {"error": failure(exc), "events": dict(events)}
    return {**summary(final), "events": dict(events)}


def same_answer(one: dict[str, Any], other: dict[str, Any]) -> bool:
    """The same calls (name and arguments) and the same text, or both failed (a JSON answer
    fails with an HTTP status, a stream with an `error` event: the same failure reads
    differently)."""
    if "error" in one or "error" in other:
        return "error" in one and "error" in other

    def calls(answer: dict[str, Any]) -> list[tuple[str, str]]:
        return [(c["name"], c["arguments"]) for c in answer["calls"]]

    return calls(one) == calls(other) and one["text"] == other["text"]


def figures(results: list[dict[str, Any]], mode: str) -> list[object]:
    answers = [r[mode] for r in results]
    ok = [a for a in answers if "error" not in a]
    items = sum(len(a["calls"]) for a in ok)
    expected = sum(1 for r in results if "error" not in r[mode] and r["expected"] in names(r[mode]))
    parses = sum(1 for a in ok for c in a["calls"] if parses_as_object(c["arguments"]))
    return [
        len(answers),
        len(ok),
        len(answers) - len(ok),
        items,
        sum(1 for a in ok if a["calls"]),
        llama.percent(expected, len(answers)),
        f"{parses}/{items}",
        sum(1 for a in ok if not a["calls"]),
        sum(1 for a in ok if a["usage"]),
        sum(1 for a in ok if a["status"] == "incomplete"),
    ]


def said(answer: dict[str, Any]) -> object:
    return names(answer) or answer.get("error", "text")


def names(answer: dict[str, Any]) -> list[str]:
    return [c["name"] for c in answer.get("calls", [])]


def parses_as_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def report(results: list[dict[str, Any]], seconds: float) -> str:
    rows = [
        "requests",
        "answered",
        "failed",
        "function_call items parsed by the SDK",
        "answers with a function_call",
        "calls of the expected function",
        "arguments parse as a JSON object",
        "answers in text only",
        "answers with usage",
        "incomplete (max_output_tokens)",
    ]
    columns = [figures(results, mode) for mode in MODES]
    header = ["", "responses.create", "responses.stream", "create again"]
    lines = [
        llama.table(header, [[row, *cells] for row, *cells in zip(rows, *columns, strict=True)])
    ]
    lines.append(
        "\nanswers that agree (the same calls and arguments, the same text, or both failed):"
    )
    for one, other, label in (
        ("json", "stream", "stream vs create"),
        ("json", "again", "create again vs create (the server's own repeatability)"),
        ("stream", "again", "create again vs stream"),
    ):
        agree = sum(1 for r in results if same_answer(r[one], r[other]))
        lines.append(f"  {label}: {llama.percent(agree, len(results))}")
    answers = [r[mode] for r in results for mode in MODES]
    errors = Counter(a["error"] for a in answers if "error" in a)
    for message, count in errors.most_common():
        lines.append(f"  error {count}×: {message}")
    kinds: Counter[str] = Counter()
    for r in results:
        kinds.update(r["stream"].get("events", {}))
    lines.append("stream events seen: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    lines.append(f"{len(results)} turns, {3 * len(results)} requests in {seconds:.0f} s")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=20, help="held-out user turns (default 20)")
    parser.add_argument("--max-tokens", type=int, default=256, help="max_output_tokens")
    parser.add_argument("--run", type=Path, default=llama.CACHE / "run-responses")
    llama.add_server_arguments(parser)
    args = parser.parse_args()
    llama.exit_on_sigterm()
    args.run.mkdir(parents=True, exist_ok=True)
    turns = llama.user_tool_turns(args.limit)
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    with llama.llama_server(args, args.run) as (base, server):
        config = write_config(args.run, base)
        with llama.proxy_serve(config, args.run) as proxy:
            print(f"llama-server on {base}; tuned-proxy on {proxy}; run folder {args.run}")
            client = llama.sdk_client(proxy)
            for number, case in enumerate(turns, 1):
                body = request_for(case, args.max_tokens)
                result = {"case": case.id, "expected": case.expected[0].name}
                result["json"] = ask_json(client, body)
                result["stream"] = ask_stream(client, body)
                result["again"] = ask_json(client, body)
                llama.check_alive(server, args.run / "llama-server.log", "during the run")
                results.append(result)
                print(
                    f"[{number}/{len(turns)}] {case.id} expects {result['expected']}: "
                    f"json {said(result['json'])}, "
                    f"stream {said(result['stream'])}, again {said(result['again'])}",
                    flush=True,
                )
            bridged = llama.metric_values(proxy, "tuned_proxy_api_requests_total")
    (args.run / "responses.json").write_text(json.dumps(results, indent=1) + "\n")
    print()
    print(report(results, time.monotonic() - started))
    print("proxy's tuned_proxy_api_requests_total: " + json.dumps(bridged))
    return 0


if __name__ == "__main__":
    sys.exit(main())
