"""End to end: the `openai` SDK → the proxy (real port) → the fake upstream (real port)."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest

from tests.support.configs import basic_config
from tests.support.keys import CLIENT_KEY, UPSTREAM_KEY
from tests.support.servers import FakeUpstream, RunningProxy, StartProxy

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city, e.g. Paris"},
                "format": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location", "format"],
        },
    },
}
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather in Paris today?"}]


async def test_non_stream_answer_and_only_model_changes(
    proxy: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    client = proxy.client()
    completion = await client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "Hello there"}],
        temperature=0.2,
        extra_body={"future_field": {"kept": [1, 2]}},
    )
    assert completion.choices[0].message.content
    assert completion.object == "chat.completion"
    sent = fake_upstream.last
    assert sent.path == "/v1/chat/completions"
    assert sent.body == {
        "messages": [{"role": "user", "content": "Hello there"}],
        "model": "ft-model",
        "temperature": 0.2,
        "future_field": {"kept": [1, 2]},
    }


async def test_credentials_client_key_never_forwarded(
    proxy: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    await proxy.client().chat.completions.create(model="chat", messages=WEATHER_QUESTION)
    headers = {k.lower(): v for k, v in fake_upstream.last.headers.items()}
    assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert "api-key" not in headers
    assert all(CLIENT_KEY not in value for value in headers.values())


async def test_tool_call_non_stream(proxy: RunningProxy) -> None:
    completion = await proxy.client().chat.completions.create(
        model="chat", messages=WEATHER_QUESTION, tools=[WEATHER_TOOL]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_current_weather"
    assert call.id


async def test_stream_tool_call_deltas_are_intact(
    proxy: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    """The streamed bytes through the proxy are the upstream's bytes, event for event, but for
    the usage chunk the proxy asked for on the client's behalf and took out again."""
    request = {
        "model": "chat",
        "messages": WEATHER_QUESTION,
        "tools": [WEATHER_TOOL],
        "stream": True,
    }
    async with aiohttp.ClientSession() as session:
        through_proxy = await _post_raw(session, f"{proxy.url}/v1/chat/completions", request)
        assert fake_upstream.last.body["stream_options"] == {"include_usage": True}
        direct = await _post_raw(
            session,
            f"{fake_upstream.url}/v1/chat/completions",
            {**request, "model": "ft-model", "stream_options": {"include_usage": True}},
        )
    direct_events = direct.split(b"\n\n")
    usage_events = [e for e in direct_events if b'"choices":[]' in e]
    assert len(usage_events) == 1
    assert through_proxy.split(b"\n\n") == [e for e in direct_events if e not in usage_events]
    assert through_proxy.endswith(b"data: [DONE]\n\n")

    stream = await proxy.client().chat.completions.create(
        model="chat", messages=WEATHER_QUESTION, tools=[WEATHER_TOOL], stream=True
    )
    first_deltas: list[Any] = []
    fragments: list[str] = []
    finish = None
    async for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                if delta.id:
                    first_deltas.append(delta)
                fragments.append(delta.function.arguments or "" if delta.function else "")
            finish = choice.finish_reason or finish
    assert len(first_deltas) == 1
    assert first_deltas[0].function.name == "get_current_weather"
    assert first_deltas[0].type == "function"
    assert '"location"' in "".join(fragments)
    assert finish == "tool_calls"


