"""Policies through the running proxy, with the `openai` SDK as the application: what the
upstream received and what the client got back, streaming and not, legacy clients included."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import openai
import pytest

from proxy.policies import load_policy
from proxy.rewrite import rewrite
from tests.support.configs import basic_config, fake_variant
from tests.support.servers import FakeUpstream, RunningProxy, StartProxy

REPO = Path(__file__).resolve().parent.parent
SUPPORT_TOOLS = json.loads((REPO / "policies" / "support.tools.json").read_text())
WEATHER_TOOLS = json.loads((REPO / "policies" / "weather.tools.json").read_text())
ORDER_QUESTION = [{"role": "user", "content": "Can you look up the status of my order ORD-842131?"}]
WEATHER_QUESTION = [{"role": "user", "content": "What is the current weather in Paris in celsius?"}]


def drifted(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tools as an application sends them after months of edits."""
    changed = copy.deepcopy(tools)
    for tool in changed:
        function = tool["function"]
        function["description"] = "Edited: " + function.get("description", "")
        function.setdefault("parameters", {}).setdefault("properties", {})["added_later"] = {
            "type": "string"
        }
    return changed


@pytest.fixture
async def policied(fake_upstream: FakeUpstream, start_proxy: StartProxy) -> RunningProxy:
    config = basic_config(fake_upstream.url, allow_variant_override=True)
    config["routes"]["chat"]["variants"] = [
        fake_variant("full", "m-full", policy="support-full"),
        fake_variant("slim", "m-slim", 0, policy="support-slim"),
        fake_variant("params", "m-params", 0, policy="support-params"),
    ]
    config["routes"]["weather"] = {
        "variants": [{"name": "ft", "upstream": "fake", "model": "m-weather", "policy": "weather"}]
    }
    return await start_proxy(config)


def pinned(variant: str) -> dict[str, str]:
    return {"x-tuned-proxy-variant": variant}


