"""Hostile upstreams: a redirect to another origin, a status that is not HTTP's, an error body
that quotes the key the proxy sent. The client gets a clean error and no credential travels."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from proxy.server import bound_port, start_site
from tests.support.configs import fault_config
from tests.support.http import MESSAGES, RESPONSES, exchange
from tests.support.keys import UPSTREAM_KEY, UPSTREAM_KEY_ENV
from tests.support.metrics import samples_of, total
from tests.support.servers import RunningProxy, StartProxy

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Server:
    url: str
    seen: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Server]]]:
    """Start an upstream that answers every request with `handler` and records its headers."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> Server:
        server = Server(url="")

        async def recorded(request: web.Request) -> web.StreamResponse:
            server.seen.append(dict(request.headers))
            await request.read()
            return await handler(request)

        app = web.Application()
        app.router.add_route("*", "/{path:.*}", recorded)
        runner = await start_site(app, "127.0.0.1", 0)
        runners.append(runner)
        server.url = f"http://127.0.0.1:{bound_port(runner)}"
        return server

    yield start
    for runner in runners:
        await runner.cleanup()


def hostile(kind: str, url: str) -> dict[str, Any]:
    """The upstream `hostile`: the server at `url`, as an upstream of `kind`, with a key."""
    base_url = url if kind == "azure" else f"{url}/v1"
    return {"kind": kind, "base_url": base_url, "api_key_env": UPSTREAM_KEY_ENV}


def config_for(kind: str, url: str) -> dict[str, Any]:
    """The route `chat` on the upstream `hostile` (the `fake` upstream is never asked)."""
    return fault_config(
        url, upstreams={"hostile": hostile(kind, url)}, routes={"chat": ("hostile", "m")}
    )


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("kind", ["azure", "openai"])
@pytest.mark.parametrize("stream", [False, True])
async def test_an_upstream_redirect_is_not_followed(
    serve: Callable[[Handler], Awaitable[Server]],
    start_proxy: StartProxy,
    status: int,
    kind: str,
    stream: bool,
) -> None:
    decoy = await serve(always(lambda: web.json_response({"ok": True})))

    async def redirect(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers={"Location": f"{decoy.url}/stolen"})

    upstream = await serve(redirect)
    proxy = await start_proxy(config_for(kind, upstream.url))
    outcome = await exchange(proxy.url, {"model": "chat", "messages": MESSAGES, "stream": stream})
    assert outcome.status == 502
    error = json.loads(outcome.body)["error"]
    assert error["code"] == "upstream_error"
    assert "redirect" in error["message"]
    assert decoy.seen == []  # the key went nowhere else
    assert len(upstream.seen) == 1
    assert total(samples_of(proxy), "tuned_proxy_upstream_errors_total", upstream="hostile") == 1


async def test_a_redirect_falls_back_to_the_next_target(
    serve: Callable[[Handler], Awaitable[Server]], start_proxy: StartProxy
) -> None:
    redirecting = await serve(
        always(lambda: web.Response(status=307, headers={"Location": "http://x/"}))
    )
    chat = {
        "variants": [{"name": "v", "upstream": "hostile", "model": "m"}],
        "fallback": [{"upstream": "local", "model": "m"}],
    }
    config = fault_config(
        redirecting.url,
        upstreams={"hostile": hostile("openai", redirecting.url), "local": {"kind": "mock"}},
        routes={"chat": chat},
    )
    proxy = await start_proxy(config)
    outcome = await exchange(proxy.url, {"model": "chat", "messages": MESSAGES})
    assert outcome.status == 200
    samples = samples_of(proxy)
    assert total(samples, "tuned_proxy_fallbacks_total", reason="invalid_response") == 1


