"""Shared fixtures: the fake upstream and the proxy, each a real aiohttp server on a real port.

Only fixtures live here (pytest finds them here); what they are made of, and every helper the
test files share, is in `tests/support`.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from proxy.app import build_app
from proxy.config import load_config
from proxy.server import bound_port, start_site
from tests.support.configs import POLICIES, basic_config
from tests.support.keys import key_env
from tests.support.servers import (
    Blackhole,
    FakeUpstream,
    RunningProxy,
    StartProxy,
    start_fake_upstream,
)


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    hole = Blackhole()
    yield hole
    hole.close()


@pytest.fixture
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    upstream = await start_fake_upstream()
    assert upstream.runner is not None
    try:
        yield upstream
    finally:
        await upstream.runner.cleanup()


@pytest.fixture
async def start_proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StartProxy]:
    """Start a proxy for a config dict; the repo's policies are copied beside the config."""
    for name, value in key_env().items():
        monkeypatch.setenv(name, value)
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
