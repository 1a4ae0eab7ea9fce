"""Capture end to end: the `openai` SDK through a real proxy to the fake model, the examples
read back from the files the proxy wrote, and `training check` run on them."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from proxy.cli import main
from proxy.policies import load_policy
from proxy.reload import reload_config
from proxy.rewrite import rewrite
from proxy.state import STATE
from tests.support.configs import POLICIES, basic_config, fake_variant
from tests.support.keys import CLIENT_KEY, UPSTREAM_KEY
from tests.support.metrics import samples_of, total
from tests.support.processes import read_until, serving
from tests.support.servers import FakeUpstream, RunningProxy, StartProxy
from tests.support.waiting import eventually

TOOLS = json.loads((POLICIES / "support.tools.json").read_text())
FLAT = [{"type": "function", "strict": False, **tool["function"]} for tool in TOOLS]
QUESTION = "Where is my order ORD-123456?"
ORDER = f"{QUESTION} I am ann@example.com"
EMAIL = r"[\w.+-]+@[\w-]+\.[\w.]+"
CAPTURED = "tuned_proxy_capture_examples_total"


def capture_config(upstream: FakeUpstream, folder: Path, **capture: Any) -> dict[str, Any]:
    """Route `chat` on the fake model, captured into `folder`; the route pins variants."""
    config = basic_config(
        upstream.url,
        capture={"dir": str(folder), **capture},
        allow_variant_override=True,
    )
    config["server"] = {"metrics_cache_s": 0}
    return config


def examples(folder: Path) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.jsonl")):
        text = path.read_text()
        assert text.endswith("\n")
        lines += [json.loads(line) for line in text.splitlines()]
    return lines


async def counted(proxy: RunningProxy, outcome: str, expected: int) -> None:
    await eventually(
        lambda: total(samples_of(proxy), CAPTURED, route="chat", outcome=outcome) == expected,
        f"{expected} captures {outcome}",
    )


def without_ids(example: dict[str, Any]) -> dict[str, Any]:
    """The example with its calls' ids blanked: the fake model makes a new id per answer."""
    text = json.dumps(example)
    for message in example["messages"]:
        for call in message.get("tool_calls", ()):
            text = text.replace(call["id"], "call_x")
    result: dict[str, Any] = json.loads(text)
    return result


async def test_streamed_and_whole_answers_make_the_same_examples_and_the_file_passes_the_check(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, tmp_path: Path
) -> None:
    folder = tmp_path / "captured"
    # The teacher is served the full definitions; its student will be served slim ones.
    config = capture_config(fake_upstream, folder, policy="support-slim")
    config["routes"]["chat"]["variants"][0]["policy"] = "support-full"
    proxy = await start_proxy(config)
    client = proxy.client()
    # (question, tools): the fake model calls a tool whenever it is offered one
    questions = [(QUESTION, TOOLS), ("Hello there!", openai.NOT_GIVEN)]
    questions.append(("I want to return the blue jacket", TOOLS))
    for question, tools in questions * 2:  # 12 exchanges: a file `training check` accepts
        messages: Any = [{"role": "user", "content": question}]
        await client.chat.completions.create(model="chat", messages=messages, tools=tools)
        stream = await client.chat.completions.create(
            model="chat", messages=messages, tools=tools, stream=True
        )
        async for _ in stream:
            pass
    await counted(proxy, "written", 12)
    captured = examples(folder)
    assert len(captured) == 12
    whole, streamed = captured[0::2], captured[1::2]
    assert [without_ids(e) for e in whole] == [without_ids(e) for e in streamed]
    first = captured[0]
    assert first["messages"][0]["role"] == "system"  # the policy's prompt, as the model saw it
    assert first["messages"][1] == {"role": "user", "content": QUESTION}
    call = first["messages"][-1]["tool_calls"][0]
    assert call["function"]["name"] == "lookup_order"
    assert json.loads(call["function"]["arguments"]) == {"order_id": "ORD-123456"}
    assert first["parallel_tool_calls"] is False
    slim = load_policy(POLICIES / "support-slim.yaml", "support-slim")
    student = rewrite({"messages": [], "tools": TOOLS}, slim).body["tools"]
    assert first["tools"] == student  # as the student will be served them
    assert first["tools"] != TOOLS
    text_answer = captured[2]["messages"][-1]
    assert set(text_answer) == {"role", "content"}
    [path] = folder.glob("*.jsonl")
    assert main(["training", "check", str(path)]) == 0


