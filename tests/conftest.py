"""Shared fixtures: the fake upstream and the proxy, each a real aiohttp server on a real port."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from aiohttp import web

from proxy.app import build_app
from proxy.config import load_config
from proxy.fake.server import RECEIVED, ReceivedRequest, build_mock_app
from proxy.server import bound_port, start_site

REPO = Path(__file__).resolve().parent.parent
POLICIES = REPO / "policies"
CLIENT_KEY = "sk-client-test-key"
UPSTREAM_KEY = "sk-upstream-secret-q7Zx9T"  # its tail is what a masked key shows


def closed_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    """Wait until `check()` holds, polling; fail naming `what` after `timeout_s`.

    For state that settles after the fact (a socket closed by the peer, a task that ends).
    The timeout only guards against a hang: nothing measures how long it took.
    """
    try:
        async with asyncio.timeout(timeout_s):
            # Polled: sockets and other tasks change this state, and none of them signals it.
            while not check():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"never true within {timeout_s} s: {what}") from None


def open_connections(runner: web.AppRunner | None) -> int:
    """Client connections an aiohttp server holds open now."""
    server = runner.server if runner is not None else None
    return len(server.connections) if server is not None else 0


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


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    hole = Blackhole()
    yield hole
    hole.close()


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


@pytest.fixture
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    app = build_mock_app()
    runner = await start_site(app, "127.0.0.1", 0)
    try:
        yield FakeUpstream(url=f"http://127.0.0.1:{bound_port(runner)}", app=app, runner=runner)
    finally:
        await runner.cleanup()


def basic_config(upstream_url: str, **route: Any) -> dict[str, Any]:
    """One route `chat` with one variant on the fake upstream, as a compatible server."""
    return {
        "client_keys_env": "TUNED_PROXY_TEST_KEYS",
        "policies_dir": "policies",
        "upstreams": {
            "fake": {
                "kind": "compatible",
                "base_url": f"{upstream_url}/v1",
                "api_key_env": "TUNED_PROXY_TEST_UPSTREAM_KEY",
            }
        },
        "routes": {
            "chat": {
                "variants": [{"name": "main", "upstream": "fake", "model": "ft-model"}],
                **route,
            }
        },
    }


def fake_variant(
    name: str, model: str, weight: float = 1, policy: str | None = None
) -> dict[str, Any]:
    """A variant of a `basic_config` route on the fake upstream."""
    spec: dict[str, Any] = {"name": name, "upstream": "fake", "model": model, "weight": weight}
    if policy:
        spec["policy"] = policy
    return spec


StartProxy = Callable[[dict[str, Any]], Awaitable[RunningProxy]]


@pytest.fixture
async def start_proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StartProxy]:
    """Start a proxy for a config dict; the repo's policies are copied beside the config."""
    monkeypatch.setenv("TUNED_PROXY_TEST_KEYS", CLIENT_KEY)
    monkeypatch.setenv("TUNED_PROXY_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    shutil.copytree(POLICIES, tmp_path / "policies")
    runners: list[web.AppRunner] = []
    proxies: list[RunningProxy] = []

    async def start(config: dict[str, Any]) -> RunningProxy:
        path = tmp_path / f"config-{len(runners)}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        app = build_app(load_config(path))
        runner = await start_site(app, "127.0.0.1", 0)
        runners.append(runner)
        running = RunningProxy(
            url=f"http://127.0.0.1:{bound_port(runner)}", app=app, config_path=path, runner=runner
        )
        proxies.append(running)
        return running

    yield start
    for running in proxies:
        await running.close_clients()
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def proxy(fake_upstream: FakeUpstream, start_proxy: StartProxy) -> RunningProxy:
    """The proxy with one route `chat` → the fake upstream, model `ft-model`, no policy."""
    return await start_proxy(basic_config(fake_upstream.url))
