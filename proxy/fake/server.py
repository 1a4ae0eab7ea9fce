"""The mock upstream: the fake model's answers as HTTP exchanges, and a server for them.

`fake_exchange` (chat) and `fake_responses_exchange` (the Responses API) turn a request body
into one answer (status, headers, body bytes), with the steering's delays, errors and broken
streams applied; they need no transport, so the in-process upstream kind `mock` and the HTTP
server share them. `build_mock_app` serves both as an OpenAI-compatible server (OpenAI and
Azure paths) that records every request it receives, so tests can assert what the upstream
saw.

Steering words (in the model name or the `x-mock-behavior` header) are listed on
`model.Behavior`.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from hashlib import sha256
from typing import Any

import structlog
from aiohttp import web

from proxy.errors import InvalidRequest
from proxy.fake.model import (
    PREFIX_CHUNKS,
    Behavior,
    complete,
    find_request_error,
    parse_behavior,
    stream_chunks,
)
from proxy.fake.responses import find_responses_error, respond, stream_events
from proxy.jsonutil import JSONDecodeError, dumps, loads

BEHAVIOR_HEADER = "x-mock-behavior"
MOCK_MODEL = "mock-model"
SHUTDOWN_TIMEOUT_S = 1.0
"""Grace for in-flight requests when the server stops; the mock's own requests are cancelled."""

# Rate-limit figures the mock reports; it keeps no count, so they never change.
REQUEST_LIMIT = 10_000
TOKEN_LIMIT = 1_000_000
RETRY_AFTER_S = 1

JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream; charset=utf-8"
BAD_JSON_BODY = b"<html><body>upstream hiccup: this is not JSON</body></html>"
# What `leaky-headers` adds: headers an upstream may send that must never reach a client.
LEAKY_HEADERS = {
    "set-cookie": "upstream_session=s3cr3t-session; Path=/; HttpOnly",
    "x-internal-route": "pool-7.internal.example",
    "www-authenticate": 'Bearer realm="upstream"',
    "access-control-allow-origin": "*",
}


@dataclass(frozen=True)
class FakeExchange:
    """One fake answer, ready to send: the body arrives as the steering paces it.

    For `stream-cut`, iterating `chunks` raises `ConnectionResetError` after the partial
    body (for `reset`, before any byte); a transport turns that into an abrupt close of the
    connection.
    """

    status: int
    headers: dict[str, str]
    chunks: AsyncIterator[bytes]


@dataclass(frozen=True)
class _Api:
    """What the chat and the Responses fakes do differently; the steering is the same."""

    find_error: Callable[[dict[str, Any]], InvalidRequest | None]
    answer: Callable[[dict[str, Any], Behavior], dict[str, Any]]
    events: Callable[[dict[str, Any], Behavior], list[bytes]]
    """The stream's SSE events, framed, without an end marker."""
    error_event: Callable[[dict[str, Any], int], bytes]
    """The event that ends a failing stream, from an OpenAI error object and its position."""
    end: bytes
    """What follows the last event of a whole stream."""


def _chat_events(body: dict[str, Any], behavior: Behavior) -> list[bytes]:
    return [b"data: " + dumps(chunk) + b"\n\n" for chunk in stream_chunks(body, behavior)]


def _chat_error_event(error: dict[str, Any], position: int) -> bytes:
    # As OpenAI ends a chat stream that fails once it has started: an error event, no [DONE].
    return b"data: " + dumps({"error": error}) + b"\n\n"


def _responses_events(body: dict[str, Any], behavior: Behavior) -> list[bytes]:
    return [_named_event(event) for event in stream_events(body, behavior)]


def _responses_error_event(error: dict[str, Any], position: int) -> bytes:
    # `ResponseErrorEvent`'s fields are on the event itself, not under an `error` key.
    event = {
        "type": "error",
        "sequence_number": position,
        "code": error["code"] or error["type"],
        "message": error["message"],
        "param": error["param"],
    }
    return _named_event(event)