@pytest.mark.parametrize("status", [99, 600, 999])
async def test_a_status_outside_http_is_a_502(
    start_proxy: StartProxy, raw_upstream: Callable[[bytes], Awaitable[str]], status: int
) -> None:
    url = await raw_upstream(
        f"HTTP/1.1 {status} Odd\r\nContent-Type: application/json\r\n"
        "Content-Length: 2\r\nConnection: close\r\n\r\n{}".encode()
    )
    proxy = await start_proxy(config_for("openai", url))
    outcome = await exchange(proxy.url, {"model": "chat", "messages": MESSAGES})
    assert outcome.status == 502
    assert json.loads(outcome.body)["error"]["code"] == "upstream_error"
    samples = samples_of(proxy)
    assert total(samples, "tuned_proxy_requests_total", code=str(status)) == 0
    assert total(samples, "tuned_proxy_requests_total", code="502") == 1


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[[bytes], Awaitable[str]]]:
    """Start an upstream that sends `answer` as it is to every connection (any status line)."""
    servers: list[asyncio.Server] = []

    async def start(answer: bytes) -> str:
        async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(reply, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("kind", ["azure", "openai"])
async def test_an_upstream_error_quoting_the_key_is_redacted(
    serve: Callable[[Handler], Awaitable[Server]], start_proxy: StartProxy, kind: str
) -> None:
    async def quoting(request: web.Request) -> web.StreamResponse:
        sent = request.headers.get("api-key") or request.headers["Authorization"]
        message = f"Bad request with credential {sent} (key {UPSTREAM_KEY})."
        error = {"message": message, "type": "x", "param": None, "code": "k"}
        return web.json_response({"error": error}, status=400)

    upstream = await serve(quoting)
    proxy = await start_proxy(config_for(kind, upstream.url))
    outcome = await exchange(proxy.url, {"model": "chat", "messages": MESSAGES})
    assert outcome.status == 400
    assert UPSTREAM_KEY not in outcome.body.decode()
    assert "[REDACTED]" in json.loads(outcome.body)["error"]["message"]


async def stream_quoting_the_key(request: web.Request) -> web.StreamResponse:
    """A stream whose one event is an error that quotes the upstream key."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    error = {"error": {"message": f"key {UPSTREAM_KEY} over quota", "code": "quota"}}
    await response.write(b"data: " + json.dumps(error).encode() + b"\n\n")
    await response.write_eof()
    return response


async def test_a_stream_error_event_quoting_the_key_is_redacted(
    serve: Callable[[Handler], Awaitable[Server]], start_proxy: StartProxy
) -> None:
    upstream = await serve(stream_quoting_the_key)
    proxy: RunningProxy = await start_proxy(config_for("openai", upstream.url))
    outcome = await exchange(proxy.url, {"model": "chat", "messages": MESSAGES, "stream": True})
    assert outcome.status == 200
    assert UPSTREAM_KEY not in outcome.body.decode()
    assert b"[REDACTED] over quota" in outcome.body


async def test_a_bridged_stream_error_event_quoting_the_key_is_redacted(
    serve: Callable[[Handler], Awaitable[Server]], start_proxy: StartProxy
) -> None:
    upstream = await serve(stream_quoting_the_key)
    bridged = {**hostile("openai", upstream.url), "kind": "compatible", "responses": "bridge"}
    config = fault_config(
        upstream.url, upstreams={"hostile": bridged}, routes={"chat": ("hostile", "m")}
    )
    proxy: RunningProxy = await start_proxy(config)
    body = {"model": "chat", "input": "hello", "stream": True}
    outcome = await exchange(proxy.url, body, path=RESPONSES)
    assert outcome.status == 200
    assert UPSTREAM_KEY not in outcome.body.decode()
    assert b"event: error" in outcome.body
    assert b"[REDACTED] over quota" in outcome.body


async def test_a_bridged_answer_that_is_no_completion_says_what_it_lacks(
    serve: Callable[[Handler], Awaitable[Server]], start_proxy: StartProxy
) -> None:
    upstream = await serve(always(lambda: web.json_response({"object": "x", "choices": []})))
    bridged = {**hostile("openai", upstream.url), "kind": "compatible", "responses": "bridge"}
    config = fault_config(
        upstream.url, upstreams={"hostile": bridged}, routes={"chat": ("hostile", "m")}
    )
    proxy: RunningProxy = await start_proxy(config)
    outcome = await exchange(proxy.url, {"model": "chat", "input": "hello"}, path=RESPONSES)
    assert outcome.status == 502
    message = json.loads(outcome.body)["error"]["message"]
    assert message == "The upstream answered with no choices, not a chat completion."


def always(make: Callable[[], web.StreamResponse]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return make()

    return handler