async def test_redaction_an_opt_out_and_an_error_answer(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, tmp_path: Path
) -> None:
    folder = tmp_path / "captured"
    config = capture_config(fake_upstream, folder, redact=[EMAIL])
    config["routes"]["chat"]["variants"].append(fake_variant("broken", "ft-error-500", weight=0))
    proxy = await start_proxy(config)
    client = proxy.client()
    messages: Any = [{"role": "user", "content": ORDER}]
    answer = await client.chat.completions.create(model="chat", messages=messages)
    assert "ann@example.com" in (answer.choices[0].message.content or "")  # the fake quotes it
    await client.chat.completions.create(
        model="chat", messages=messages, extra_headers={"x-tuned-proxy-capture": "off"}
    )
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(
            model="chat", messages=messages, extra_headers={"x-tuned-proxy-variant": "broken"}
        )
    await counted(proxy, "written", 1)
    await counted(proxy, "skipped", 2)
    raw = "".join(path.read_text() for path in folder.glob("*.jsonl"))
    assert "ann@example.com" not in raw
    [example] = examples(folder)
    assert "[REDACTED]" in example["messages"][0]["content"]
    assert "[REDACTED]" in example["messages"][1]["content"]
    assert CLIENT_KEY not in raw
    assert UPSTREAM_KEY not in raw


async def test_only_the_captured_variants_answers_are_written(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, tmp_path: Path
) -> None:
    """A route that A/Bs the teacher against its student captures the teacher alone."""
    folder = tmp_path / "captured"
    config = capture_config(fake_upstream, folder, variants=["main"])
    config["routes"]["chat"]["variants"].append(fake_variant("student", "ft-student", weight=0))
    proxy = await start_proxy(config)
    client = proxy.client()
    for variant in ("student", "main", "student"):
        await client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": f"hi from {variant}"}],
            extra_headers={"x-tuned-proxy-variant": variant},
        )
    await counted(proxy, "written", 1)
    assert [e["messages"][0]["content"] for e in examples(folder)] == ["hi from main"]
    assert total(samples_of(proxy), CAPTURED) == 1  # the student's answers are not counted


@pytest.mark.parametrize("mode", ["native", "bridge"])
async def test_responses_exchanges_are_captured_in_chat_form(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, tmp_path: Path, mode: str
) -> None:
    """The Responses API, to an upstream that speaks it or through the bridge, streamed or
    not: the same chat example as a chat request makes."""
    folder = tmp_path / "captured"
    config = capture_config(fake_upstream, folder)
    config["upstreams"]["fake"]["responses"] = mode
    proxy = await start_proxy(config)
    client = proxy.client()
    await client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": QUESTION}], tools=TOOLS
    )
    tools: Any = FLAT
    await client.responses.create(model="chat", input=QUESTION, tools=tools)
    async with client.responses.stream(model="chat", input=QUESTION, tools=tools) as stream:
        await stream.get_final_response()
    await counted(proxy, "written", 3)
    chat, whole, streamed = (without_ids(e) for e in examples(folder))
    assert whole == streamed
    assert whole["messages"] == chat["messages"]
    names = [tool["function"]["name"] for tool in whole["tools"]]
    assert names == [tool["function"]["name"] for tool in TOOLS]


async def test_a_stream_the_client_closes_once_it_has_read_done_is_captured_and_compared(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, tmp_path: Path
) -> None:
    """The synchronous `openai` SDK closes its connection as soon as it has read `[DONE]`,
    before the body's last chunk: an answer it read whole is no abandoned request. The
    upstream keeps its body open a while after `[DONE]` (`linger`), so the client is gone
    while the proxy still reads it."""
    folder = tmp_path / "captured"
    config = capture_config(fake_upstream, folder)
    config["routes"]["chat"]["variants"][0]["model"] = "ft-linger-500"
    shadow = {"upstream": "fake", "model": "ft-model", "sample": 1.0, "compare": "tool_calls"}
    config["routes"]["chat"]["shadow"] = shadow
    proxy = await start_proxy(config)
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=CLIENT_KEY, max_retries=0)

    def ask() -> list[str]:
        messages: Any = [{"role": "user", "content": QUESTION}]
        stream = client.chat.completions.create(
            model="chat", messages=messages, tools=TOOLS, stream=True
        )
        return [
            c.function.name for chunk in stream for c in chunk.choices[0].delta.tool_calls or ()
        ]

    try:
        assert "lookup_order" in await asyncio.to_thread(ask)
    finally:
        client.close()
    await eventually(
        lambda: total(samples_of(proxy), "tuned_proxy_shadow_agreement_total") == 1,
        "the answers compared",
    )
    assert total(samples_of(proxy), "tuned_proxy_shadow_agreement_total", outcome="same_calls") == 1
    await eventually(lambda: total(samples_of(proxy), CAPTURED) == 1, "the capture counted")
    assert total(samples_of(proxy), CAPTURED, outcome="written") == 1
    [example] = examples(folder)
    assert example["messages"][-1]["tool_calls"][0]["function"]["name"] == "lookup_order"