def _named_event(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: ".encode() + dumps(event) + b"\n\n"


_CHAT = _Api(find_request_error, complete, _chat_events, _chat_error_event, b"data: [DONE]\n\n")
# The Responses API ends a stream with its last event (`response.completed`): no `[DONE]`.
_RESPONSES = _Api(find_responses_error, respond, _responses_events, _responses_error_event, b"")


async def fake_exchange(body: dict[str, Any], headers: Mapping[str, str]) -> FakeExchange:
    """The fake model's answer to a chat request, steered by its model and `x-mock-behavior`."""
    return await _steered_exchange(_CHAT, body, headers)


async def fake_responses_exchange(body: dict[str, Any], headers: Mapping[str, str]) -> FakeExchange:
    """The fake model's answer to a Responses request (`POST /v1/responses`), steered alike."""
    return await _steered_exchange(_RESPONSES, body, headers)


async def _steered_exchange(
    api: _Api, body: dict[str, Any], headers: Mapping[str, str]
) -> FakeExchange:
    started = time.monotonic()
    model = body.get("model")
    behavior = parse_behavior(model if isinstance(model, str) else "", _header(headers))
    if behavior.stall_ms:
        await asyncio.sleep(behavior.stall_ms / 1000)
    exchange = _exchange(api, body, headers, behavior, started)
    if behavior.leaky_headers:
        exchange = replace(exchange, headers={**exchange.headers, **LEAKY_HEADERS})
    return exchange


def _exchange(
    api: _Api,
    body: dict[str, Any],
    headers: Mapping[str, str],
    behavior: Behavior,
    started: float,
) -> FakeExchange:
    if behavior.reset:
        return FakeExchange(status=200, headers={}, chunks=_reset())
    if behavior.error_status is not None:
        key = _presented_key(headers)
        return _steered_error(behavior.error_status, str(body.get("model")), started, key)
    problem = api.find_error(body)
    if problem is not None:
        return _error_exchange(problem.status, problem.body(), {}, started)
    if body.get("stream") is True:
        return _stream_exchange(api, body, behavior, started)
    return _json_exchange(api, body, behavior, started)


async def _reset() -> AsyncIterator[bytes]:
    raise ConnectionResetError("mock upstream: reset")
    yield b""  # unreachable: makes this an async generator


def _presented_key(headers: Mapping[str, str]) -> str:
    """The API key a request carried (`Authorization: Bearer` or `api-key`), or ""."""
    for name, value in headers.items():
        lower = name.lower()
        if lower == "authorization" and value.lower().startswith("bearer "):
            return value[7:].strip()
        if lower == "api-key":
            return value.strip()
    return ""


def _header(headers: Mapping[str, str]) -> str | None:
    # A plain dict is as welcome as aiohttp's case-insensitive headers.
    for name, value in headers.items():
        if name.lower() == BEHAVIOR_HEADER:
            return value
    return None


def _json_exchange(
    api: _Api, body: dict[str, Any], behavior: Behavior, started: float
) -> FakeExchange:
    payload = BAD_JSON_BODY if behavior.bad_json else dumps(api.answer(body, behavior))
    if behavior.malformed_json:
        payload = payload[: len(payload) // 2]
    return FakeExchange(
        status=200,
        headers=_headers(JSON_TYPE, started),
        chunks=_paced_body(payload, behavior),
    )


async def _paced_body(payload: bytes, behavior: Behavior) -> AsyncIterator[bytes]:
    await _pause(behavior.delay_ms)
    half = len(payload) // 2
    if behavior.stream_cut:
        yield payload[:half]
        raise ConnectionResetError("mock upstream: stream-cut")
    if behavior.stream_stall_ms:
        yield payload[:half]
        await _pause(behavior.stream_stall_ms)
        yield payload[half:]
        return
    yield payload


def _stream_exchange(
    api: _Api, body: dict[str, Any], behavior: Behavior, started: float
) -> FakeExchange:
    events = api.events(body, behavior)
    if behavior.bad_json:
        events.insert(1, b"data: {this is not json\n\n")
    if behavior.malformed_json:
        events.insert(1, events[1][: len(events[1]) // 2] + b"\n\n")
    if behavior.stream_error:
        error_type, code, message = _error_wording(500, str(body.get("model")))
        error = {"message": message, "type": error_type, "param": None, "code": code}
        events[PREFIX_CHUNKS:] = [api.error_event(error, PREFIX_CHUNKS)]
    elif api.end:
        events.append(api.end)
    headers = {**_headers(SSE_TYPE, started), "cache-control": "no-cache"}
    return FakeExchange(status=200, headers=headers, chunks=_paced_events(events, behavior))


async def _paced_events(events: list[bytes], behavior: Behavior) -> AsyncIterator[bytes]:
    # A broken stream breaks before its last event (`[DONE]`, `response.completed`), however
    # short the answer is.
    break_at = min(PREFIX_CHUNKS, len(events) - 1)
    for position, event in enumerate(events):
        if position == break_at:
            if behavior.stream_cut:
                raise ConnectionResetError("mock upstream: stream-cut")
            await _pause(behavior.stream_stall_ms)
        await _pause(behavior.delay_ms)
        yield event
    await _pause(behavior.linger_ms)


async def _pause(milliseconds: int) -> None:
    if milliseconds > 0:
        await asyncio.sleep(milliseconds / 1000)


def _steered_error(status: int, model: str, started: float, key: str = "") -> FakeExchange:
    error_type, code, message = _error_wording(status, model, key)
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    extra: dict[str, str] = {}
    if status == 429:
        extra = {
            "retry-after": str(RETRY_AFTER_S),
            "retry-after-ms": str(RETRY_AFTER_S * 1000),
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": f"{RETRY_AFTER_S}s",
        }
    elif status == 503:
        extra = {"retry-after": str(RETRY_AFTER_S)}
    return _error_exchange(status, body, extra, started)


def _error_wording(status: int, model: str, key: str = "") -> tuple[str, str | None, str]:
    """(type, code, message) of the error OpenAI gives with this status.

    OpenAI's 401 quotes the start and the end of the key it refused, and so does the mock's.
    """
    match status:
        case 401:
            shown = f": {key[:3]}{'*' * 8}{key[-4:]}" if len(key) > 8 else ""
            return "invalid_request_error", "invalid_api_key", f"Incorrect API key provided{shown}."
        case 404:
            return (
                "invalid_request_error",
                "model_not_found",
                f"The model `{model}` does not exist or you do not have access to it.",
            )
        case 429:
            return (
                "requests",
                "rate_limit_exceeded",
                f"Rate limit reached for {model} on requests per min (RPM): "
                f"Limit {REQUEST_LIMIT}. Please try again in {RETRY_AFTER_S}s.",
            )
        case 503:
            return (
                "server_error",
                "overloaded",
                "The engine is currently overloaded, please try again later.",
            )
        case _ if status >= 500:
            return (
                "server_error",
                None,
                "The server had an error while processing your request. Sorry about that!",
            )
        case _:
            return "invalid_request_error", None, f"Mock error {status} (steered)."


def _error_exchange(
    status: int, body: dict[str, Any], extra: dict[str, str], started: float
) -> FakeExchange:
    headers = {**_headers(JSON_TYPE, started), **extra}
    return FakeExchange(status=status, headers=headers, chunks=_paced_body(dumps(body), Behavior()))


def _headers(content_type: str, started: float) -> dict[str, str]:
    """The headers OpenAI sends with every answer: request id, rate limits, timing."""
    return {
        "content-type": content_type,
        "x-request-id": f"req_mock_{secrets.token_hex(16)}",
        "openai-processing-ms": str(round((time.monotonic() - started) * 1000)),
        "openai-version": "2020-10-01",
        "x-ratelimit-limit-requests": str(REQUEST_LIMIT),
        "x-ratelimit-remaining-requests": str(REQUEST_LIMIT - 1),
        "x-ratelimit-reset-requests": "6ms",
        "x-ratelimit-limit-tokens": str(TOKEN_LIMIT),
        "x-ratelimit-remaining-tokens": str(TOKEN_LIMIT - 1),
        "x-ratelimit-reset-tokens": "0s",
    }


# ---------------------------------------------------------------------------
# The HTTP server


@dataclass(frozen=True)
class ReceivedRequest:
    """A request as the mock received it; `body` is the parsed JSON, or the text if invalid."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Header names lowercased."""
    body: Any


RECEIVED = web.AppKey("received", list[ReceivedRequest])
_IN_FLIGHT = web.AppKey("in_flight", set[asyncio.Task[Any]])

CHAT_PATHS = (
    "/v1/chat/completions",
    "/chat/completions",
    "/openai/v1/chat/completions",
    "/openai/deployments/{deployment}/chat/completions",
    "/openai/v1/deployments/{deployment}/chat/completions",
)
# Azure's v1 API takes the model in the body; `/openai/responses` is where `AzureOpenAI`
# (the classic, `api-version` client) sends Responses requests.
RESPONSES_PATHS = ("/v1/responses", "/responses", "/openai/v1/responses", "/openai/responses")
MODEL_PATHS = ("/v1/models", "/models", "/openai/v1/models")


def build_mock_app() -> web.Application:
    """The mock upstream as an aiohttp app; `app[RECEIVED]` lists every request, oldest first.

    Stopping the app cancels the requests still in flight (a `stall` waits 60 s), so a test
    teardown never waits on them.
    """
    app = web.Application()
    app[RECEIVED] = []
    app[_IN_FLIGHT] = set()
    for path in CHAT_PATHS:
        app.router.add_post(path, _chat_completions)
    for path in RESPONSES_PATHS:
        app.router.add_post(path, _responses)
    for path in MODEL_PATHS:
        app.router.add_get(path, _models)
    app.router.add_post("/tokenize", _tokenize)
    app.on_shutdown.append(_cancel_in_flight)
    return app


@dataclass(frozen=True)
class RunningMock:
    """A mock upstream listening on a real port."""

    base_url: str
    """`http://HOST:PORT`, without a path: add `/v1` for the OpenAI SDK."""
    app: web.Application

    @property
    def received(self) -> list[ReceivedRequest]:
        return self.app[RECEIVED]


@asynccontextmanager
async def serve_mock(host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[RunningMock]:
    """Run the mock upstream for the duration of the block; port 0 picks a free port."""
    app = build_mock_app()
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        yield RunningMock(base_url=f"http://{_url_host(bound_host)}:{bound_port}", app=app)
    finally:
        await runner.cleanup()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def run_mock_server(host: str, port: int) -> None:
    """Serve the mock upstream until cancelled (`tuned-proxy mock-upstream`), saying where, as
    `serve` does, so that a script can wait for the line and read the port."""
    async with serve_mock(host, port) as running:
        bound = int(running.base_url.rsplit(":", 1)[1])
        structlog.get_logger("tuned_proxy.mock").info(
            "listening",
            host=host,
            port=bound,
            base_url=f"{running.base_url}/v1",
            serves=["POST /v1/chat/completions", "POST /v1/responses", "POST /tokenize"],
        )
        await asyncio.Event().wait()


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    return await _serve(request, fake_exchange)


async def _responses(request: web.Request) -> web.StreamResponse:
    return await _serve(request, fake_responses_exchange)


async def _serve(
    request: web.Request,
    exchange_for: Callable[[dict[str, Any], Mapping[str, str]], Awaitable[FakeExchange]],
) -> web.StreamResponse:
    """Record the request, then send the fake's answer (a 400 for a body that is no JSON object)."""
    raw = await request.read()
    try:
        body = loads(raw)
    except JSONDecodeError:
        _record(request, raw.decode(errors="replace"))
        return _invalid(
            "We could not parse the JSON body of your request. The OpenAI API expects a "
            "JSON payload, but what was sent was not valid JSON."
        )
    _record(request, body)
    if not isinstance(body, dict):
        return _invalid("The request body must be a JSON object.")
    deployment = request.match_info.get("deployment")
    if deployment is not None:
        # Azure's classic paths name the deployment in the path, which beats the body's model.
        body = {**body, "model": deployment}
    with _tracked(request.app):
        exchange = await exchange_for(body, request.headers)
        return await _send(request, exchange)


async def _tokenize(request: web.Request) -> web.Response:
    """`POST /tokenize` as vLLM and SGLang (`{"model", "prompt"}`) and llama.cpp
    (`{"content"}`) serve it, with the fake model's toy tokenizer (`fake_token_ids`)."""
    try:
        body = loads(await request.read())
    except JSONDecodeError:
        body = None
    _record(request, body)
    text = body.get("prompt", body.get("content")) if isinstance(body, dict) else None
    if not isinstance(text, str):
        return _invalid("Expected a string `prompt` (or `content`) to tokenize.")
    tokens = fake_token_ids(text)
    return web.Response(
        body=dumps({"tokens": tokens, "count": len(tokens)}), content_type=JSON_TYPE
    )


def fake_token_ids(text: str) -> list[int]:
    """The fake model's tokenizer: one token per whitespace-separated piece, its id a number
    the piece always gets (so a test can tell one token from several, and know the id)."""
    return [int.from_bytes(sha256(piece.encode()).digest()[:3], "big") for piece in text.split()]


def _record(request: web.Request, body: Any) -> None:
    request.app[RECEIVED].append(
        ReceivedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={name.lower(): value for name, value in request.headers.items()},
            body=body,
        )
    )


def _invalid(message: str) -> web.Response:
    error = InvalidRequest(message)
    return web.Response(status=error.status, body=dumps(error.body()), content_type=JSON_TYPE)


@contextmanager
def _tracked(app: web.Application) -> Iterator[None]:
    task = asyncio.current_task()
    if task is None:  # not reachable from an aiohttp handler; keeps the types honest
        yield
        return
    app[_IN_FLIGHT].add(task)
    try:
        yield
    finally:
        app[_IN_FLIGHT].discard(task)


async def _cancel_in_flight(app: web.Application) -> None:
    for task in app[_IN_FLIGHT]:
        task.cancel()


async def _send(request: web.Request, exchange: FakeExchange) -> web.StreamResponse:
    """Write the exchange; a `ConnectionResetError` from its body aborts the connection."""
    response = web.StreamResponse(status=exchange.status, headers=exchange.headers)
    try:
        # The status line leaves with the first piece, as from a server that answers when ready.
        first = await anext(exchange.chunks, b"")
        await response.prepare(request)
        await response.write(first)
        async for piece in exchange.chunks:
            await response.write(piece)
    except ConnectionResetError:
        _abort(request)
        return response
    await response.write_eof()
    return response


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


async def _models(request: web.Request) -> web.Response:
    listing = {
        "object": "list",
        "data": [{"id": MOCK_MODEL, "object": "model", "created": 0, "owned_by": "tuned-proxy"}],
    }
    return web.Response(body=dumps(listing), content_type=JSON_TYPE)
