"""`tuned-proxy demo`: the proxy on the built-in fake model, driven by the real `openai` SDK.

It starts the proxy with the example config on a free loopback port, sends a plain question, a
tool call, a stream, a legacy `functions` request and a Responses API request, then the same
request to each variant of
the support agent, and prints what was routed, what the rewrite did and the prompt tokens each
variant costs. It needs no keys and no network, and exits 1 if any step fails.
"""

from __future__ import annotations

import copy
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import openai

from proxy import jsonutil
from proxy.app import build_app
from proxy.config import Runtime, examples_dir, load_config
from proxy.logs import configure_logging
from proxy.outgoing import outgoing_request, outgoing_responses_request
from proxy.rewrite.schema import flat_function_tool
from proxy.routing import VARIANT_HEADER
from proxy.server import bound_port, start_site

ROUTE = "support-agent"
QUESTION = "Can you look up the status of my order ORD-842131?"


@dataclass
class Row:
    step: str
    variant: str
    outcome: str
    prompt_tokens: int | str = "-"
    note: str = ""
    offered_tools: bool = False  # counted in the closing comparison
    called: bool = False


def application_tools() -> Any:
    """The support agent's tools as an application sends them months after training:
    one description edited and one parameter added (the drift `identical` repairs)."""
    tools = jsonutil.loads((examples_dir() / "support.tools.json").read_bytes())
    drifted = copy.deepcopy(tools)
    function = drifted[0]["function"]
    function["description"] = function.get("description", "") + " (updated wording)"
    properties = function.setdefault("parameters", {}).setdefault("properties", {})
    properties["locale"] = {"type": "string", "description": "added by the app after training"}
    return drifted


def describe_call(message: Any) -> str:
    calls = message.tool_calls or []
    if calls:
        return ", ".join(f"{c.function.name}({c.function.arguments})" for c in calls)[:70]
    if getattr(message, "function_call", None):
        return f"function_call {message.function_call.name}"
    return f"text: {(message.content or '')[:50]!r}"


class Demo:
    def __init__(self, runtime: Runtime, client: openai.AsyncOpenAI):
        self.runtime = runtime
        self.client = client
        self.tools = application_tools()
        self.rows: list[Row] = []

    async def plain(self) -> None:
        raw = await self.client.chat.completions.with_raw_response.create(
            model=ROUTE,
            messages=[{"role": "user", "content": "Hello! Who are you?"}],
            extra_headers={VARIANT_HEADER: "ft-full"},  # pinned: the demo is the same every run
        )
        completion = raw.parse()
        self.rows.append(
            Row(
                "plain answer",
                raw.headers["x-tuned-proxy-variant"],
                describe_call(completion.choices[0].message),
                completion.usage.prompt_tokens if completion.usage else "-",
            )
        )

    async def tool_call(self) -> None:
        raw = await self.client.chat.completions.with_raw_response.create(
            model=ROUTE,
            messages=[{"role": "user", "content": QUESTION}],
            tools=self.tools,
            extra_headers={"x-user-id": "demo-user-1"},
        )
        completion = raw.parse()
        variant = raw.headers["x-tuned-proxy-variant"]
        message = completion.choices[0].message
        self.rows.append(
            Row(
                "tool call",
                variant,
                describe_call(message),
                completion.usage.prompt_tokens if completion.usage else "-",
                self.rewrite_note(variant),
                offered_tools=True,
                called=bool(message.tool_calls),
            )
        )

    async def stream(self) -> None:
        raw = await self.client.chat.completions.with_raw_response.create(
            model=ROUTE,
            messages=[{"role": "user", "content": QUESTION}],
            tools=self.tools,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-user-id": "demo-user-2"},
        )
        stream = raw.parse()
        names: list[str] = []
        chunks = 0
        prompt_tokens: int | str = "-"
        async for chunk in stream:
            chunks += 1
            if chunk.usage:
                prompt_tokens = chunk.usage.prompt_tokens
            for choice in chunk.choices:
                names += [
                    d.function.name
                    for d in choice.delta.tool_calls or []
                    if d.function and d.function.name
                ]
        self.rows.append(
            Row(
                "stream",
                raw.headers["x-tuned-proxy-variant"],
                f"{chunks} chunks, called {', '.join(names)}",
                prompt_tokens,
                offered_tools=True,
                called=bool(names),
            )
        )

    async def legacy(self) -> None:
        weather = jsonutil.loads((examples_dir() / "weather.tools.json").read_bytes())
        completion = await self.client.chat.completions.create(
            model="weather",
            messages=[{"role": "user", "content": "What is the weather in Paris in celsius?"}],
            functions=[tool["function"] for tool in weather],
        )
        choice = completion.choices[0]
        self.rows.append(
            Row(
                "legacy functions",
                "ft",
                describe_call(choice.message),
                completion.usage.prompt_tokens if completion.usage else "-",
                f"finish_reason={choice.finish_reason}",
            )
        )

    async def responses(self) -> None:
        """The same question through the Responses API (the OpenAI Agents SDK's default): the
        policy applies to its flat tools too."""
        flat: Any = responses_tools(self.tools)
        raw = await self.client.responses.with_raw_response.create(
            model=ROUTE, input=QUESTION, tools=flat, extra_headers={"x-user-id": "demo-user-1"}
        )
        response = raw.parse()
        calls = [item for item in response.output if item.type == "function_call"]
        outcome = ", ".join(f"{call.name}({call.arguments})" for call in calls)[:70]
        variant = raw.headers["x-tuned-proxy-variant"]
        self.rows.append(
            Row(
                "Responses API",
                variant,
                outcome or f"text: {response.output_text[:50]!r}",
                response.usage.input_tokens if response.usage else "-",
                self.rewrite_note(variant, responses=True),
                offered_tools=True,
                called=bool(calls),
            )
        )

    async def compare_variants(self) -> None:
        for variant in self.runtime.routes[ROUTE].variants:
            completion = await self.client.chat.completions.create(
                model=ROUTE,
                messages=[{"role": "user", "content": QUESTION}],
                tools=self.tools,
                extra_headers={VARIANT_HEADER: variant.name},
            )
            message = completion.choices[0].message
            self.rows.append(
                Row(
                    f"compare: {variant.policy.name}",
                    variant.name,
                    describe_call(message),
                    completion.usage.prompt_tokens if completion.usage else "-",
                    self.rewrite_note(variant.name),
                    offered_tools=True,
                    called=bool(message.tool_calls),
                )
            )

    def rewrite_note(self, variant_name: str, responses: bool = False) -> str:
        """What the variant's policy does to this request (the same rewrite the proxy ran)."""
        variant = self.runtime.routes[ROUTE].variant(variant_name)
        if variant is None:
            return ""
        if responses:
            body = {"model": ROUTE, "input": QUESTION, "tools": responses_tools(self.tools)}
            result = outgoing_responses_request(variant, body)
        else:
            body = {
                "model": ROUTE,
                "messages": [{"role": "user", "content": QUESTION}],
                "tools": self.tools,
            }
            result = outgoing_request(variant, body)
        actions = Counter(change.action for change in result.changes)
        summary = ", ".join(f"{a}×{n}" if n > 1 else a for a, n in sorted(actions.items()))
        removed = result.tool_bytes_removed
        return f"-{removed} B tool schema; {summary}" if removed else summary


