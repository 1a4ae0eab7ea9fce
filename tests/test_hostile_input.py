"""A hostile or careless client: bytes the proxy must refuse with OpenAI's error, never a 500.

Each case is a finding of a hostile-client probe: deep JSON, credentials that are not UTF-8
or sent twice, a body that claims a compression it does not have, an `Expect` header, client
strings long enough to flood a log line, and the proxy's own `Server` header.
"""

from __future__ import annotations

import gzip
import io
import json
from typing import Any

import aiohttp
import pytest

from tests.support.configs import basic_config
from tests.support.http import CHAT, MESSAGES, raw_exchange, request_head
from tests.support.keys import AUTH, CLIENT_KEY
from tests.support.metrics import samples_of, total
from tests.support.servers import FakeUpstream, RunningProxy, StartProxy


@pytest.fixture
async def proxy(fake_upstream: FakeUpstream, start_proxy: StartProxy) -> RunningProxy:
    config = basic_config(fake_upstream.url)
    for name, policy in (("full", "support-full"), ("slim", "support-slim")):
        config["routes"][name] = {
            "variants": [{"name": "v", "upstream": "fake", "model": "m", "policy": policy}]
        }
    config["upstreams"]["local"] = {"kind": "mock"}
    config["routes"]["local"] = {"variants": [{"name": "v", "upstream": "local", "model": "m"}]}
    return await start_proxy(config)


def nested(depth: int) -> Any:
    value: Any = "deep"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


# ----------------------------------------------------------------------------- deep JSON

DEEP_PLACES = {
    "metadata": lambda deep: {"metadata": deep},
    "content": lambda deep: {"messages": [{"role": "user", "content": [deep]}]},
    "tool parameters": lambda deep: {
        "tools": [
            {
                "type": "function",
                "function": {"name": "lookup_order", "parameters": {"x": deep}},
            }
        ]
    },
    "response_format": lambda deep: {"response_format": deep},
}


@pytest.mark.parametrize("route", ["chat", "full", "slim", "local"])
@pytest.mark.parametrize("place", sorted(DEEP_PLACES))
@pytest.mark.parametrize("depth", [300, 900])
async def test_json_nested_deeper_than_can_be_written_is_a_400(
    proxy: RunningProxy, fake_upstream: FakeUpstream, route: str, place: str, depth: int
) -> None:
    """orjson reads ~1000 levels and writes 254: in between used to be a 500 TypeError."""
    body = {"model": route, "messages": MESSAGES, **DEEP_PLACES[place](nested(depth))}
    for stream in (False, True):
        body["stream"] = stream
        status, raw = await post(proxy.url, json.dumps(body).encode())
        assert status == 400, raw[:300]
        error = json.loads(raw)["error"]
        assert error["code"] == "invalid_json"
        assert "nested too deeply" in error["message"]
    assert fake_upstream.received == []
    assert total(samples_of(proxy), "tuned_proxy_requests_total", code="500") == 0


async def post(
    url: str, raw: bytes, headers: dict[str, str] | None = None, path: str = CHAT
) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}{path}", data=io.BytesIO(raw), headers={**AUTH, **(headers or {})}
        ) as response,
    ):
        return response.status, await response.read()


# ----------------------------------------------------------------------------- credentials


@pytest.mark.parametrize(
    "header",
    [b"Authorization: Bearer sk-\xff\xfe-key", b"api-key: \xc3\x28\xa0\xa1", b"api-key: \x80"],
)
async def test_credentials_that_are_not_utf8_are_a_401(
    proxy: RunningProxy, fake_upstream: FakeUpstream, header: bytes
) -> None:
    body = json.dumps({"model": "chat", "messages": MESSAGES}).encode()
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: p\r\n"
        + header
        + b"\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    answer = await raw_exchange(proxy.url, head + body)
    assert answer.status == 401
    assert answer.error()["code"] == "invalid_api_key"
    assert fake_upstream.received == []