async def _post_raw(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> bytes:
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    async with session.post(url, json=body, headers=headers) as response:
        assert response.status == 200
        return await response.read()


async def test_stream_usage_reaches_a_client_that_asked(
    proxy: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    stream = await proxy.client().chat.completions.create(
        model="chat",
        messages=WEATHER_QUESTION,
        stream=True,
        stream_options={"include_usage": True, "include_obfuscation": False},
    )
    usages = [chunk.usage async for chunk in stream if chunk.usage is not None]
    assert len(usages) == 1
    assert usages[0].prompt_tokens > 0
    assert fake_upstream.last.body["stream_options"] == {
        "include_usage": True,
        "include_obfuscation": False,
    }


async def test_stream_text_via_sdk(proxy: RunningProxy) -> None:
    stream = await proxy.client().chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "Say hi"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text


async def test_azure_client_deployment_path(
    proxy: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    client = proxy.track(
        openai.AsyncAzureOpenAI(
            azure_endpoint=proxy.url, api_key=CLIENT_KEY, api_version="2024-10-21", max_retries=0
        )
    )
    completion = await client.chat.completions.create(model="chat", messages=WEATHER_QUESTION)
    assert completion.choices[0].message is not None
    assert fake_upstream.last.body["model"] == "ft-model"


@pytest.mark.parametrize(
    "path",
    [
        "/openai/deployments/chat/chat/completions?api-version=2024-10-21",
        "/openai/deployments/chat/chat/completions",
        "/openai/v1/deployments/chat/chat/completions",
        "/openai/v1/chat/completions",
        "/v1/chat/completions",
    ],
)
async def test_every_azure_path_form(proxy: RunningProxy, path: str) -> None:
    body = {"messages": WEATHER_QUESTION}
    if "/deployments/" not in path:
        body["model"] = "chat"
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            f"{proxy.url}{path}", json=body, headers={"api-key": CLIENT_KEY}
        )
        assert response.status == 200, await response.text()
        assert response.headers["x-tuned-proxy-route"] == "chat"


async def test_openai_v1_base_url_with_plain_client(proxy: RunningProxy) -> None:
    client = proxy.track(
        openai.AsyncOpenAI(base_url=f"{proxy.url}/openai/v1", api_key=CLIENT_KEY, max_retries=0)
    )
    completion = await client.chat.completions.create(model="chat", messages=WEATHER_QUESTION)
    assert completion.choices


async def test_models_lists_routes(proxy: RunningProxy) -> None:
    models = await proxy.client().models.list()
    assert [m.id for m in models.data] == ["chat"]


async def test_response_headers(proxy: RunningProxy) -> None:
    raw = await proxy.client().chat.completions.with_raw_response.create(
        model="chat", messages=WEATHER_QUESTION, extra_headers={"x-request-id": "trace-123"}
    )
    assert raw.headers["x-request-id"] == "trace-123"
    assert raw.headers["x-tuned-proxy-route"] == "chat"
    assert raw.headers["x-tuned-proxy-variant"] == "main"
    assert raw.headers["x-upstream-request-id"].startswith("req_")
    assert "x-ratelimit-remaining-requests" in raw.headers


async def test_new_request_id_when_client_sends_none(proxy: RunningProxy) -> None:
    raw = await proxy.client().chat.completions.with_raw_response.create(
        model="chat", messages=WEATHER_QUESTION
    )
    assert raw.headers["x-request-id"].startswith("req_")


async def test_azure_upstream_classic_and_v1_urls(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_AZURE_KEY", "azure-secret")
    config = basic_config(fake_upstream.url)
    config["upstreams"] = {
        "classic": {
            "kind": "azure",
            "base_url": fake_upstream.url,
            "api_key_env": "TEST_AZURE_KEY",
            "api_version": "2024-10-21",
        },
        "v1": {"kind": "azure", "base_url": fake_upstream.url, "api_key_env": "TEST_AZURE_KEY"},
    }
    config["routes"] = {
        "classic": {"variants": [{"name": "a", "upstream": "classic", "model": "my-deploy"}]},
        "v1": {"variants": [{"name": "a", "upstream": "v1", "model": "my-deploy"}]},
    }
    proxy = await start_proxy(config)
    client = proxy.client()
    await client.chat.completions.create(model="classic", messages=WEATHER_QUESTION)
    classic = fake_upstream.last
    assert classic.path == "/openai/deployments/my-deploy/chat/completions"
    assert classic.query == {"api-version": "2024-10-21"}
    headers = {k.lower(): v for k, v in classic.headers.items()}
    assert headers["api-key"] == "azure-secret"
    assert "authorization" not in headers
    await client.chat.completions.create(model="v1", messages=WEATHER_QUESTION)
    assert fake_upstream.last.path == "/openai/v1/chat/completions"
    assert fake_upstream.last.body["model"] == "my-deploy"
