"""The Responses API through the proxy, for real: the `openai` SDK's `responses` client and an
OpenAI Agents SDK agent, against the fake model served natively (its own `/v1/responses`) and
through the bridge (its chat completions), with the variant's policy applied either way."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import openai
import pytest

from proxy.state import STATE
from tests.support.configs import basic_config
from tests.support.keys import CLIENT_KEY
from tests.support.metrics import samples_of, total
from tests.support.servers import FakeUpstream, RunningProxy, StartProxy
from tests.support.waiting import eventually

LOOKUP_TOOL = {
    "type": "function",
    "name": "lookup_order",
    "description": "Look up an order (edited since training).",
    "parameters": {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
    },
}
QUESTION = "Can you look up the status of my order ORD-842131?"


@pytest.fixture
async def proxy(fake_upstream: FakeUpstream, start_proxy: StartProxy) -> RunningProxy:
    """Routes `native` (the fake's own /v1/responses) and `bridge` (its chat completions),
    each with the support-full policy (identical tools, training system prompt)."""
    config = basic_config(fake_upstream.url)
    fake = config["upstreams"]["fake"]
    config["upstreams"]["native"] = {**fake, "kind": "openai", "responses": "native"}
    config["upstreams"]["bridge"] = {**fake, "responses": "bridge"}
    config["upstreams"]["bridge-no-usage"] = {
        **fake,
        "responses": "bridge",
        "capabilities": {"stream_usage": False},
    }
    for name in ("native", "bridge", "bridge-no-usage"):
        config["routes"][name] = {
            "variants": [
                {"name": "v", "upstream": name, "model": "ft-model", "policy": "support-full"}
            ]
        }
    config["upstreams"]["local"] = {"kind": "mock"}
    config["routes"]["local"] = {
        "variants": [{"name": "v", "upstream": "local", "model": "m", "policy": "support-full"}]
    }
    return await start_proxy(config)


ROUTES = ["native", "bridge", "local"]


@pytest.mark.parametrize("route", ROUTES)
async def test_a_tool_call_comes_back_as_a_function_call_item(
    proxy: RunningProxy, route: str
) -> None:
    client = proxy.client()
    response = await client.responses.create(model=route, input=QUESTION, tools=[LOOKUP_TOOL])
    (call,) = [item for item in response.output if item.type == "function_call"]
    assert call.name == "lookup_order"
    assert json.loads(call.arguments)["order_id"]
    assert call.call_id
    assert response.status == "completed"
    assert response.usage is not None
    assert response.usage.input_tokens > 0


@pytest.mark.parametrize("route", ROUTES)
async def test_a_second_turn_with_the_result_is_answered_in_text(
    proxy: RunningProxy, route: str
) -> None:
    client = proxy.client()
    first = await client.responses.create(model=route, input=QUESTION, tools=[LOOKUP_TOOL])
    (call,) = [item for item in first.output if item.type == "function_call"]
    second = await client.responses.create(
        model=route,
        input=[
            {"role": "user", "content": QUESTION},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "shipped today"},
        ],
        tools=[LOOKUP_TOOL],
    )
    assert "shipped today" in second.output_text


@pytest.mark.parametrize("route", ROUTES)
async def test_streams_assemble_to_the_same_response(proxy: RunningProxy, route: str) -> None:
    client = proxy.client()
    plain = await client.responses.create(model=route, input=QUESTION, tools=[LOOKUP_TOOL])
    async with client.responses.stream(model=route, input=QUESTION, tools=[LOOKUP_TOOL]) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    assert "response.function_call_arguments.delta" in kinds

    def calls(response: Any) -> list[tuple[str, str]]:
        return [(i.name, i.arguments) for i in response.output if i.type == "function_call"]

    assert calls(final) == calls(plain)
    events = await client.responses.create(model=route, input="Hello there", stream=True)
    text = "".join([event.delta async for event in events if event.type.endswith("text.delta")])
    assert text


async def test_the_native_upstream_gets_the_policy_in_the_responses_shape(
    proxy: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    client = proxy.client()
    await client.responses.create(model="native", input=QUESTION, tools=[LOOKUP_TOOL])
    seen = fake_upstream.last
    assert seen.path.endswith("/responses")
    (tool,) = seen.body["tools"]
    assert tool["type"] == "function"
    assert tool["name"] == "lookup_order"
    assert tool["description"] != LOOKUP_TOOL["description"]  # the training definition
    assert tool["strict"] is False
    assert seen.body["instructions"].startswith("You are")  # the training system prompt
    assert seen.body["model"] == "ft-model"


async def test_the_bridge_sends_chat_completions_with_the_policy(
    proxy: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    client = proxy.client()
    await client.responses.create(model="bridge", input=QUESTION, tools=[LOOKUP_TOOL])
    seen = fake_upstream.last
    assert seen.path.endswith("/chat/completions")
    assert seen.body["messages"][0]["role"] == "system"
    assert seen.body["messages"][-1] == {"role": "user", "content": QUESTION}
    (tool,) = seen.body["tools"]
    assert tool["function"]["name"] == "lookup_order"
    assert tool["function"]["description"] != LOOKUP_TOOL["description"]


async def test_what_the_bridge_cannot_carry_is_a_400_naming_it(proxy: RunningProxy) -> None:
    client = proxy.client()
    with pytest.raises(openai.BadRequestError) as refused:
        await client.responses.create(model="bridge", input="hi", previous_response_id="resp_123")
    assert refused.value.body["param"] == "previous_response_id"  # type: ignore[index]


async def test_responses_are_counted_by_api(proxy: RunningProxy) -> None:
    client = proxy.client()
    await client.responses.create(model="native", input=QUESTION, tools=[LOOKUP_TOOL])
    await client.chat.completions.create(
        model="native", messages=[{"role": "user", "content": "hi"}]
    )
    # Paths no model route serves are no API's requests, whatever they end with.
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as session:
        for method, path in [
            ("POST", "/v1/completions"),
            ("POST", "/v2/responses"),
            ("GET", "/v1/chat/completions"),
        ]:
            async with session.request(method, proxy.url + path, json={}) as refused:
                assert refused.status in (404, 405)
    samples = samples_of(proxy)
    assert total(samples, "tuned_proxy_api_requests_total", api="responses") == 1
    assert total(samples, "tuned_proxy_api_requests_total", api="chat") == 1
    assert total(samples, "tuned_proxy_tool_calls_total", function="lookup_order") == 1
    assert total(samples, "tuned_proxy_tokens_total", route="native", kind="prompt") > 0
    assert proxy.app[STATE].in_flight == 0


async def test_the_azure_client_reaches_the_responses_route(proxy: RunningProxy) -> None:
    client = proxy.track(
        openai.AsyncAzureOpenAI(
            azure_endpoint=proxy.url, api_key=CLIENT_KEY, api_version="2025-04-01-preview"
        )
    )
    response = await client.responses.create(model="native", input="Hello there")
    assert response.output_text


# ----------------------------------------------------------------------------- Agents SDK


@pytest.mark.parametrize("route", ["native", "bridge"])
async def test_an_agents_sdk_agent_runs_its_tool_loop_through_the_proxy(
    proxy: RunningProxy, route: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK's defaults (the Responses API), only its model's client pointed at the proxy;
    its tracing switched off, as the README says (else it exports to OpenAI)."""
    monkeypatch.setenv("OPENAI_AGENTS_DISABLE_TRACING", "1")
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool

    looked_up: list[str] = []

    @function_tool
    def lookup_order(order_id: str) -> str:
        """Look up an order by its id."""
        looked_up.append(order_id)
        return f"order {order_id} shipped today"

    agent = Agent(
        name="support",
        instructions="Help the customer.",
        tools=[lookup_order],
        model=OpenAIResponsesModel(model=route, openai_client=proxy.client()),
    )
    result = await Runner.run(agent, QUESTION)
    assert looked_up
    assert "shipped today" in str(result.final_output)


# ----------------------------------------------------------------------------- faults


@pytest.fixture
async def faulty(fake_upstream: FakeUpstream, start_proxy: StartProxy) -> RunningProxy:
    """Responses routes whose upstream misbehaves (steered by the model name), native and
    bridged, and one whose native variant fails over to a bridged fallback."""
    config = basic_config(fake_upstream.url)
    fake = config["upstreams"]["fake"]
    config["upstreams"]["native"] = {**fake, "kind": "openai", "responses": "native"}
    config["upstreams"]["bridge"] = {**fake, "responses": "bridge"}
    for mode in ("native", "bridge"):
        for fault in ("stream-cut", "stream-error", "error-503", "bad-json"):
            config["routes"][f"{mode}-{fault}"] = {
                "variants": [{"name": "v", "upstream": mode, "model": f"ft-{fault}"}]
            }
    config["routes"]["failover"] = {
        "variants": [{"name": "v", "upstream": "native", "model": "ft-error-503"}],
        "fallback": [{"upstream": "bridge", "model": "ft-model", "policy": "support-full"}],
    }
    return await start_proxy(config)


@pytest.mark.parametrize("mode", ["native", "bridge"])
@pytest.mark.parametrize("fault", ["stream-cut", "stream-error"])
async def test_a_stream_that_breaks_ends_with_an_error_the_sdk_raises(
    faulty: RunningProxy, mode: str, fault: str
) -> None:
    client = faulty.client()
    seen: list[str] = []

    async def read_all() -> None:
        async with client.responses.stream(model=f"{mode}-{fault}", input="Hello") as stream:
            async for event in stream:
                seen.append(event.type)

    if (mode, fault) == ("native", "stream-error"):
        # Relayed untouched: the fake's event has `ResponseErrorEvent`'s shape, which the SDK
        # yields rather than raises.
        await read_all()
        assert seen[-1] == "error"
    else:
        with pytest.raises(openai.APIError):  # the proxy's own error event, or the bridge's
            await read_all()
    assert seen[0] == "response.created"
    samples = samples_of(faulty)
    reason = "broken_stream" if fault == "stream-cut" else "error_event"
    assert total(samples, "tuned_proxy_upstream_errors_total", reason=reason) == 1


@pytest.mark.parametrize("mode", ["native", "bridge"])
async def test_upstream_errors_reach_the_client_as_the_sdk_expects(
    faulty: RunningProxy, mode: str
) -> None:
    client = faulty.client()
    with pytest.raises(openai.InternalServerError):
        await client.responses.create(model=f"{mode}-error-503", input="Hello")
    with pytest.raises(openai.APIStatusError) as broken:
        await client.responses.create(model=f"{mode}-bad-json", input="Hello")
    assert broken.value.status_code == 502


async def test_a_native_failure_falls_back_to_a_bridged_target(
    faulty: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    client = faulty.client()
    response = await client.responses.with_raw_response.create(
        model="failover", input=QUESTION, tools=[LOOKUP_TOOL]
    )
    assert response.headers["x-tuned-proxy-variant"] == "fallback-1"
    parsed = response.parse()
    assert [item.type for item in parsed.output] == ["function_call"]
    assert fake_upstream.received[-2].path.endswith("/responses")
    assert fake_upstream.last.path.endswith("/chat/completions")
    samples = samples_of(faulty)
    assert total(samples, "tuned_proxy_fallbacks_total", route="failover") == 1


async def test_a_shadow_copy_of_a_responses_request_is_read_in_its_api(
    fake_upstream: FakeUpstream, start_proxy: StartProxy
) -> None:
    config = basic_config(fake_upstream.url)
    fake = config["upstreams"]["fake"]
    config["upstreams"]["native"] = {**fake, "kind": "openai", "responses": "native"}
    config["routes"]["shadowed"] = {
        "variants": [{"name": "v", "upstream": "native", "model": "ft-model"}],
        "shadow": {"upstream": "fake", "model": "ft-teacher", "sample": 1.0},
    }
    proxy = await start_proxy(config)
    client = proxy.client()
    await client.responses.create(model="shadowed", input=QUESTION, tools=[LOOKUP_TOOL])
    shadows = proxy.app[STATE].shadows
    await eventually(lambda: sum(shadows.outcomes.values()) == 1, "the shadow copy ended")
    assert shadows.outcomes[("shadowed", "ok")] == 1
    teacher = next(seen for seen in fake_upstream.received if seen.body["model"] == "ft-teacher")
    assert teacher.path.endswith("/chat/completions")  # the shadow's upstream is bridged


@pytest.mark.parametrize(("route", "asked"), [("bridge", True), ("bridge-no-usage", False)])
async def test_a_bridged_stream_asks_for_usage_where_the_upstream_takes_it(
    proxy: RunningProxy, fake_upstream: FakeUpstream, route: str, asked: bool
) -> None:
    client = proxy.client()
    stream = await client.responses.create(model=route, input=QUESTION, stream=True)
    events = [event async for event in stream]
    assert events[-1].type == "response.completed"
    (seen,) = [seen.body for seen in fake_upstream.received if seen.path.endswith("/completions")]
    assert seen["stream"] is True
    assert ("stream_options" in seen) is asked
    if asked:
        assert seen["stream_options"] == {"include_usage": True}
