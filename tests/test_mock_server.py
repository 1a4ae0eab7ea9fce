"""The mock upstream over real HTTP: OpenAI's SDK against it (chat and Responses), steering,
recording, Azure paths."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from openai.types.responses import (
    ResponseCompletedEvent,
    ResponseErrorEvent,
    ResponseFunctionToolCall,
)

from proxy.fake.model import CHARS_PER_TOKEN, PREFIX_CHUNKS
from proxy.fake.server import (
    RECEIVED,
    RunningMock,
    build_mock_app,
    fake_exchange,
    fake_responses_exchange,
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


# ---------------------------------------------------------------------------
# The Responses API

WEATHER_FUNCTION: dict[str, Any] = {"type": "function", **WEATHER_TOOL["function"], "strict": True}
ASKS_WEATHER = "What's the weather in Paris?"


async def test_sdk_responses_tool_call_then_text_after_its_output(
    mock: RunningMock, client: openai.AsyncOpenAI
) -> None:
    first = await client.responses.create(
        model="mock-model", input=ASKS_WEATHER, tools=[WEATHER_FUNCTION]
    )
    [call] = first.output
    assert isinstance(call, ResponseFunctionToolCall)
    assert call.name == "get_weather"
    assert loads(call.arguments) == {"city": "Paris"}
    assert first.status == "completed"
    # An agent loop feeds the output back as input, then the call's result.
    second = await client.responses.create(
        model="mock-model",
        input=[
            {"role": "user", "content": ASKS_WEATHER},
            *first.output,
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"},
        ],
        tools=[WEATHER_FUNCTION],
    )
    assert second.output_text == 'Here is what the tools returned: get_weather said "sunny, 21 C"'
    assert second.usage is not None
    assert first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens > 0
    assert [seen.path for seen in mock.received] == ["/v1/responses", "/v1/responses"]
    assert mock.received[1].body["input"][1]["call_id"] == call.call_id


async def test_sdk_responses_stream_has_the_events_of_the_json_answer(
    client: openai.AsyncOpenAI,
) -> None:
    answer = await client.responses.create(
        model="mock-model", input=ASKS_WEATHER, tools=[WEATHER_FUNCTION]
    )
    stream = await client.responses.create(
        model="mock-model", input=ASKS_WEATHER, tools=[WEATHER_FUNCTION], stream=True
    )
    events = [event async for event in stream]
    assert events[0].type == "response.created"
    completed = events[-1]
    assert isinstance(completed, ResponseCompletedEvent)
    arguments = "".join(
        event.delta for event in events if event.type == "response.function_call_arguments.delta"
    )
    [call] = answer.output
    assert isinstance(call, ResponseFunctionToolCall)
    assert arguments == call.arguments
    assert completed.response.output == answer.output
    assert completed.response.usage == answer.usage


async def test_sdk_responses_stream_helper_assembles_the_final_response(
    client: openai.AsyncOpenAI,
) -> None:
    answer = await client.responses.create(
        model="mock-model", input="Say hello", instructions="Be brief."
    )
    async with client.responses.stream(
        model="mock-model", input="Say hello", instructions="Be brief."
    ) as stream:
        deltas = [
            event.delta async for event in stream if event.type == "response.output_text.delta"
        ]
        final = await stream.get_final_response()
    assert len(deltas) > 1
    assert final.output_text == "".join(deltas) == answer.output_text
    assert 'answering: "Say hello"' in final.output_text
    assert (final.id, final.instructions) == (answer.id, "Be brief.")


async def test_sdk_responses_max_output_tokens_is_incomplete(client: openai.AsyncOpenAI) -> None:
    answer = await client.responses.create(
        model="mock-model", input="Tell me a long story", max_output_tokens=2
    )
    assert answer.status == "incomplete"
    assert answer.incomplete_details is not None
    assert answer.incomplete_details.reason == "max_output_tokens"
    assert len(answer.output_text) == 2 * CHARS_PER_TOKEN
    stream = await client.responses.create(
        model="mock-model", input="Tell me a long story", max_output_tokens=2, stream=True
    )
    last = [event async for event in stream][-1]
    assert last.type == "response.incomplete"


@pytest.mark.parametrize(
    ("model", "error"),
    [
        ("ft-error-400", openai.BadRequestError),
        ("ft-error-401", openai.AuthenticationError),
        ("ft-error-404", openai.NotFoundError),
        ("ft-error-429", openai.RateLimitError),
        ("ft-error-500", openai.InternalServerError),
        ("ft-error-503", openai.InternalServerError),
    ],
)
async def test_sdk_responses_steered_errors_are_typed(
    client: openai.AsyncOpenAI, model: str, error: type[openai.APIStatusError]
) -> None:
    with pytest.raises(error) as caught:
        await client.responses.create(model=model, input="hi")
    assert caught.value.request_id is not None
    assert caught.value.request_id.startswith("req_mock_")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tool_choice": {"type": "function", "name": "lookup_order"}}, "tool_choice"),
        (
            {"input": [{"type": "function_call_output", "call_id": "call_x", "output": "sunny"}]},
            "input",
        ),
    ],
)
async def test_sdk_responses_request_errors_are_400s(
    client: openai.AsyncOpenAI, fields: dict[str, Any], param: str
) -> None:
    asked: dict[str, Any] = {"input": ASKS_WEATHER, **fields}
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model="mock-model", tools=[WEATHER_FUNCTION], **asked)
    assert caught.value.param == param


async def test_sdk_responses_stream_error_ends_with_an_error_event(
    client: openai.AsyncOpenAI,
) -> None:
    stream = await client.responses.create(model="ft-stream-error", input="hi", stream=True)
    events = [event async for event in stream]
    assert len(events) == PREFIX_CHUNKS + 1
    last = events[-1]
    assert isinstance(last, ResponseErrorEvent)
    assert (last.code, last.sequence_number) == ("server_error", PREFIX_CHUNKS)


async def test_sdk_responses_stream_cut_is_a_connection_error(client: openai.AsyncOpenAI) -> None:
    stream = await client.responses.create(model="ft-stream-cut", input="hi", stream=True)
    seen: list[str] = []

    async def read_all() -> None:
        async for event in stream:
            seen.append(event.type)

    with pytest.raises(openai.APIConnectionError):
        await read_all()
    assert seen == ["response.created", "response.in_progress", "response.output_item.added"]


async def test_responses_stream_names_each_event_and_sends_no_done(
    mock: RunningMock, http: aiohttp.ClientSession
) -> None:
    body = {"model": "mock-model", "input": ASKS_WEATHER, "stream": True}
    status, headers, payload = await post(http, f"{mock.base_url}/responses", body)
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    events = payload.decode().split("\n\n")
    assert events[-1] == ""
    for number, event in enumerate(events[:-1]):
        name_line, data_line = event.split("\n")
        data = loads(data_line.removeprefix("data: "))
        assert name_line == f"event: {data['type']}"
        assert data["sequence_number"] == number
    assert "[DONE]" not in payload.decode()
    assert loads(events[-2].split("\n")[1].removeprefix("data: "))["type"] == "response.completed"


async def test_responses_bad_json_stream_has_one_unparsable_event(
    mock: RunningMock, http: aiohttp.ClientSession
) -> None:
    body = {"model": "ft-bad-json", "input": "hi", "stream": True}
    _, _, payload = await post(http, f"{mock.base_url}/v1/responses", body)
    unparsable = 0
    for event in filter(None, payload.split(b"\n\n")):
        try:
            loads(event.split(b"data: ", 1)[1])
        except JSONDecodeError:
            unparsable += 1
    assert unparsable == 1


async def test_responses_on_azure_paths(mock: RunningMock) -> None:
    v1 = openai.AsyncOpenAI(base_url=f"{mock.base_url}/openai/v1", api_key="k", max_retries=0)
    classic = openai.AsyncAzureOpenAI(
        azure_endpoint=mock.base_url, api_version="2025-03-01-preview", api_key="az", max_retries=0
    )
    try:
        assert (await v1.responses.create(model="ft-deploy", input="hi")).model == "ft-deploy"
        assert (await classic.responses.create(model="deploy", input="hi")).model == "deploy"
    finally:
        await v1.close()
        await classic.close()
    assert [(seen.path, seen.query) for seen in mock.received] == [
        ("/openai/v1/responses", {}),
        ("/openai/responses", {"api-version": "2025-03-01-preview"}),
    ]


async def test_fake_responses_exchange_steers_in_process() -> None:
    body = {"model": "mock-model", "input": "hi", "stream": True}
    failing = await fake_responses_exchange(body, {"X-Mock-Behavior": "error-503"})
    assert failing.status == 503
    assert failing.headers["retry-after"] == "1"
    cut = await fake_responses_exchange(body, {"x-mock-behavior": "stream-cut"})
    pieces: list[bytes] = []
    with pytest.raises(ConnectionResetError):
        await collect(cut.chunks, pieces)
    assert len(pieces) == PREFIX_CHUNKS
    huge = await fake_responses_exchange({**body, "stream": False}, {"x-mock-behavior": "huge-1"})
    answer = loads(b"".join([piece async for piece in huge.chunks]))
    assert len(answer["output"][0]["content"][0]["text"]) == 1024 * 1024


async def test_mock_upstream_says_where_it_listens() -> None:
    """`tuned-proxy mock-upstream` logs a listening line as `serve` does, with the port it
    took, and serves there."""
    import json
    import sys

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "mock-upstream", "--port", "0",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        async with asyncio.timeout(20):
            line = json.loads(await process.stderr.readline())
        assert (line["event"], line["level"]) == ("listening", "info")
        assert line["base_url"] == f"http://127.0.0.1:{line['port']}/v1"
        client = openai.AsyncOpenAI(base_url=line["base_url"], api_key="x", max_retries=0)
        async with client:
            answer = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
        assert answer.choices[0].message.content
    finally:
        process.terminate()
        await process.wait()