def responses_tools(chat_tools: Any) -> list[dict[str, Any]]:
    """The application's chat tools as the Responses API takes them: flat, with `strict`
    said (a flat tool without it is strict, which the chat tools were not)."""
    return [flat_function_tool(tool) for tool in chat_tools]


def variant_comparison(rows: list[Row]) -> list[tuple[str, ...]]:
    """Per variant, over the demo's requests that offered tools (each pinned or sticky, so the
    same every run): requests, prompt tokens per request, and the share that called a tool —
    what an A/B of fine-tunes reads (docs/metrics-and-logs.md has the same from /metrics)."""
    totals: dict[str, list[Row]] = {}
    for row in rows:
        if row.offered_tools and isinstance(row.prompt_tokens, int):
            totals.setdefault(row.variant, []).append(row)
    table: list[tuple[str, ...]] = [
        ("variant", "requests", "prompt tokens / request", "tool-call rate")
    ]
    for variant, counted in sorted(totals.items()):
        tokens = sum(row.prompt_tokens for row in counted if isinstance(row.prompt_tokens, int))
        calls = sum(row.called for row in counted)
        table.append(
            (
                variant,
                str(len(counted)),
                f"{tokens / len(counted):.0f}",
                f"{calls / len(counted):.0%}",
            )
        )
    return table


COLUMNS = (
    "requests: the demo's requests that offered the support tools, sent to this variant",
    "prompt tokens / request: what the variant's policy costs per request (slim saves)",
    "tool-call rate: the share of those requests answered with a tool call",
)


def print_table(rows: list[Row]) -> None:
    headers = ("step", "variant", "outcome", "prompt tokens", "rewrite")
    cells = [(r.step, r.variant, r.outcome, str(r.prompt_tokens), r.note) for r in rows]
    print_rows([headers, *cells])


def print_rows(table: Sequence[tuple[str, ...]]) -> None:
    headers = table[0]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    for index, row in enumerate(table):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
        if index == 0:
            print("  ".join("-" * width for width in widths))


async def run_demo() -> int:
    configure_logging("error", "console")
    config_path = examples_dir() / "tuned-proxy.example.yaml"
    runtime = load_config(config_path)
    runner = await start_site(build_app(runtime), "127.0.0.1", 0)
    url = f"http://127.0.0.1:{bound_port(runner)}"
    keys = runtime.client_keys
    client = openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key=keys[0] if keys else "demo", max_retries=0, timeout=30
    )
    print(
        f"tuned-proxy demo: proxy on {url}, config {config_path.name}, fake upstream in process\n"
    )
    demo = Demo(runtime, client)
    steps: list[Callable[[], Awaitable[None]]] = [
        demo.plain,
        demo.tool_call,
        demo.stream,
        demo.legacy,
        demo.responses,
        demo.compare_variants,
    ]
    failures = 0
    try:
        for step in steps:
            try:
                await step()
            except (openai.OpenAIError, KeyError, AttributeError) as exc:
                failures += 1
                demo.rows.append(Row(step.__name__, "-", f"FAILED: {type(exc).__name__}: {exc}"))
    finally:
        await client.close()
        await runner.cleanup()
    print_table(demo.rows)
    print(f"\nRoute {ROUTE}, the requests that offered tools, per variant:")
    print_rows(variant_comparison(demo.rows))
    print("\n".join(f"  {line}" for line in COLUMNS))
    if failures:
        print(f"\n{failures} step(s) failed", file=sys.stderr)
        return 1
    print("\nAll steps passed. Run `tuned-proxy serve` to use the proxy with this config.")
    return 0
