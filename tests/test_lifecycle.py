"""The real process with real signals: reload on SIGHUP and on file change, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.support.configs import mock_config
from tests.support.http import MESSAGES
from tests.support.processes import read_until, serving

pytestmark = pytest.mark.slow


async def test_sighup_reloads_and_a_broken_config_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "tuned-proxy.yaml"
    path.write_text(yaml.safe_dump(mock_config("model-one")))
    async with serving(path) as server, aiohttp.ClientSession() as session:
        assert await server.answered_model(session) == "model-one"

        path.write_text(yaml.safe_dump(mock_config("model-two")))
        server.proc.send_signal(signal.SIGHUP)
        await read_until(server.proc, server.lines, "config reloaded")
        assert await server.answered_model(session) == "model-two"

        broken = mock_config("model-three")
        broken["routes"]["chat"]["variants"][0]["upstream"] = "nowhere"
        path.write_text(yaml.safe_dump(broken))
        server.proc.send_signal(signal.SIGHUP)
        refused = await read_until(
            server.proc, server.lines, "config reload refused; the previous config keeps serving"
        )
        assert any("unknown upstream 'nowhere'" in error for error in refused["errors"])
        assert await server.answered_model(session) == "model-two"
        async with session.get(f"{server.url}/metrics") as response:
            metrics = await response.text()
        assert 'tuned_proxy_config_reloads_total{result="ok"} 1.0' in metrics
        assert 'tuned_proxy_config_reloads_total{result="error"} 1.0' in metrics


async def test_watch_reloads_on_file_change(tmp_path: Path) -> None:
    path = tmp_path / "tuned-proxy.yaml"
    path.write_text(yaml.safe_dump(mock_config("model-one")))
    async with serving(path, "--watch") as server, aiohttp.ClientSession() as session:
        assert await server.answered_model(session) == "model-one"
        path.write_text(yaml.safe_dump(mock_config("model-changed")))
        await read_until(server.proc, server.lines, "config reloaded")
        assert await server.answered_model(session) == "model-changed"


async def until_refused(url: str) -> None:
    """New connections are refused once the listener is closed (polled: no event to wait on)."""
    async with asyncio.timeout(10), aiohttp.ClientSession() as fresh:
        while True:
            try:
                async with fresh.get(url):
                    pass
            except aiohttp.ClientConnectionError:
                return
            await asyncio.sleep(0.05)


async def test_sigterm_lets_a_stream_in_flight_finish_then_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "tuned-proxy.yaml"
    path.write_text(yaml.safe_dump(mock_config("ft-slow-150")))
    async with serving(path, "--drain-timeout", "20") as server, aiohttp.ClientSession() as session:
        async with session.post(
            f"{server.url}/v1/chat/completions",
            json={"model": "chat", "messages": MESSAGES, "stream": True},
        ) as response:
            assert response.status == 200
            first = await response.content.readuntil(b"\n\n")
            assert first.startswith(b"data: ")
            server.proc.send_signal(signal.SIGTERM)
            await read_until(server.proc, server.lines, "draining")
            await until_refused(f"{server.url}/healthz")
            rest = await response.content.read()
        assert rest.endswith(b"data: [DONE]\n\n")
        async with asyncio.timeout(20):
            assert await server.proc.wait() == 0


async def test_a_request_in_flight_finishes_on_the_config_it_started_with(tmp_path: Path) -> None:
    path = tmp_path / "tuned-proxy.yaml"
    path.write_text(yaml.safe_dump(mock_config("ft-slow-100")))
    async with serving(path) as server, aiohttp.ClientSession() as session:
        async with session.post(
            f"{server.url}/v1/chat/completions",
            json={"model": "chat", "messages": MESSAGES, "stream": True},
        ) as response:
            first = await response.content.readuntil(b"\n\n")
            path.write_text(yaml.safe_dump(mock_config("model-new")))
            server.proc.send_signal(signal.SIGHUP)
            await read_until(server.proc, server.lines, "config reloaded")
            assert await server.answered_model(session) == "model-new"
            rest = await response.content.read()
        events = [
            json.loads(e[6:]) for e in (first + rest).split(b"\n\n") if e.startswith(b"data: {")
        ]
        assert {event["model"] for event in events} == {"ft-slow-100"}
        assert rest.endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize(
    ("choice", "loop"), [(None, "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")]
)
async def test_serve_runs_on_the_configured_event_loop(
    tmp_path: Path, choice: str | None, loop: str
) -> None:
    settings = mock_config("model-one")
    if choice is not None:
        settings["server"] = {"event_loop": choice}
    path = tmp_path / "tuned-proxy.yaml"
    path.write_text(yaml.safe_dump(settings))
    async with serving(path) as server, aiohttp.ClientSession() as session:
        listening = next(line for line in server.lines if line["event"] == "listening")
        assert listening["event_loop"] == loop
        assert await server.answered_model(session) == "model-one"
        server.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await server.proc.wait() == 0


def test_uvloop_asked_for_but_not_installed_is_a_start_up_error(tmp_path: Path) -> None:
    path = tmp_path / "tuned-proxy.yaml"
    path.write_text(yaml.safe_dump({**mock_config("m"), "server": {"event_loop": "uvloop"}}))
    # A Python where `import uvloop` fails, as on a platform uvloop does not support.
    script = (
        "import sys; sys.modules['uvloop'] = None; from proxy.cli import main; "
        f"sys.exit(main(['serve', '-c', {str(path)!r}, '--port', '0']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "server.event_loop is uvloop, but uvloop is not installed" in done.stderr


# ----------------------------------------------------------------------------- auth on reload

KEY = "sk-lifecycle-key"


def keyed(model: str, keys_env: str) -> dict[str, Any]:
    return {**mock_config(model), "client_keys_env": keys_env}


async def status_of(session: aiohttp.ClientSession, url: str, key: str | None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": "chat", "messages": MESSAGES}
    async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as response:
        return response.status


async def test_a_reload_cannot_drop_auth_on_an_open_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started on 0.0.0.0 with keys; a reload to a keys variable that is not set is refused
    as start would have refused it, logged at error and counted."""
    monkeypatch.setenv("LIFECYCLE_KEYS", KEY)
    monkeypatch.delenv("LIFECYCLE_UNSET", raising=False)
    path = tmp_path / "tuned-proxy.yaml"
    path.write_text(yaml.safe_dump(keyed("m", "LIFECYCLE_KEYS")))
    async with (
        serving(path, "--host", "0.0.0.0") as server,
        aiohttp.ClientSession() as session,
    ):
        assert await status_of(session, server.url, None) == 401
        path.write_text(yaml.safe_dump(keyed("m", "LIFECYCLE_UNSET")))
        server.proc.send_signal(signal.SIGHUP)
        refused = await read_until(
            server.proc, server.lines, "config reload refused; the previous config keeps serving"
        )
        assert refused["level"] == "error"
        assert "refusing to listen on 0.0.0.0 without client keys" in refused["errors"][0]
        assert "LIFECYCLE_UNSET is not set" in refused["errors"][0]
        assert await status_of(session, server.url, None) == 401
        assert await status_of(session, server.url, KEY) == 200
        async with session.get(f"{server.url}/metrics") as response:
            metrics = await response.text()
        assert 'tuned_proxy_config_reloads_total{result="error"} 1.0' in metrics


