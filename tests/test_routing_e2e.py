"""Routing through the running proxy: weighted split, stickiness, fallback, shadow."""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from typing import Any

import aiohttp
import pytest

from proxy.outgoing import outgoing_request
from proxy.state import STATE
from tests.support.configs import (
    REPO,
    basic_config,
    fake_variant,
    fault_config,
    refusing_upstream,
)
from tests.support.keys import CLIENT_KEY
from tests.support.servers import FakeUpstream, RunningProxy, StartProxy
from tests.support.waiting import eventually

MESSAGES = [{"role": "user", "content": "Where is my order 12345?"}]
SUPPORT_TOOLS = json.loads((REPO / "policies" / "support.tools.json").read_text())


async def send(
    session: aiohttp.ClientSession, proxy: RunningProxy, body: dict[str, Any], **headers: str
) -> tuple[int, str, dict[str, Any]]:
    async with session.post(
        f"{proxy.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {CLIENT_KEY}", **headers},
    ) as response:
        payload = await response.json()
        return response.status, response.headers.get("x-tuned-proxy-variant", ""), payload


async def test_split_lands_within_tolerance_of_the_weights(
    fake_upstream: FakeUpstream, start_proxy: StartProxy
) -> None:
    config = basic_config(fake_upstream.url)
    config["routes"]["chat"]["variants"] = [
        fake_variant("a", "m-a", 70),
        fake_variant("b", "m-b", 30),
        fake_variant("off", "m-off", 0),
    ]
    proxy = await start_proxy(config)
    total = 2000
    semaphore = asyncio.Semaphore(32)

    async def one(session: aiohttp.ClientSession) -> str:
        async with semaphore:
            return (await send(session, proxy, {"model": "chat", "messages": MESSAGES}))[1]

    async with aiohttp.ClientSession() as session:
        seen = Counter(await asyncio.gather(*(one(session) for _ in range(total))))
    # Binomial(2000, 0.7): sd ≈ 20.5; five sd either side fails by chance about once in 1.7M runs.
    sd = math.sqrt(total * 0.7 * 0.3)
    assert abs(seen["a"] - 0.7 * total) < 5 * sd
    assert seen["a"] + seen["b"] == total
    assert seen["off"] == 0
    upstream_models = Counter(r.body["model"] for r in fake_upstream.received)
    assert upstream_models == {"m-a": seen["a"], "m-b": seen["b"]}


async def test_the_same_sticky_key_always_lands_on_the_same_variant(
    fake_upstream: FakeUpstream, start_proxy: StartProxy
) -> None:
    config = basic_config(fake_upstream.url, sticky="header:x-user-id")
    config["routes"]["chat"]["variants"] = [fake_variant("a", "m-a"), fake_variant("b", "m-b")]
    first = await start_proxy(config)
    second = await start_proxy(config)  # another replica: no shared state
    async with aiohttp.ClientSession() as session:
        for user in (f"user-{n}" for n in range(40)):
            body = {"model": "chat", "messages": MESSAGES}
            seen = {
                (await send(session, proxy, body, **{"x-user-id": user}))[1]
                for proxy in (first, second, first, second)
            }
            assert len(seen) == 1, user


async def test_each_variant_receives_the_body_its_own_policy_produces(
    fake_upstream: FakeUpstream, start_proxy: StartProxy
) -> None:
    config = basic_config(fake_upstream.url, allow_variant_override=True)
    config["routes"]["chat"]["variants"] = [
        fake_variant("full", "m-full", policy="support-full"),
        fake_variant("slim", "m-slim", policy="support-slim"),
    ]
    proxy = await start_proxy(config)
    body = {"model": "chat", "messages": MESSAGES, "tools": SUPPORT_TOOLS}
    route = proxy.app[STATE].runtime.routes["chat"]
    async with aiohttp.ClientSession() as session:
        for target in route.variants:
            status, answered_by, _ = await send(
                session, proxy, body, **{"x-tuned-proxy-variant": target.name}
            )
            assert (status, answered_by) == (200, target.name)
            assert fake_upstream.last.body == outgoing_request(target, body).body
    full, slim = (r.body for r in fake_upstream.received[-2:])
    assert len(json.dumps(slim["tools"])) < len(json.dumps(full["tools"]))


@pytest.fixture
async def with_fallback(fake_upstream: FakeUpstream, start_proxy: StartProxy) -> RunningProxy:
    fallback = [{"upstream": "fake", "model": "m-fallback", "policy": "support-full"}]

    def route(upstream: str, model: str) -> dict[str, Any]:
        primary = {
            "name": "primary",
            "upstream": upstream,
            "model": model,
            "policy": "support-slim",
        }
        return {"variants": [primary], "fallback": fallback}

    config = fault_config(
        fake_upstream.url,
        upstreams={"impatient": {"idle_timeout_s": 0.3}, "dead": refusing_upstream()},
        routes={
            "refused": route("dead", "x"),
            "timeout": route("impatient", "ft-stall"),
            "e429": route("fake", "ft-error-429"),
            "e500": route("fake", "ft-error-500"),
            "e503": route("fake", "ft-error-503"),
            "e400": route("fake", "ft-error-400"),
        },
    )
    return await start_proxy(config)