async def test_a_folder_that_cannot_be_written_never_fails_a_request(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("")
    proxy = await start_proxy(capture_config(fake_upstream, tmp_path / "a-file" / "captured"))
    client = proxy.client()
    for _ in range(3):
        completion = await client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
        assert completion.choices[0].message.content
    await counted(proxy, "failed", 3)


async def test_a_reload_moves_the_capture_to_the_new_folder(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, tmp_path: Path
) -> None:
    proxy = await start_proxy(capture_config(fake_upstream, tmp_path / "one"))
    client = proxy.client()
    ask: Any = [{"role": "user", "content": "hi"}]
    await client.chat.completions.create(model="chat", messages=ask)
    await counted(proxy, "written", 1)
    config = capture_config(fake_upstream, tmp_path / "two")
    proxy.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert reload_config(proxy.app[STATE], proxy.config_path)
    await client.chat.completions.create(model="chat", messages=ask)
    await counted(proxy, "written", 2)
    assert len(examples(tmp_path / "one")) == 1
    assert len(examples(tmp_path / "two")) == 1


@pytest.mark.slow
async def test_sigterm_writes_what_was_captured_and_drops_past_the_queue(tmp_path: Path) -> None:
    """A burst larger than the queue, then SIGTERM: the process exits 0 and its files hold
    exactly the lines it counted as written, each whole; the rest were counted dropped."""
    folder = tmp_path / "captured"
    config = {
        "server": {"capture_queue": 4},
        "upstreams": {"local": {"kind": "mock"}},
        "routes": {
            "chat": {
                "variants": [{"name": "v", "upstream": "local", "model": "m"}],
                "capture": {"dir": str(folder)},
            }
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    async with serving(path) as proc:
        client = openai.AsyncOpenAI(base_url=f"{proc.url}/v1", api_key="unused", max_retries=0)
        async with client:
            asks = [
                client.chat.completions.create(
                    model="chat", messages=[{"role": "user", "content": f"question {n}"}]
                )
                for n in range(64)
            ]
            answers = await asyncio.gather(*asks)
        assert len(answers) == 64
        proc.proc.send_signal(signal.SIGTERM)
        closed = await read_until(proc.proc, proc.lines, "capture closed")
        assert await proc.proc.wait() == 0
    written = closed.get("written_total", 0)
    assert written + closed.get("dropped_total", 0) == 64
    assert written == len(examples(folder)) > 0


async def test_captured_files_merge_into_a_training_file_and_a_held_out_part(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, tmp_path: Path
) -> None:
    """The loop's first steps on real capture files: merge drops the repeated conversations,
    splits deterministically, and the merged file passes `training check`."""
    folder = tmp_path / "captured"
    proxy = await start_proxy(capture_config(fake_upstream, folder, max_file_mb=0.002))
    client = proxy.client()
    questions = [f"Question number {n}: where is my parcel?" for n in range(12)]
    for question in [*questions, *questions[:4]]:  # four conversations twice
        await client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": question}]
        )
    await counted(proxy, "written", 16)
    assert len(list(folder.glob("*.jsonl"))) > 1  # rotated: the merge reads a folder of files
    merged, held = tmp_path / "train.jsonl", tmp_path / "heldout.jsonl"
    assert main(["training", "merge", str(folder), "-o", str(merged)]) == 0
    assert main(["training", "check", str(merged)]) == 0
    kept = [json.loads(line)["messages"][0]["content"] for line in merged.read_text().splitlines()]
    assert kept == questions
    split = ["training", "merge", str(folder), "-o", str(merged), "--force"]
    assert main([*split, "--holdout", "0.3", "--holdout-out", str(held)]) == 0
    train = merged.read_text().splitlines()
    heldout = held.read_text().splitlines()
    assert len(train) + len(heldout) == 12
    assert not set(train) & set(heldout)


async def test_a_conversation_captured_twice_with_other_call_ids_is_merged_once(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, tmp_path: Path
) -> None:
    """An upstream makes up new call ids for each answer (the fake derives them from the
    whole request, so another `user` gets others): the same question answered with the same
    call twice is one conversation, never trained on and held out at once."""
    folder = tmp_path / "captured"
    proxy = await start_proxy(capture_config(fake_upstream, folder))
    client = proxy.client()
    questions = [f"Where is my order ORD-{n:06d}?" for n in range(12)]
    for user in ("ann", "bob"):
        for question in questions:
            messages: Any = [{"role": "user", "content": question}]
            await client.chat.completions.create(
                model="chat", messages=messages, tools=TOOLS, user=user
            )
    await counted(proxy, "written", 24)
    answers = [example["messages"][-1]["tool_calls"][0] for example in examples(folder)]
    assert answers[0]["function"] == answers[12]["function"]
    assert answers[0]["id"] != answers[12]["id"]
    merged, held = tmp_path / "train.jsonl", tmp_path / "heldout.jsonl"
    split = ["--holdout", "0.5", "--holdout-out", str(held)]
    assert main(["training", "merge", str(folder), "-o", str(merged), *split]) == 0
    train = [json.loads(line) for line in merged.read_text().splitlines()]
    heldout = [json.loads(line) for line in held.read_text().splitlines()]
    assert train
    assert heldout
    asked = [example["messages"][-2]["content"] for example in train + heldout]
    assert sorted(asked) == questions