async def test_a_reload_without_keys_is_taken_where_start_allows_it_and_warned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --allow-unauthenticated the same reload is taken, and the log says auth is off."""
    monkeypatch.setenv("LIFECYCLE_KEYS", KEY)
    monkeypatch.setenv("LIFECYCLE_EMPTY", " , ,")
    path = tmp_path / "tuned-proxy.yaml"
    path.write_text(yaml.safe_dump(keyed("m", "LIFECYCLE_KEYS")))
    async with (
        serving(path, "--host", "0.0.0.0", "--allow-unauthenticated") as server,
        aiohttp.ClientSession() as session,
    ):
        path.write_text(yaml.safe_dump(keyed("m", "LIFECYCLE_EMPTY")))
        server.proc.send_signal(signal.SIGHUP)
        await read_until(server.proc, server.lines, "config reloaded")
        # Every line up to the reload, the start-up warning's place (just after "listening")
        # included: started with keys, the process warned of nothing.
        assert [line for line in server.lines if line["level"] == "warning"] == []
        warning = await read_until(
            server.proc,
            server.lines,
            "serving without client auth: environment variable LIFECYCLE_EMPTY holds no keys",
        )
        assert warning["level"] == "warning"
        assert await status_of(session, server.url, None) == 200


@pytest.mark.parametrize(
    ("keys_env", "value", "said"),
    [
        (None, None, "the config sets no client_keys_env"),
        ("LIFECYCLE_UNSET", None, "environment variable LIFECYCLE_UNSET is not set"),
        ("LIFECYCLE_EMPTY", " , ,", "environment variable LIFECYCLE_EMPTY holds no keys"),
    ],
)
async def test_serve_without_client_auth_says_so(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    keys_env: str | None,
    value: str | None,
    said: str,
) -> None:
    settings = mock_config("m") if keys_env is None else keyed("m", keys_env)
    if keys_env is not None and value is None:
        monkeypatch.delenv(keys_env, raising=False)
    elif keys_env is not None and value is not None:
        monkeypatch.setenv(keys_env, value)
    path = tmp_path / "tuned-proxy.yaml"
    path.write_text(yaml.safe_dump(settings))
    async with serving(path) as server:
        warning = await read_until(
            server.proc, server.lines, f"serving without client auth: {said}"
        )
        assert warning["level"] == "warning"


# ----------------------------------------------------------------------------- metrics listener


async def test_metrics_on_a_listener_of_their_own(tmp_path: Path) -> None:
    settings = {**mock_config("m"), "server": {"metrics_port": 0}}
    path = tmp_path / "tuned-proxy.yaml"
    path.write_text(yaml.safe_dump(settings))
    async with serving(path) as server, aiohttp.ClientSession() as session:
        listening = next(line for line in server.lines if line["event"] == "listening")
        metrics_url = f"http://127.0.0.1:{listening['metrics_port']}"
        assert listening["metrics_port"] != listening["port"]
        assert await server.answered_model(session) == "m"
        async with asyncio.timeout(10):
            while True:  # the request is counted just after its answer is sent
                async with session.get(f"{metrics_url}/metrics") as response:
                    assert response.status == 200
                    text = await response.text()
                    if 'code="200",route="chat",variant="v"} 1.0' in text:
                        break
                await asyncio.sleep(0.05)
        async with session.get(f"{server.url}/metrics") as response:
            assert response.status == 404  # not on the main port
            assert (await response.json())["error"]["code"] == "not_found"
        async with session.get(f"{metrics_url}/v1/models") as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "not_found"