@pytest.mark.parametrize("route", ["refused", "timeout", "e429", "e500", "e503"])
async def test_fallback_on_each_failure_kind_with_its_own_policy(
    with_fallback: RunningProxy, fake_upstream: FakeUpstream, route: str
) -> None:
    body = {"model": route, "messages": MESSAGES, "tools": SUPPORT_TOOLS}
    async with aiohttp.ClientSession() as session:
        status, answered_by, payload = await send(session, with_fallback, body)
    assert (status, answered_by) == (200, "fallback-1")
    assert payload["choices"]
    fallback_target = with_fallback.app[STATE].runtime.routes[route].fallback[0]
    # The fallback rewrote the client's original body with its own (identical) policy.
    assert fake_upstream.last.body == outgoing_request(fallback_target, body).body


async def test_no_fallback_for_a_client_error(
    with_fallback: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    async with aiohttp.ClientSession() as session:
        status, answered_by, payload = await send(
            session, with_fallback, {"model": "e400", "messages": MESSAGES}
        )
    assert (status, answered_by) == (400, "primary")
    assert "error" in payload
    assert [r.body["model"] for r in fake_upstream.received] == ["ft-error-400"]


async def test_last_429_passes_retry_after_through(
    fake_upstream: FakeUpstream, start_proxy: StartProxy
) -> None:
    chat = {
        "variants": [fake_variant("a", "ft-error-429")],
        "fallback": [{"upstream": "fake", "model": "ft-error-429"}],
    }
    proxy = await start_proxy(fault_config(fake_upstream.url, routes={"chat": chat}))
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{proxy.url}/v1/chat/completions",
            json={"model": "chat", "messages": MESSAGES},
            headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        ) as response,
    ):
        assert response.status == 429
        assert response.headers["retry-after"] == "1"
        assert response.headers["x-tuned-proxy-variant"] == "fallback-1"
    assert len(fake_upstream.received) == 2


async def test_shadow_copy_arrives_and_the_client_sees_only_the_primary(
    fake_upstream: FakeUpstream, start_proxy: StartProxy
) -> None:
    config = basic_config(fake_upstream.url)
    config["routes"]["chat"]["variants"] = [fake_variant("main", "m-main", policy="support-full")]
    config["routes"]["chat"]["shadow"] = {
        "upstream": "fake",
        "model": "m-shadow",
        "policy": "support-slim",
        "sample": 1.0,
    }
    proxy = await start_proxy(config)
    body = {"model": "chat", "messages": MESSAGES, "tools": SUPPORT_TOOLS}
    async with aiohttp.ClientSession() as session:
        status, answered_by, payload = await send(session, proxy, body)
    assert (status, answered_by) == (200, "main")
    assert payload["model"] == "m-main"
    await eventually(lambda: len(fake_upstream.received) == 2, "the shadow copy arrived")
    by_model = {r.body["model"]: r.body for r in fake_upstream.received}
    shadow = proxy.app[STATE].runtime.routes["chat"].shadow
    assert shadow is not None
    assert by_model["m-shadow"] == outgoing_request(shadow, body).body
    shadows = proxy.app[STATE].shadows
    await eventually(lambda: shadows.outcomes[("chat", "ok")] == 1, "the shadow counted ok")


@pytest.mark.parametrize(("model", "outcome"), [("ft-slow-3000", None), ("ft-error-500", "error")])
async def test_a_slow_or_failing_shadow_changes_nothing_for_the_client(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, model: str, outcome: str | None
) -> None:
    config = basic_config(fake_upstream.url)
    config["routes"]["chat"]["shadow"] = {"upstream": "fake", "model": model, "sample": 1.0}
    proxy = await start_proxy(config)
    shadows = proxy.app[STATE].shadows
    async with aiohttp.ClientSession() as session:
        status, answered_by, payload = await send(
            session, proxy, {"model": "chat", "messages": MESSAGES}
        )
        assert (status, answered_by) == (200, "main")
        assert payload["model"] == "ft-model"
        if outcome is None:
            assert len(shadows.tasks) == 1  # the slow shadow is still running; the client is done
        else:
            await eventually(
                lambda: shadows.outcomes[("chat", outcome)] == 1, f"the shadow counted {outcome}"
            )


async def test_shadow_work_is_bounded(fake_upstream: FakeUpstream, start_proxy: StartProxy) -> None:
    config = basic_config(fake_upstream.url)
    config["server"] = {"shadow_max_in_flight": 2}
    config["routes"]["chat"]["shadow"] = {
        "upstream": "fake",
        "model": "ft-slow-3000",
        "sample": 1.0,
    }
    proxy = await start_proxy(config)
    shadows = proxy.app[STATE].shadows
    async with aiohttp.ClientSession() as session:
        for _ in range(5):
            assert (await send(session, proxy, {"model": "chat", "messages": MESSAGES}))[0] == 200
    assert len(shadows.tasks) == 2
    assert shadows.outcomes[("chat", "dropped")] == 3


async def test_no_shadow_when_sample_is_zero(
    fake_upstream: FakeUpstream, start_proxy: StartProxy
) -> None:
    config = basic_config(fake_upstream.url)
    config["routes"]["chat"]["shadow"] = {"upstream": "fake", "model": "m-shadow", "sample": 0.0}
    proxy = await start_proxy(config)
    async with aiohttp.ClientSession() as session:
        for _ in range(20):
            await send(session, proxy, {"model": "chat", "messages": MESSAGES})
    # A shadow copy goes out after the answer: none was even started.
    shadows = proxy.app[STATE].shadows
    assert (shadows.tasks, shadows.outcomes) == (set(), Counter())
    assert [r.body["model"] for r in fake_upstream.received] == ["ft-model"] * 20
