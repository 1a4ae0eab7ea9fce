"""Every error the client can get: OpenAI's body, OpenAI's status, nothing leaked, no hang."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest
from multidict import CIMultiDict

from proxy.reload import reload_config
from proxy.state import STATE
from tests.support.configs import basic_config, fault_config, refusing_upstream
from tests.support.http import MESSAGES
from tests.support.keys import CLIENT_KEY, UPSTREAM_KEY
from tests.support.servers import FakeUpstream, RunningProxy, StartProxy


@pytest.fixture
async def faulty(fake_upstream: FakeUpstream, start_proxy: StartProxy) -> RunningProxy:
    keyless = {
        "kind": "openai",
        "base_url": f"{fake_upstream.url}/v1",
        "api_key_env": "TUNED_PROXY_TEST_UNSET_KEY",
    }
    config = fault_config(
        fake_upstream.url,
        upstreams={
            "impatient": {"idle_timeout_s": 0.3},
            "dead": refusing_upstream(),
            "keyless": keyless,
        },
        routes={
            "err429": ("fake", "ft-error-429"),
            "err500": ("fake", "ft-error-500"),
            "err400": ("fake", "ft-error-400"),
            "cut": ("fake", "ft-stream-cut"),
            "stall": ("impatient", "ft-stall"),
            "stream-stall": ("impatient", "ft-stream-stall"),
            "badjson": ("fake", "ft-bad-json"),
            "dead": ("dead", "x"),
            "keyless": ("keyless", "x"),
        },
    )
    return await start_proxy(config)


async def post(proxy: RunningProxy, body: Any, **headers: str) -> tuple[int, CIMultiDict[str], Any]:
    all_headers = {"Authorization": f"Bearer {CLIENT_KEY}", **headers}
    raw = body if isinstance(body, bytes) else None
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{proxy.url}/v1/chat/completions",
            data=raw,
            json=None if raw is not None else body,
            headers=all_headers,
        ) as response,
    ):
        payload = await response.json(content_type=None)
        return response.status, response.headers.copy(), payload


def assert_openai_error(payload: Any, code: str | None = None) -> dict[str, Any]:
    error = payload["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert isinstance(error["message"], str)
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    assert UPSTREAM_KEY not in str(payload)
    return dict(error)


async def test_invalid_json_is_400(proxy: RunningProxy) -> None:
    status, headers, payload = await post(proxy, b'{"model": "chat", "messages": [')
    assert status == 400
    assert_openai_error(payload, "invalid_json")
    assert headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([1, 2], None),
        ({"model": "chat"}, "messages"),
        ({"model": "chat", "messages": "hi"}, "messages"),
        ({"messages": []}, "model"),
        ({"model": 7, "messages": []}, "model"),
        ({"model": "chat", "messages": [], "stream": "yes"}, "stream"),
    ],
)
async def test_wrong_shapes_are_400_naming_the_field(
    proxy: RunningProxy, body: Any, param: str | None
) -> None:
    status, _, payload = await post(proxy, body)
    assert status == 400
    assert assert_openai_error(payload)["param"] == param


async def test_unknown_model_is_404_model_not_found(proxy: RunningProxy) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await proxy.client().chat.completions.create(model="gpt-nope", messages=MESSAGES)
    assert info.value.code == "model_not_found"


async def test_an_unknown_path_is_404_naming_every_api_served(proxy: RunningProxy) -> None:
    # The legacy completions API is not served: the 404 says what is, the Responses API too.
    with pytest.raises(openai.NotFoundError) as info:
        await proxy.client().completions.create(model="chat", prompt="Hello")
    message = str(info.value.body.get("message") if isinstance(info.value.body, dict) else "")
    assert "POST /v1/chat/completions" in message
    assert "POST /v1/responses" in message


async def test_body_too_large_is_413(fake_upstream: FakeUpstream, start_proxy: StartProxy) -> None:
    config = basic_config(fake_upstream.url)
    config["server"] = {"max_body_bytes": 2048}
    proxy = await start_proxy(config)
    big = {"model": "chat", "messages": [{"role": "user", "content": "x" * 4096}]}
    status, _, payload = await post(proxy, big)
    assert status == 413
    assert_openai_error(payload, "request_too_large")
    assert fake_upstream.received == []


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Missing API key"),
        ({"Authorization": "Bearer wrong"}, "Incorrect API key"),
        ({"api-key": "wrong"}, "Incorrect API key"),
    ],
)
async def test_auth_failures_are_401(
    proxy: RunningProxy, fake_upstream: FakeUpstream, headers: dict[str, str], message: str
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{proxy.url}/v1/chat/completions",
            json={"model": "gpt-unknown", "messages": MESSAGES},
            headers=headers,
        ) as response,
    ):
        assert response.status == 401  # before routing: an unknown model is not revealed
        error = assert_openai_error(await response.json(), "invalid_api_key")
        assert message in error["message"]
    assert fake_upstream.received == []


async def test_both_key_header_forms_work(proxy: RunningProxy) -> None:
    for headers in ({"Authorization": f"Bearer {CLIENT_KEY}"}, {"api-key": CLIENT_KEY}):
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{proxy.url}/v1/chat/completions",
                json={"model": "chat", "messages": MESSAGES},
                headers=headers,
            ) as response,
        ):
            assert response.status == 200


async def test_sdk_with_wrong_key_raises_authentication_error(proxy: RunningProxy) -> None:
    with pytest.raises(openai.AuthenticationError):
        await proxy.client(api_key="sk-wrong").chat.completions.create(
            model="chat", messages=MESSAGES
        )


async def test_health_endpoints_need_no_key(proxy: RunningProxy) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/healthz", "/readyz"):
            async with session.get(f"{proxy.url}{path}") as response:
                assert response.status == 200
        async with session.get(f"{proxy.url}/v1/models") as response:
            assert response.status == 401


async def test_upstream_429_passes_through_with_retry_headers(faulty: RunningProxy) -> None:
    status, headers, payload = await post(faulty, {"model": "err429", "messages": MESSAGES})
    assert status == 429
    assert headers["retry-after"] == "1"
    assert headers["retry-after-ms"] == "1000"
    assert any(name.lower().startswith("x-ratelimit-") for name in headers)
    assert_openai_error(payload)
    with pytest.raises(openai.RateLimitError):
        await faulty.client().chat.completions.create(model="err429", messages=MESSAGES)


@pytest.mark.parametrize(("route", "status"), [("err500", 500), ("err400", 400)])
async def test_upstream_errors_pass_through(faulty: RunningProxy, route: str, status: int) -> None:
    code, headers, payload = await post(faulty, {"model": route, "messages": MESSAGES})
    assert code == status
    assert headers["x-tuned-proxy-variant"] == "v"
    assert_openai_error(payload)


async def test_unreachable_upstream_is_502(faulty: RunningProxy) -> None:
    status, _, payload = await post(faulty, {"model": "dead", "messages": MESSAGES})
    assert status == 502
    error = assert_openai_error(payload, "upstream_error")
    assert "'dead'" in error["message"]


async def test_upstream_without_its_key_is_502_naming_the_variable(faulty: RunningProxy) -> None:
    status, _, payload = await post(faulty, {"model": "keyless", "messages": MESSAGES})
    assert status == 502
    assert "TUNED_PROXY_TEST_UNSET_KEY" in assert_openai_error(payload)["message"]


async def test_stalled_upstream_is_504(faulty: RunningProxy) -> None:
    status, _, payload = await post(faulty, {"model": "stall", "messages": MESSAGES})
    assert status == 504
    assert_openai_error(payload, "upstream_timeout")


async def test_non_json_200_is_502(faulty: RunningProxy) -> None:
    status, _, payload = await post(faulty, {"model": "badjson", "messages": MESSAGES})
    assert status == 502
    assert_openai_error(payload, "upstream_error")


async def test_stream_that_fails_before_starting_is_a_plain_http_error(
    faulty: RunningProxy,
) -> None:
    with pytest.raises(openai.InternalServerError):
        await faulty.client().chat.completions.create(
            model="err500", messages=MESSAGES, stream=True
        )


@pytest.mark.parametrize("route", ["cut", "stream-stall"])
async def test_stream_broken_midway_ends_with_an_error_event(
    faulty: RunningProxy, route: str
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{faulty.url}/v1/chat/completions",
            json={"model": route, "messages": MESSAGES, "stream": True},
            headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        ) as response,
    ):
        assert response.status == 200
        raw = await response.read()
    events = [e for e in raw.split(b"\n\n") if e]
    assert len(events) >= 2
    assert events[-1].startswith(b'data: {"error":')
    assert b"[DONE]" not in raw
    stream = await faulty.client().chat.completions.create(
        model=route, messages=MESSAGES, stream=True
    )
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass


async def test_the_proxy_serves_the_next_request_after_failures(faulty: RunningProxy) -> None:
    async with aiohttp.ClientSession() as session:
        for route in ("dead", "stall", "cut", "badjson"):
            body = {"model": route, "messages": MESSAGES, "stream": route == "cut"}
            async with session.post(
                f"{faulty.url}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {CLIENT_KEY}"},
            ) as response:
                await response.read()
    status, _, payload = await post(faulty, {"model": "chat", "messages": MESSAGES})
    assert status == 200
    assert payload["choices"]


async def test_an_upstream_key_set_later_is_read_at_the_next_reload(
    faulty: RunningProxy, fake_upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Keys are read from the environment once per load, as client keys are: not per request.
    status, _, _ = await post(faulty, {"model": "keyless", "messages": MESSAGES})
    assert status == 502
    monkeypatch.setenv("TUNED_PROXY_TEST_UNSET_KEY", "sk-upstream-set-later")
    status, _, payload = await post(faulty, {"model": "keyless", "messages": MESSAGES})
    assert status == 502
    assert "TUNED_PROXY_TEST_UNSET_KEY is not set" in payload["error"]["message"]
    assert reload_config(faulty.app[STATE], faulty.config_path)
    status, _, payload = await post(faulty, {"model": "keyless", "messages": MESSAGES})
    assert status == 200
    assert fake_upstream.last.headers["authorization"] == "Bearer sk-upstream-set-later"