async def test_identical_sends_the_training_definitions_whatever_the_app_sends(
    policied: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    completion = await policied.client().chat.completions.create(
        model="chat",
        messages=ORDER_QUESTION,
        tools=drifted(SUPPORT_TOOLS),
        extra_headers=pinned("full"),
    )
    sent = fake_upstream.last.body
    assert json.dumps(sent["tools"]) == json.dumps(SUPPORT_TOOLS)  # byte for byte, key order kept
    assert sent["messages"][0]["role"] == "system"  # the training system prompt
    assert sent["parallel_tool_calls"] is False
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup_order"
    assert json.loads(call.function.arguments) == {"order_id": "ORD-842131"}


@pytest.mark.parametrize("variant", ["slim", "params"])
async def test_slim_variants_send_fewer_bytes_and_fewer_prompt_tokens(
    policied: RunningProxy, fake_upstream: FakeUpstream, variant: str
) -> None:
    client = policied.client()
    full = await client.chat.completions.create(
        model="chat", messages=ORDER_QUESTION, tools=SUPPORT_TOOLS, extra_headers=pinned("full")
    )
    full_tools = fake_upstream.last.body["tools"]
    slim = await client.chat.completions.create(
        model="chat", messages=ORDER_QUESTION, tools=SUPPORT_TOOLS, extra_headers=pinned(variant)
    )
    slim_tools = fake_upstream.last.body["tools"]
    assert len(json.dumps(slim_tools)) < len(json.dumps(full_tools))
    assert slim.usage is not None
    assert full.usage is not None
    assert slim.usage.prompt_tokens < full.usage.prompt_tokens
    assert slim.choices[0].message.tool_calls[0].function.name == "lookup_order"
    if variant == "slim":
        assert all("description" not in t["function"] for t in slim_tools)


async def test_repeated_and_edited_tools_are_rewritten_per_variant_every_time(
    policied: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    """The parse stage shares a tools list between requests with the same text and the rewrite
    memoizes against it: every request must still get its own variant's rewrite."""
    client = policied.client()
    policies = {
        name: load_policy(REPO / "policies" / f"support-{name}.yaml", name)
        for name in ("full", "slim", "params")
    }
    edited = drifted(SUPPORT_TOOLS)
    for tools in (SUPPORT_TOOLS, edited, SUPPORT_TOOLS, edited):
        for variant, policy in policies.items():
            request = {"model": "chat", "messages": ORDER_QUESTION, "tools": tools}
            await client.chat.completions.create(**request, extra_headers=pinned(variant))
            expected = rewrite(request, policy).body["tools"]
            assert json.dumps(fake_upstream.last.body["tools"]) == json.dumps(expected)
    assert len(fake_upstream.received) == 12


async def test_streamed_tool_call_through_a_policy(
    policied: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    stream = await policied.client().chat.completions.create(
        model="chat",
        messages=ORDER_QUESTION,
        tools=drifted(SUPPORT_TOOLS),
        stream=True,
        extra_headers=pinned("full"),
    )
    names, fragments = [], []
    async for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                if delta.function and delta.function.name:
                    names.append(delta.function.name)
                if delta.function and delta.function.arguments:
                    fragments.append(delta.function.arguments)
    assert names == ["lookup_order"]
    assert json.loads("".join(fragments)) == {"order_id": "ORD-842131"}
    assert json.dumps(fake_upstream.last.body["tools"]) == json.dumps(SUPPORT_TOOLS)


async def test_legacy_functions_client_non_stream(
    policied: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    completion = await policied.client().chat.completions.create(
        model="weather",
        messages=WEATHER_QUESTION,
        functions=[tool["function"] for tool in WEATHER_TOOLS],
        function_call="auto",
    )
    sent = fake_upstream.last.body
    assert "functions" not in sent
    assert "function_call" not in sent
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_current_weather"]
    choice = completion.choices[0]
    assert choice.finish_reason == "function_call"
    assert choice.message.tool_calls is None
    assert choice.message.function_call is not None
    assert choice.message.function_call.name == "get_current_weather"
    assert json.loads(choice.message.function_call.arguments)["location"]


async def test_legacy_functions_client_stream(policied: RunningProxy) -> None:
    stream = await policied.client().chat.completions.create(
        model="weather",
        messages=WEATHER_QUESTION,
        functions=[tool["function"] for tool in WEATHER_TOOLS],
        stream=True,
    )
    name, arguments, finish = None, "", None
    async for chunk in stream:
        for choice in chunk.choices:
            assert choice.delta.tool_calls is None
            if choice.delta.function_call:
                name = choice.delta.function_call.name or name
                arguments += choice.delta.function_call.arguments or ""
            finish = choice.finish_reason or finish
    assert name == "get_current_weather"
    assert json.loads(arguments)["location"]
    assert finish == "function_call"


async def test_legacy_history_is_translated_for_the_upstream(
    policied: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    history: list[Any] = [
        *WEATHER_QUESTION,
        {
            "role": "assistant",
            "content": None,
            "function_call": {
                "name": "get_current_weather",
                "arguments": '{"location": "Paris", "format": "celsius"}',
            },
        },
        {"role": "function", "name": "get_current_weather", "content": "21 degrees"},
    ]
    completion = await policied.client().chat.completions.create(
        model="weather", messages=history, functions=[tool["function"] for tool in WEATHER_TOOLS]
    )
    sent = fake_upstream.last.body["messages"]
    assistant = next(m for m in sent if m["role"] == "assistant")
    tool_answer = next(m for m in sent if m["role"] == "tool")
    assert assistant["tool_calls"][0]["function"]["name"] == "get_current_weather"
    assert tool_answer["tool_call_id"] == assistant["tool_calls"][0]["id"]
    assert "21 degrees" in (completion.choices[0].message.content or "")


async def test_both_functions_and_tools_is_a_400(policied: RunningProxy) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await policied.client().chat.completions.create(
            model="weather",
            messages=WEATHER_QUESTION,
            functions=[tool["function"] for tool in WEATHER_TOOLS],
            tools=WEATHER_TOOLS,
        )
    assert info.value.status_code == 400
