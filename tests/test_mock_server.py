"""The mock upstream over real HTTP: OpenAI's SDK against it, steering, recording, Azure paths."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from proxy.fake.model import PREFIX_CHUNKS
from proxy.fake.server import (
    RECEIVED,
    RunningMock,
    build_mock_app,
    fake_exchange,
    serve_mock,
)
from proxy.jsonutil import JSONDecodeError, dumps, loads

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
ORDER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Find an order.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "integer"}},
            "required": ["order_id"],
        },
    },
}
USER_ASKS = [{"role": "user", "content": "What's the weather in Paris?"}]


@pytest.fixture
async def mock() -> AsyncIterator[RunningMock]:
    async with serve_mock() as running:
        yield running


@pytest.fixture
async def client(mock: RunningMock) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=f"{mock.base_url}/v1", api_key="sk-test", max_retries=0)
    yield sdk
    await sdk.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def chat_body(model: str = "mock-model", **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": USER_ASKS, "tools": [WEATHER_TOOL], **fields}


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: Any,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    async with http.post(url, data=dumps(body), headers=headers) as response:
        return response.status, dict(response.headers), await response.read()


async def read_until_broken(response: aiohttp.ClientResponse) -> tuple[bytes, BaseException | None]:
    """The body bytes that arrived, and the error that ended the body early (if any)."""
    received = b""
    try:
        async for piece in response.content.iter_any():
            received += piece
    except aiohttp.ClientPayloadError as exc:
        return received, exc
    return received, None


# ---------------------------------------------------------------------------
# With the openai SDK


async def test_sdk_gets_a_tool_call_with_openai_headers(client: openai.AsyncOpenAI) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="mock-model", messages=USER_ASKS, tools=[WEATHER_TOOL, ORDER_TOOL]
    )
    completion = raw.parse()
    call = completion.choices[0].message.tool_calls[0]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert loads(call.function.arguments) == {"city": "Paris"}
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    assert raw.headers["x-request-id"].startswith("req_mock_")
    assert raw.headers["x-ratelimit-limit-requests"].isdigit()
    assert raw.headers["x-ratelimit-remaining-requests"].isdigit()
    assert raw.headers["openai-processing-ms"].isdigit()


async def test_each_answer_has_its_own_request_id(client: openai.AsyncOpenAI) -> None:
    ids = set()
    for _ in range(2):
        raw = await client.chat.completions.with_raw_response.create(
            model="mock-model", messages=USER_ASKS
        )
        ids.add(raw.headers["x-request-id"])
    assert len(ids) == 2


async def test_sdk_stream_with_usage_reassembles(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="mock-model",
        messages=USER_ASKS,
        tools=[WEATHER_TOOL],
        stream=True,
        stream_options={"include_usage": True},
    )
    arguments, names, finish, usage = "", [], None, None
    async for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or []:
                names += [call.function.name] if call.function and call.function.name else []
                arguments += call.function.arguments or "" if call.function else ""
    assert names == ["get_weather"]
    assert loads(arguments) == {"city": "Paris"}
    assert finish == "tool_calls"
    assert usage is not None
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_text_stream_ends_with_done(mock: RunningMock, http: aiohttp.ClientSession) -> None:
    body = {"model": "mock-model", "messages": USER_ASKS, "stream": True}
    status, headers, payload = await post(http, f"{mock.base_url}/v1/chat/completions", body)
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    events = payload.decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [loads(event.removeprefix("data: ")) for event in events[:-2]]
    content = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)
    assert "What's the weather in Paris?" in content


async def test_models_list(client: openai.AsyncOpenAI) -> None:
    models = await client.models.list()
    assert [model.id for model in models.data] == ["mock-model"]


async def test_request_errors_are_openai_400s(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model="mock-model", messages=USER_ASKS, tool_choice="auto"
        )
    assert caught.value.param == "tool_choice"


# ---------------------------------------------------------------------------
# Recording


async def test_records_what_it_received(mock: RunningMock, client: openai.AsyncOpenAI) -> None:
    await client.chat.completions.create(
        model="mock-model", messages=USER_ASKS, tools=[WEATHER_TOOL], user="u-1"
    )
    assert len(mock.received) == 1
    seen = mock.received[0]
    assert mock.received is mock.app[RECEIVED]
    assert (seen.method, seen.path, seen.query) == ("POST", "/v1/chat/completions", {})
    assert seen.headers["authorization"] == "Bearer sk-test"
    assert seen.body == {
        "model": "mock-model",
        "messages": USER_ASKS,
        "tools": [WEATHER_TOOL],
        "user": "u-1",
    }


async def test_invalid_json_is_a_400_and_recorded_as_text(
    mock: RunningMock, http: aiohttp.ClientSession
) -> None:
    url = f"{mock.base_url}/v1/chat/completions"
    async with http.post(url, data=b'{"model": ') as response:
        assert response.status == 400
        error = (await response.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert mock.received[0].body == '{"model": '


async def test_a_body_that_is_not_an_object_is_a_400(
    mock: RunningMock, http: aiohttp.ClientSession
) -> None:
    status, _, payload = await post(http, f"{mock.base_url}/chat/completions", [1, 2])
    assert status == 400
    assert loads(payload)["error"]["type"] == "invalid_request_error"


# ---------------------------------------------------------------------------
# Azure paths


async def test_azure_classic_path_takes_the_model_from_the_deployment(
    mock: RunningMock,
) -> None:
    azure = openai.AsyncAzureOpenAI(
        azure_endpoint=mock.base_url, api_version="2024-10-21", api_key="az-key", max_retries=0
    )
    try:
        completion = await azure.chat.completions.create(model="my-deployment", messages=USER_ASKS)
    finally:
        await azure.close()
    seen = mock.received[0]
    assert seen.path == "/openai/deployments/my-deployment/chat/completions"
    assert seen.query == {"api-version": "2024-10-21"}
    assert seen.headers["api-key"] == "az-key"
    assert completion.model == "my-deployment"


async def test_azure_v1_paths(mock: RunningMock, http: aiohttp.ClientSession) -> None:
    v1 = openai.AsyncOpenAI(base_url=f"{mock.base_url}/openai/v1", api_key="k", max_retries=0)
    try:
        completion = await v1.chat.completions.create(model="ft-deploy", messages=USER_ASKS)
    finally:
        await v1.close()
    assert completion.model == "ft-deploy"
    url = f"{mock.base_url}/openai/v1/deployments/other-deploy/chat/completions"
    status, _, payload = await post(http, url, chat_body(model="ignored"))
    assert status == 200
    assert loads(payload)["model"] == "other-deploy"
    assert [seen.path for seen in mock.received] == [
        "/openai/v1/chat/completions",
        "/openai/v1/deployments/other-deploy/chat/completions",
    ]


async def test_a_deployment_name_steers(mock: RunningMock, http: aiohttp.ClientSession) -> None:
    url = f"{mock.base_url}/openai/deployments/ft-error-429/chat/completions?api-version=x"
    status, _, _ = await post(http, url, chat_body())
    assert status == 429


# ---------------------------------------------------------------------------
# Steering


async def test_error_429_is_a_rate_limit_with_retry_headers(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="ft-error-429", messages=USER_ASKS)
    headers = caught.value.response.headers
    assert headers["retry-after"] == "1"
    assert headers["retry-after-ms"] == "1000"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-limit-requests"].isdigit()
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.request_id is not None
    assert caught.value.request_id.startswith("req_mock_")


@pytest.mark.parametrize(
    ("status", "expected_type"),
    [(400, "invalid_request_error"), (401, "invalid_request_error"), (404, "invalid_request_error"),
     (500, "server_error"), (502, "server_error"), (503, "server_error")],
)  # fmt: skip
async def test_error_status_with_openai_body(
    mock: RunningMock, http: aiohttp.ClientSession, status: int, expected_type: str
) -> None:
    got, headers, payload = await post(
        http, f"{mock.base_url}/v1/chat/completions", chat_body(f"ft-error-{status}")
    )
    error = loads(payload)["error"]
    assert got == status
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == expected_type
    assert ("Retry-After" in headers) is (status == 503)


async def test_header_steers_an_ordinary_model(
    mock: RunningMock, http: aiohttp.ClientSession
) -> None:
    status, _, _ = await post(
        http,
        f"{mock.base_url}/v1/chat/completions",
        chat_body(),
        headers={"X-Mock-Behavior": "error-503"},
    )
    assert status == 503


async def test_slow_still_answers_fully(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="ft-slow-1", messages=USER_ASKS, tools=[WEATHER_TOOL], stream=True
    )
    finishes = [choice.finish_reason async for chunk in stream for choice in chunk.choices]
    assert finishes[-1] == "tool_calls"


@pytest.mark.parametrize("stream", [True, False])
async def test_slow_holds_each_piece_back(stream: bool) -> None:
    # Observed without a clock: a piece of a slow answer is still pending after the event
    # loop has run other work, while a prompt answer's piece is ready at once.
    body = chat_body(stream=stream)
    prompt = await fake_exchange(body, {})
    slow = await fake_exchange(body, {"x-mock-behavior": "slow-60000"})
    assert await anext(prompt.chunks)
    pending = asyncio.ensure_future(anext(slow.chunks))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not pending.done()
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending


async def test_tool_and_text_steering(client: openai.AsyncOpenAI) -> None:
    text = await client.chat.completions.create(
        model="ft-text", messages=USER_ASKS, tools=[WEATHER_TOOL]
    )
    assert text.choices[0].message.tool_calls is None
    assert text.choices[0].finish_reason == "stop"
    after_result = [
        *USER_ASKS,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    again = await client.chat.completions.create(
        model="ft-tool",
        messages=after_result,
        tools=[WEATHER_TOOL],
    )
    assert again.choices[0].finish_reason == "tool_calls"


async def test_invalid_args_lack_a_required_property(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="ft-invalid-args", messages=USER_ASKS, tools=[WEATHER_TOOL]
    )
    call = completion.choices[0].message.tool_calls[0]
    assert loads(call.function.arguments) == {}


async def test_bad_json_is_a_200_that_does_not_parse(
    mock: RunningMock, http: aiohttp.ClientSession
) -> None:
    url = f"{mock.base_url}/v1/chat/completions"
    status, _, payload = await post(http, url, chat_body("ft-bad-json"))
    assert status == 200
    with pytest.raises(JSONDecodeError):
        loads(payload)
    status, _, payload = await post(http, url, chat_body("ft-bad-json", stream=True))
    events = [event.removeprefix(b"data: ") for event in payload.split(b"\n\n") if event]
    assert status == 200
    assert events[-1] == b"[DONE]"
    unparsable = 0
    for event in events[:-1]:
        try:
            loads(event)
        except JSONDecodeError:
            unparsable += 1
    assert unparsable == 1


@pytest.mark.parametrize("stream", [True, False])
async def test_stream_cut_drops_the_connection_without_done(
    mock: RunningMock, http: aiohttp.ClientSession, stream: bool
) -> None:
    url = f"{mock.base_url}/v1/chat/completions"
    async with http.post(url, data=dumps(chat_body("ft-stream-cut", stream=stream))) as response:
        assert response.status == 200
        received, error = await read_until_broken(response)
    assert isinstance(error, aiohttp.ClientPayloadError)
    assert received
    assert b"[DONE]" not in received
    if stream:
        assert received.count(b"data: ") == PREFIX_CHUNKS


async def collect(chunks: AsyncIterator[bytes], into: list[bytes]) -> None:
    async for piece in chunks:
        into.append(piece)


async def test_stream_cut_exchange_raises_connection_reset() -> None:
    exchange = await fake_exchange(chat_body("ft-stream-cut", stream=True), {})
    pieces: list[bytes] = []
    with pytest.raises(ConnectionResetError):
        await collect(exchange.chunks, pieces)
    assert len(pieces) == PREFIX_CHUNKS


async def test_fake_exchange_reads_the_header_case_insensitively() -> None:
    exchange = await fake_exchange(chat_body(), {"X-Mock-Behavior": "error-503"})
    assert exchange.status == 503
    assert exchange.headers["retry-after"] == "1"


# ---------------------------------------------------------------------------
# Silence, and a shutdown that ends it


async def wait_until_received(app: web.Application, count: int) -> None:
    for _ in range(500):
        if len(app[RECEIVED]) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the mock received {len(app[RECEIVED])} requests, not {count}")


async def start_runner(app: web.Application) -> tuple[web.AppRunner, str]:
    # aiohttp's default shutdown grace (60 s) on purpose: the app itself must end its stalls.
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/v1/chat/completions"


async def test_stall_sends_nothing_and_shutdown_cancels_it(http: aiohttp.ClientSession) -> None:
    app = build_mock_app()
    runner, url = await start_runner(app)
    short = aiohttp.ClientTimeout(total=0.2)
    with pytest.raises(asyncio.TimeoutError):
        await http.post(url, data=dumps(chat_body("ft-stall")), timeout=short)
    waiting = asyncio.ensure_future(http.post(url, data=dumps(chat_body("ft-stall"))))
    await wait_until_received(app, 2)
    assert not waiting.done()
    await asyncio.wait_for(runner.cleanup(), timeout=10)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await asyncio.wait_for(waiting, timeout=5)


async def test_stream_stall_sends_a_few_chunks_then_silence(http: aiohttp.ClientSession) -> None:
    app = build_mock_app()
    runner, url = await start_runner(app)
    response = await http.post(url, data=dumps(chat_body("ft-stream-stall", stream=True)))
    try:
        received = b""
        while received.count(b"\n\n") < PREFIX_CHUNKS:
            received += await asyncio.wait_for(response.content.readany(), timeout=5)
        more = asyncio.ensure_future(response.content.readany())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not more.done()
        await asyncio.wait_for(runner.cleanup(), timeout=10)
        with pytest.raises(aiohttp.ClientPayloadError):
            await asyncio.wait_for(more, timeout=5)
    finally:
        response.close()
    assert received.count(b"data: ") == PREFIX_CHUNKS
