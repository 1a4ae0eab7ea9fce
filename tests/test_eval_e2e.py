"""`tuned-proxy eval` end to end: a scripted upstream answers known calls, the real proxy app
applies each variant's policy, and every rate of the report is checked exactly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from proxy.config import load_config
from proxy.eval.cases import read_cases
from proxy.eval.report import EvalReport, render_table, report_json
from proxy.eval.runner import EvalSettings, Outcome
from proxy.eval.session import evaluate
from proxy.eval.stats import PairedCounts, paired_difference_interval, wilson_interval
from proxy.server import bound_port, start_site
from tests.support.configs import POLICIES, REPO

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name."},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Local time in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    },
]

Call = tuple[str, str]  # (function, arguments as sent)


def weather(city: str, unit: str = "celsius") -> Call:
    return ("get_weather", json.dumps({"city": city, "unit": unit}))


# Each case: the user's message, the example's calls (empty: no tool needed), and what the
# second variant answers: calls, "text", an HTTP status, or "hang" (never answers).
Answer = list[Call] | str | int
SCRIPT: list[tuple[str, list[Call], Answer]] = [
    ("right: Paris", [weather("Paris")], [weather("Paris")]),
    ("wrong function: Oslo", [weather("Oslo")], [("get_time", '{"city": "Oslo"}')]),
    ("wrong unit: Rome", [weather("Rome")], [weather("Rome", "fahrenheit")]),
    ("no call: Bern", [weather("Bern")], "text"),
    ("invalid json: Kyiv", [weather("Kyiv")], [("get_weather", '{"city": "Ky')]),
    (
        "parallel: Nice and Pau",
        [weather("Nice"), weather("Pau")],
        [weather("Pau"), weather("Nice")],
    ),
    ("failure: Lyon", [weather("Lyon")], 500),
    ("schema: Lima", [weather("Lima")], [("get_weather", '{"city": 5, "unit": "celsius"}')]),
    ("hello there", [], [weather("Hello")]),
]


@dataclass
class ScriptedUpstream:
    """An OpenAI-compatible server answering from a table keyed by (model, last user text)."""

    answers: dict[tuple[str, str], Answer]
    received: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    hanging: asyncio.Event = field(default_factory=asyncio.Event)  # a "hang" answer started

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append(body)
        last_user = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        answer = self.answers.get((body["model"], last_user), "text")
        if answer == "hang":
            self.hanging.set()
            await asyncio.Event().wait()  # cancelled when the client goes away
        if isinstance(answer, int):
            error = {"message": "scripted failure", "type": "server_error", "param": None}
            return web.json_response({"error": {**error, "code": None}}, status=answer)
        return web.json_response(completion(body, answer))


def completion(body: dict[str, Any], answer: Answer) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "Sure."}
    if isinstance(answer, list):
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": f"c{i}", "type": "function", "function": {"name": n, "arguments": a}}
                for i, (n, a) in enumerate(answer)
            ],
        }
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        # The tools' size as prompt tokens: a slimmer policy shows up as fewer.
        "usage": {
            "prompt_tokens": len(json.dumps(body.get("tools", []))),
            "completion_tokens": 7,
            "total_tokens": 7 + len(json.dumps(body.get("tools", []))),
        },
    }


def script_answers(
    script: list[tuple[str, list[Call], Answer]],
) -> dict[tuple[str, str], Answer]:
    answers: dict[tuple[str, str], Answer] = {}
    for text, expected, second in script:
        answers[("model-full", text)] = expected or "text"  # the baseline is always right
        answers[("model-slim", text)] = second
    return answers


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    scripted = ScriptedUpstream(script_answers(SCRIPT))
    app = web.Application()
    app.router.add_post("/v1/chat/completions", scripted.handle)
    runner = await start_site(app, "127.0.0.1", 0)
    scripted.url = f"http://127.0.0.1:{bound_port(runner)}"
    try:
        yield scripted
    finally:
        await runner.cleanup()


def heldout_line(text: str, calls: list[Call]) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": text}]
    if calls:
        tool_calls = [
            {"id": f"c{i}", "type": "function", "function": {"name": n, "arguments": a}}
            for i, (n, a) in enumerate(calls)
        ]
        messages.append({"role": "assistant", "tool_calls": tool_calls})
        messages += [{"role": "tool", "tool_call_id": c["id"], "content": "ok"} for c in tool_calls]
        messages.append({"role": "assistant", "content": "Done."})
    else:
        messages.append({"role": "assistant", "content": "Hello!"})
    return {"messages": messages, "tools": TOOLS}


def write_setup(
    directory: Path, upstream_url: str, script: list[tuple[str, list[Call], Answer]]
) -> tuple[Path, Path]:
    """A held-out file for `script` and a config with two variants on the scripted upstream:
    `full` (identical definitions) and `slim` (descriptions omitted)."""
    (directory / "tools.json").write_text(json.dumps(TOOLS))
    (directory / "full.yaml").write_text("training_tools: tools.json\ntools: {mode: identical}\n")
    (directory / "slim.yaml").write_text(
        "training_tools: tools.json\ntools: {mode: slim, slim: {default: omit_descriptions}}\n"
    )
    config = {
        "policies_dir": ".",
        "upstreams": {"scripted": {"kind": "compatible", "base_url": f"{upstream_url}/v1"}},
        "routes": {
            "agent": {
                "variants": [
                    {
                        "name": "full",
                        "upstream": "scripted",
                        "model": "model-full",
                        "policy": "full",
                    },
                    {
                        "name": "slim",
                        "upstream": "scripted",
                        "model": "model-slim",
                        "policy": "slim",
                    },
                ],
                # Both are turned off for the eval: they must not answer for a failing variant.
                "fallback": [{"upstream": "scripted", "model": "model-full"}],
                "shadow": {"upstream": "scripted", "model": "model-shadow"},
            }
        },
    }
    config_path = directory / "eval.yaml"
    config_path.write_text(yaml.safe_dump(config))
    examples = directory / "heldout.jsonl"
    lines = [json.dumps(heldout_line(text, calls)) for text, calls, _ in script]
    examples.write_text("\n".join(lines) + "\n")
    return config_path, examples


async def run_eval(
    directory: Path, upstream: ScriptedUpstream, **settings: Any
) -> tuple[EvalReport, list[Outcome]]:
    config_path, examples = write_setup(directory, upstream.url, SCRIPT)
    seen: list[Outcome] = []
    report = await evaluate(
        load_config(config_path),
        read_cases(examples),
        EvalSettings(route="agent", variants=("full", "slim"), **settings),
        examples_file=str(examples),
        on_outcome=seen.append,
    )
    return report, seen


async def test_every_rate_of_the_report_is_exact(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    report, _ = await run_eval(tmp_path, upstream, concurrency=3)
    full, slim = report.variants
    assert not report.interrupted
    assert report.counted_cases == report.planned_cases == 9
    assert (report.count("tool_call"), report.count("no_call"), report.parallel_turns) == (8, 1, 1)

    rates = {key: (rate.successes, rate.total) for key, rate in full.rates.items()}
    assert rates == {
        "tool_call": (8, 8),
        "function": (8, 8),
        "args_json": (8, 8),
        "args_schema": (8, 8),
        "args_exact": (8, 8),
        "no_call": (1, 1),
        "failed": (0, 9),
    }
    rates = {key: (rate.successes, rate.total) for key, rate in slim.rates.items()}
    assert rates == {
        # right, wrong function, wrong unit, invalid JSON, parallel, schema break call;
        # Bern answered in text, Lyon failed
        "tool_call": (6, 8),
        # every call but get_time; the invalid-JSON call still names the right function
        "function": (5, 8),
        "args_json": (5, 8),  # not Kyiv's broken JSON
        # get_time's arguments fit get_time; Kyiv and Lima's do not fit
        "args_schema": (4, 8),
        "args_exact": (2, 8),  # Paris, and the parallel pair in reverse order
        "no_call": (0, 1),  # "hello there" got a call
        "failed": (1, 9),
    }
    assert full.key_accuracy.value == 1.0
    # per turn: Paris 1, Oslo 0, Rome 1/2, Bern 0, Kyiv 0, Nice+Pau 1, Lyon 0, Lima 1/2
    assert slim.key_accuracy.value == pytest.approx(3.0 / 8)
    assert slim.failures == {"HTTP 500: scripted failure": 1}
    assert full.requests == slim.requests == 9


async def test_intervals_and_differences_follow_the_formulas(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    report, _ = await run_eval(tmp_path, upstream)
    full, slim = report.variants
    exact = slim.rates["args_exact"]
    assert exact.interval == wilson_interval(2, 8)
    assert full.rates["args_exact"].difference is None
    # The baseline is right on every turn: the slim variant is right on 2 of them.
    assert exact.difference is not None
    assert exact.difference.value == pytest.approx(2 / 8 - 1)
    assert exact.difference.interval == paired_difference_interval(PairedCounts(2, 0, 6, 0))
    failed = slim.rates["failed"]
    assert failed.difference is not None
    assert failed.difference.interval == paired_difference_interval(PairedCounts(0, 1, 0, 8))


async def test_each_variant_gets_its_policy_through_the_proxy(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    report, _ = await run_eval(tmp_path, upstream)
    by_model: dict[str, list[dict[str, Any]]] = {}
    for body in upstream.received:
        by_model.setdefault(body["model"], []).append(body)
    # No fallback answered for the failing variant and no shadow copy was sent.
    assert set(by_model) == {"model-full", "model-slim"}
    assert len(by_model["model-full"]) == len(by_model["model-slim"]) == 9
    assert all(b["tools"] == TOOLS for b in by_model["model-full"])
    slim_tools = by_model["model-slim"][0]["tools"]
    assert "description" not in json.dumps(slim_tools)
    full, slim = report.variants
    assert full.prompt_tokens.value == len(json.dumps(TOOLS))
    assert slim.prompt_tokens.value == len(json.dumps(slim_tools))
    # Tokens are counted on the 8 answered requests, the difference on the pairs.
    assert slim.prompt_tokens.count == 8
    assert slim.prompt_tokens.difference is not None
    assert slim.prompt_tokens.difference.value == len(json.dumps(slim_tools)) - len(
        json.dumps(TOOLS)
    )
    assert slim.completion_tokens.value == 7


async def test_request_options_and_timeouts(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    upstream.answers[("model-slim", "right: Paris")] = "hang"
    report, _ = await run_eval(tmp_path, upstream, timeout_s=0.5, temperature=0, max_tokens=64)
    assert all(b["temperature"] == 0 and b["max_tokens"] == 64 for b in upstream.received)
    slim = report.variants[1]
    assert slim.failures == {"timed out": 1, "HTTP 500: scripted failure": 1}
    assert slim.rates["failed"].successes == 2


async def test_a_stopped_run_reports_the_cases_every_variant_answered(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    config_path, examples = write_setup(tmp_path, upstream.url, SCRIPT)
    stop = asyncio.Event()
    seen: list[Outcome] = []

    def on_outcome(outcome: Outcome) -> None:
        seen.append(outcome)
        if len(seen) == 5:  # two cases for both variants, and the third for one
            stop.set()

    report = await evaluate(
        load_config(config_path),
        read_cases(examples),
        EvalSettings(route="agent", variants=("full", "slim"), concurrency=1),
        on_outcome=on_outcome,
        stop=stop,
    )
    assert report.interrupted
    assert (report.counted_cases, report.planned_cases) == (2, 9)
    assert [o.case.id for o in report.outcomes] == ["L1.m1", "L1.m1", "L2.m1", "L2.m1"]
    assert report.variants[1].rates["tool_call"].total == 2
    assert "INTERRUPTED" in render_table(report)
    assert report_json(report)["cases"] == {
        "planned": 9,
        "counted": 2,
        "tool_call_turns": 2,
        "parallel_call_turns": 0,
        "no_call_turns": 0,
    }


async def test_the_json_report_has_every_result(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    report, _ = await run_eval(tmp_path, upstream)
    document = json.loads(json.dumps(report_json(report)))
    assert [v["name"] for v in document["variants"]] == ["full", "slim"]
    slim = document["variants"][1]
    assert slim["rates"]["args_exact"]["count"] == 2
    assert slim["rates"]["args_exact"]["ci"] == pytest.approx(
        [wilson_interval(2, 8).low, wilson_interval(2, 8).high], abs=1e-6
    )
    assert len(document["results"]) == 18
    failed = [r for r in document["results"] if r["error"]]
    assert [(r["case"], r["variant"]) for r in failed] == [("L7.m1", "slim")]
    table = render_table(report)
    assert "arguments exact %" in table
    assert "Δ vs full" in table


# ----------------------------------------------------------------------------- the command


async def run_command(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy.eval.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


async def test_ctrl_c_prints_what_was_measured(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    upstream.answers[("model-slim", SCRIPT[2][0])] = "hang"  # the third case never ends
    config_path, examples = write_setup(tmp_path, upstream.url, SCRIPT)
    out = tmp_path / "report.json"
    process = await run_command(
        str(examples), "-c", str(config_path), "--model", "agent", "--concurrency", "1",
        "--json", str(out),
    )  # fmt: skip
    # One request at a time: when the third case hangs, two cases are complete.
    await asyncio.wait_for(upstream.hanging.wait(), 30)
    process.send_signal(signal.SIGINT)
    stdout, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 130
    assert "INTERRUPTED" in stdout.decode()
    document = json.loads(out.read_text())
    assert document["interrupted"] is True
    assert document["cases"]["counted"] == 2


async def test_command_errors(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    config_path, examples = write_setup(tmp_path, upstream.url, SCRIPT)
    common = [str(examples), "-c", str(config_path)]
    for args, message in [
        ([*common, "--model", "nope"], "no route 'nope'"),
        ([*common, "--model", "agent", "--variants", "full,other"], "--variants must name"),
        ([*common, "--model", "agent", "--variants", "full,full"], "--variants must name"),
        ([str(tmp_path / "none.jsonl"), "-c", str(config_path), "--model", "agent"], "cannot read"),
    ]:
        process = await run_command(*args)
        _, stderr = await process.communicate()
        assert process.returncode == 1, args
        assert message in stderr.decode()


async def test_the_command_runs_on_the_shipped_example_set(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    process = await run_command(
        str(POLICIES / "support.heldout.jsonl"), "-c", str(POLICIES / "tuned-proxy.eval.yaml"),
        "--model", "support-agent", "--json", str(out),
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stderr.decode()
    document = json.loads(out.read_text())
    assert [v["name"] for v in document["variants"]] == [
        "ft-full",
        "ft-slim",
        "ft-params",
        "ft-bias",
    ]
    assert document["cases"]["counted"] == document["cases"]["planned"] >= 100
    assert all(v["rates"]["failed"]["count"] == 0 for v in document["variants"])
    tokens = {v["name"]: v["prompt_tokens"]["mean"] for v in document["variants"]}
    # The fake model counts prompt tokens from the request's size: slimming saves.
    assert tokens["ft-slim"] < tokens["ft-full"]
    assert tokens["ft-params"] < tokens["ft-full"]
    assert "ft-bias" in stdout.decode()
    # Every variant of the shipped eval config is the fake model: the report says so first.
    first = stdout.decode().splitlines()[0]
    assert first.startswith("note: variant ft-full is served by the built-in fake model")


async def test_the_responses_api_gives_the_fine_tune_the_same_requests(tmp_path: Path) -> None:
    """`--api responses` replays the same held-out cases through the Responses API: on the fake
    model, which decides the same for both APIs, every variant scores exactly as on chat."""
    reports = {}
    for api in ("chat", "responses"):
        out = tmp_path / f"{api}.json"
        process = await run_command(
            str(POLICIES / "support.heldout.jsonl"), "-c", str(POLICIES / "tuned-proxy.eval.yaml"),
            "--model", "support-agent", "--variants", "ft-full,ft-slim", "--limit", "20",
            "--api", api, "--json", str(out),
        )  # fmt: skip
        _, stderr = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 0, stderr.decode()
        reports[api] = json.loads(out.read_text())
    for chat, responses in zip(
        reports["chat"]["variants"], reports["responses"]["variants"], strict=True
    ):
        assert chat["name"] == responses["name"]
        assert responses["rates"]["failed"]["count"] == 0
        assert chat["rates"] == responses["rates"]
    assert reports["responses"]["cases"]["counted"] == reports["chat"]["cases"]["counted"] > 0
