"""Servers on real loopback ports: the fake upstream (in the test's loop or on a thread of its
own), the running proxy, and ports that refuse or hang a connection."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
from aiohttp import web

from proxy.fake.server import RECEIVED, ReceivedRequest, build_mock_app
from proxy.server import bound_port, start_site
from tests.support.keys import CLIENT_KEY


def open_connections(runner: web.AppRunner | None) -> int:
    """Client connections an aiohttp server holds open now."""
    server = runner.server if runner is not None else None
    return len(server.connections) if server is not None else 0


def closed_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Blackhole:
    """A loopback port whose accept queue is full, so that a new connection hangs in `connect`
    (the kernel drops its SYNs): the way to make a connect timeout happen on 127.0.0.1."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = int(self.listener.getsockname()[1])
        self.fillers: list[socket.socket] = []
        for _ in range(3):  # more than the queue holds
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", self.port))
            self.fillers.append(filler)

    def close(self) -> None:
        for sock in [*self.fillers, self.listener]:
            sock.close()


@dataclass
class FakeUpstream:
    url: str
    app: web.Application
    runner: web.AppRunner | None = None

    @property
    def received(self) -> list[ReceivedRequest]:
        return self.app[RECEIVED]

    @property
    def open_connections(self) -> int:
        """Connections the fake upstream holds open now (the proxy's pooled ones included)."""
        return open_connections(self.runner)

    @property
    def last(self) -> ReceivedRequest:
        return self.received[-1]


async def start_fake_upstream() -> FakeUpstream:
    """The fake upstream on a port of its own; the caller cleans up its `runner`."""
    app = build_mock_app()
    runner = await start_site(app, "127.0.0.1", 0)
    return FakeUpstream(url=f"http://127.0.0.1:{bound_port(runner)}", app=app, runner=runner)


@dataclass
class RunningProxy:
    url: str
    app: web.Application
    config_path: Path
    clients: list[openai.AsyncOpenAI] = field(default_factory=list)
    runner: web.AppRunner | None = None

    @property
    def open_connections(self) -> int:
        """Client connections the proxy holds open now."""
        return open_connections(self.runner)

    def client(self, api_key: str = CLIENT_KEY, **kwargs: Any) -> openai.AsyncOpenAI:
        """An SDK client for this proxy, closed when the test ends."""
        client = openai.AsyncOpenAI(
            base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, **kwargs
        )
        self.clients.append(client)
        return client

    def track(self, client: openai.AsyncOpenAI) -> openai.AsyncOpenAI:
        self.clients.append(client)
        return client

    async def close_clients(self) -> None:
        for client in self.clients:
            await client.close()


# What the `start_proxy` fixture gives: start a proxy on a config dict.
StartProxy = Callable[[dict[str, Any]], Awaitable[RunningProxy]]


class ThreadedUpstream:
    """The fake upstream on an event loop of its own, in a thread, so that it outlives each
    test's event loop. Every answer closes its connection, so that the proxy pools none and
    its count of open file descriptors at rest is exact."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.runner: web.AppRunner | None = None
        self.url = ""
        started = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(started,), daemon=True)
        self.thread.start()
        if not started.wait(10):
            raise RuntimeError("the fake upstream did not start")

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        started.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        app = build_mock_app()
        app.on_response_prepare.append(_close_after_answer)
        self.runner = await start_site(app, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{bound_port(self.runner)}"

    @property
    def open_connections(self) -> int:
        return open_connections(self.runner)

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def _close_after_answer(request: web.Request, response: web.StreamResponse) -> None:
    # The header too: without it the proxy pools the connection, and its next request can
    # race the close (aiohttp's force_close alone does not say so to the client).
    response.headers["Connection"] = "close"
    response.force_close()