@pytest.mark.parametrize(
    "credentials",
    [
        [("Authorization", f"Bearer {CLIENT_KEY}"), ("Authorization", "Bearer sk-other")],
        [("Authorization", "Bearer sk-other"), ("Authorization", f"Bearer {CLIENT_KEY}")],
        [("api-key", CLIENT_KEY), ("api-key", CLIENT_KEY)],
    ],
)
async def test_a_credential_header_sent_twice_is_refused(
    proxy: RunningProxy, fake_upstream: FakeUpstream, credentials: list[tuple[str, str]]
) -> None:
    body = json.dumps({"model": "chat", "messages": MESSAGES}).encode()
    lines = "".join(f"{name}: {value}\r\n" for name, value in credentials)
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: p\r\n{lines}Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    answer = await raw_exchange(proxy.url, head + body)
    assert answer.status == 401
    assert "more than once" in answer.error()["message"]
    assert fake_upstream.received == []


# ----------------------------------------------------------------------------- encodings


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
async def test_a_body_that_is_not_in_its_declared_encoding_is_a_400(
    proxy: RunningProxy, fake_upstream: FakeUpstream, encoding: str
) -> None:
    raw = json.dumps({"model": "chat", "messages": MESSAGES}).encode()
    status, answer = await post(proxy.url, raw, {"Content-Encoding": encoding})
    assert status == 400, answer[:300]
    error = json.loads(answer)["error"]
    assert error["code"] == "invalid_encoding"
    assert fake_upstream.received == []


async def test_a_gzip_body_that_is_gzip_is_served(
    proxy: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    raw = gzip.compress(json.dumps({"model": "chat", "messages": MESSAGES}).encode())
    status, answer = await post(proxy.url, raw, {"Content-Encoding": "gzip"})
    assert status == 200, answer[:300]
    assert fake_upstream.last.body["messages"] == MESSAGES


# ----------------------------------------------------------------------------- Expect


async def test_expect_continue_is_answered_only_after_the_key_is_checked(
    proxy: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: p\r\nAuthorization: Bearer sk-wrong\r\n"
        "Expect: 100-continue\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    ).encode()
    answer = await raw_exchange(proxy.url, head)  # the body is never sent
    assert answer.status == 401  # not an invitation to upload (100) first
    assert answer.error()["code"] == "invalid_api_key"


async def test_expect_continue_with_a_key_invites_the_body(
    proxy: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    raw = json.dumps({"model": "chat", "messages": MESSAGES}).encode()
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{proxy.url}{CHAT}", data=raw, headers=AUTH, expect100=True)
        assert response.status == 200
        response.release()
    assert fake_upstream.last.body["messages"] == MESSAGES


@pytest.mark.parametrize("path", [CHAT, "/v1/models", "/no/such/path"])
async def test_an_unknown_expectation_is_a_417_in_openai_format(
    proxy: RunningProxy, path: str
) -> None:
    head = request_head(path=path, headers={"Expect": "<script>x</script>"}, length=0)
    answer = await raw_exchange(proxy.url, head)
    assert answer.status == 417
    error = answer.error()
    assert error["code"] == "expectation_failed"
    assert "script" not in answer.body.decode()


# ----------------------------------------------------------------------------- echoed strings


async def test_a_huge_model_name_is_truncated_in_the_404_and_the_log(
    proxy: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    model = "m" * 3_000_000
    raw = json.dumps({"model": model, "messages": MESSAGES}).encode()
    status, answer = await post(proxy.url, raw)
    assert status == 404
    message = json.loads(answer)["error"]["message"]
    assert len(message) < 600
    assert "mmmm" in message
    assert "more characters" in message


# ----------------------------------------------------------------------------- headers


async def test_the_server_header_names_no_versions(proxy: RunningProxy) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/healthz", "/v1/models", "/no/such/path"):
            async with session.get(f"{proxy.url}{path}", headers=AUTH) as response:
                assert response.headers["Server"] == "tuned-proxy", path
        async with session.post(
            f"{proxy.url}{CHAT}", json={"model": "chat", "messages": MESSAGES}, headers=AUTH
        ) as response:
            assert response.headers["Server"] == "tuned-proxy"
    answer = await raw_exchange(proxy.url, b"GET / HTTP/1.1\r\nHost: p\r\nx: a\x00b\r\n\r\n")
    assert answer.headers["server"] == "tuned-proxy"


async def test_a_request_line_over_the_limit_is_a_414(proxy: RunningProxy) -> None:
    answer = await raw_exchange(proxy.url, request_head(path=CHAT + "?q=" + "a" * 20_000))
    assert answer.status == 414
    assert answer.error()["code"] == "uri_too_long"
