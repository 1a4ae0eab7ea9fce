"""The per-request log line, read from a real process: JSON, the fields that matter, and never
message content, tool arguments or a credential."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.support.configs import refusing_upstream
from tests.support.processes import read_until, serving

pytestmark = pytest.mark.slow
CLIENT = "sk-client-log-test-1234"
UPSTREAM = "sk-upstream-log-test-5678"
SECRET_TEXT = "TOP-SECRET-CONTENT-42"
TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Look up an order by its id",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    },
}


async def test_log_lines_carry_fields_and_no_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {
        "client_keys_env": "LOG_TEST_CLIENT_KEYS",
        "upstreams": {
            "local": {"kind": "mock"},
            "down": {**refusing_upstream(), "api_key_env": "LOG_TEST_UPSTREAM_KEY"},
        },
        "routes": {
            "chat": {"variants": [{"name": "v", "upstream": "local", "model": "m"}]},
            "down": {"variants": [{"name": "v", "upstream": "down", "model": "m"}]},
        },
    }
    path = tmp_path / "tuned-proxy.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("LOG_TEST_CLIENT_KEYS", CLIENT)
    monkeypatch.setenv("LOG_TEST_UPSTREAM_KEY", UPSTREAM)
    async with serving(path) as server, aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {CLIENT}", "x-request-id": "log-test-1"}
        messages = [{"role": "user", "content": f"look up order {SECRET_TEXT}"}]
        body = {"model": "chat", "messages": messages, "tools": [TOOL]}
        async with session.post(
            f"{server.url}/v1/chat/completions", json=body, headers=headers
        ) as r:
            answer = await r.json()
        assert (
            SECRET_TEXT in answer["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
        )
        line = await read_until(server.proc, server.lines, "request")
        down = {**body, "model": "down"}
        async with session.post(
            f"{server.url}/v1/chat/completions", json=down, headers=headers
        ) as r:
            assert r.status == 502
            error_body = await r.text()
        failed = await read_until(server.proc, server.lines, "request")

    assert line["request_id"] == "log-test-1"
    assert (line["route"], line["variant"], line["upstream"], line["status"]) == (
        "chat",
        "v",
        "local",
        200,
    )
    assert line["tool_calls"] == ["lookup_order"]
    assert line["tokens"]["prompt_tokens"] > 0
    assert {"duration_ms", "upstream_ms", "overhead_ms"} <= set(line)
    assert failed["status"] == 502
    assert failed["attempts"][0]["reason"] == "connect"
    everything = json.dumps(server.lines) + error_body
    for secret in (SECRET_TEXT, CLIENT, UPSTREAM):
        assert secret not in everything


async def test_client_strings_in_the_log_line_are_cut(tmp_path: Path) -> None:
    """A 1 MB model name and a 100 KB function name (the fake model calls what it is offered)
    come back cut to a few hundred characters in the error and in the log line."""
    config = {
        "upstreams": {"local": {"kind": "mock"}},
        "routes": {"chat": {"variants": [{"name": "v", "upstream": "local", "model": "m"}]}},
    }
    path = tmp_path / "tuned-proxy.yaml"
    path.write_text(yaml.safe_dump(config))
    long_name = "f" * 100_000
    tool = {"type": "function", "function": {"name": long_name, "parameters": {}}}
    async with serving(path) as server, aiohttp.ClientSession() as session:
        unknown = {"model": "m" * 1_000_000, "messages": [{"role": "user", "content": "hi"}]}
        async with session.post(f"{server.url}/v1/chat/completions", json=unknown) as r:
            assert r.status == 404
            assert len(await r.read()) < 1000
        refused = await read_until(server.proc, server.lines, "request")
        called = {
            "model": "chat",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [tool],
            "tool_choice": "required",
        }
        async with session.post(f"{server.url}/v1/chat/completions", json=called) as r:
            assert r.status == 200
            answer = await r.json()
        assert answer["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == long_name
        served = await read_until(server.proc, server.lines, "request")
    assert refused["status"] == 404
    assert len(json.dumps(refused)) < 2000
    assert "more characters" in refused["error"]
    assert len(json.dumps(served)) < 2000
    assert served["tool_calls"][0].startswith("f" * 256)
    assert served["tool_calls"][0].endswith(f"({len(long_name) - 256} more characters)")


async def test_the_shadow_line_says_what_its_rewrite_did(tmp_path: Path) -> None:
    """A shadow on a server that lacks a lever (here a named tool_choice, on llama.cpp) logs the
    emulation it needed, as the request line logs the variant's."""
    config = {
        "upstreams": {
            "local": {"kind": "mock"},
            "llama": {"kind": "mock", "server": "llama.cpp"},
        },
        "routes": {
            "chat": {
                "variants": [{"name": "v", "upstream": "local", "model": "m"}],
                "shadow": {"upstream": "llama", "model": "next", "sample": 1.0},
            }
        },
    }
    path = tmp_path / "tuned-proxy.yaml"
    path.write_text(yaml.safe_dump(config))
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": "look up order ORD-104233"}],
        "tools": [TOOL],
        "tool_choice": {"type": "function", "function": {"name": "lookup_order"}},
    }
    async with serving(path) as server, aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}/v1/chat/completions", json=body) as r:
            assert r.status == 200
        shadow = await read_until(server.proc, server.lines, "shadow")
        # The two lines come in either order.
        read = [seen for seen in server.lines if seen.get("event") == "request"]
        line = read[0] if read else await read_until(server.proc, server.lines, "request")
    assert shadow["outcome"] == "ok"
    assert shadow["rewrite"] == ["tool_choice_emulated"]
    assert "tool_choice_emulated" not in line.get("rewrite", [])  # the variant's server honours it
