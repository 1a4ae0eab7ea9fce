"""Limits: a cap on requests in flight that refuses at once instead of queueing, and each
upstream's own connect, first-byte (idle) and total timeouts."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from proxy.state import STATE
from tests.conftest import (
    CLIENT_KEY,
    Blackhole,
    FakeUpstream,
    RunningProxy,
    StartProxy,
    basic_config,
    eventually,
)
from tests.test_faults import MESSAGES, data_events, exchange, samples_of, scrape, total

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
GOOD = {"model": "chat", "messages": MESSAGES}


def route(upstream: str, model: str) -> dict[str, Any]:
    return {"variants": [{"name": "v", "upstream": upstream, "model": model}]}


# ----------------------------------------------------------------------------- in flight


@pytest.fixture
async def capped(fake_upstream: FakeUpstream, start_proxy: StartProxy) -> RunningProxy:
    config = basic_config(fake_upstream.url)
    config["server"] = {"max_in_flight": 2}
    config["routes"]["held"] = route("fake", "ft-stream-stall-30000")  # 30 s mid-stream
    return await start_proxy(config)


async def test_beyond_max_in_flight_the_proxy_refuses_at_once(
    capped: RunningProxy, fake_upstream: FakeUpstream
) -> None:
    state = capped.app[STATE]
    held = {"model": "held", "messages": MESSAGES, "stream": True}
    async with aiohttp.ClientSession() as session:
        streams = [
            await session.post(f"{capped.url}/v1/chat/completions", json=held, headers=AUTH)
            for _ in range(2)
        ]
        for stream in streams:
            assert data_events(await stream.content.readuntil(b"\n\n"))
        assert state.in_flight == 2
        forwarded = len(fake_upstream.received)

        # Both slots are taken for 30 s: a queued request would wait that long (the guard
        # turns a wait into a failure); a refused one is answered while they are still held.
        async with asyncio.timeout(5):
            refused = await exchange(capped.url, GOOD)
        assert refused.status == 503
        assert refused.headers["retry-after"] == "1"
        error = json.loads(refused.body)["error"]
        assert error["code"] == "too_many_requests_in_flight"
        assert len(fake_upstream.received) == forwarded  # never forwarded
        during = await scrape(capped.url)  # the operations paths are not capped
        assert total(during, "tuned_proxy_in_flight_requests") == 2
        assert total(during, "tuned_proxy_requests_total", code="503") == 1
        async with session.get(f"{capped.url}/healthz") as health:
            assert health.status == 200

        for stream in streams:
            stream.close()
    await eventually(lambda: state.in_flight == 0, "the held streams are let go")
    assert (await exchange(capped.url, GOOD)).status == 200


# ----------------------------------------------------------------------------- timeouts


@pytest.fixture
async def timed(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, blackhole: Blackhole
) -> RunningProxy:
    """Pairs of upstreams on the same fake, one timeout apart."""
    config = basic_config(fake_upstream.url)
    fake = config["upstreams"]["fake"]
    config["upstreams"].update(
        {
            "quick": {**fake, "idle_timeout_s": 0.2},
            "patient": {**fake, "idle_timeout_s": 5},
            "brief": {**fake, "timeout_s": 0.5},
            "long": {**fake, "timeout_s": 10},
            "hole": {
                "kind": "compatible",
                "base_url": f"http://127.0.0.1:{blackhole.port}/v1",
                "connect_timeout_s": 0.2,
                "idle_timeout_s": 10,
                "timeout_s": 20,
            },
        }
    )
    config["routes"].update(
        {
            "quick-stall": route("quick", "ft-stall-600"),  # 0.6 s before the status line
            "patient-stall": route("patient", "ft-stall-600"),
            "brief-slow": route("brief", "ft-slow-100"),  # a chunk every 100 ms, about 1.1 s
            "long-slow": route("long", "ft-slow-100"),
            "hole": route("hole", "m"),
        }
    )
    return await start_proxy(config)


async def test_the_first_byte_timeout_is_the_upstreams_own(timed: RunningProxy) -> None:
    quick = await exchange(timed.url, {"model": "quick-stall", "messages": MESSAGES})
    assert quick.status == 504
    assert json.loads(quick.body)["error"]["code"] == "upstream_timeout"
    patient = await exchange(timed.url, {"model": "patient-stall", "messages": MESSAGES})
    assert patient.status == 200
    samples = samples_of(timed)
    assert total(samples, "tuned_proxy_upstream_errors_total", upstream="quick") == 1
    assert total(samples, "tuned_proxy_upstream_errors_total", upstream="patient") == 0


async def test_the_total_timeout_is_the_upstreams_own(timed: RunningProxy) -> None:
    """No pause is long, but the whole stream outlasts `timeout_s`: it ends with an error."""
    brief = await exchange(timed.url, {"model": "brief-slow", "messages": MESSAGES, "stream": True})
    assert brief.status == 200
    events = data_events(brief.body)
    assert json.loads(events[-1])["error"]["code"] == "upstream_timeout"
    full = await exchange(timed.url, {"model": "long-slow", "messages": MESSAGES, "stream": True})
    assert data_events(full.body)[-1] == b"[DONE]"
    samples = samples_of(timed)
    assert total(samples, "tuned_proxy_upstream_errors_total", upstream="brief", reason="timeout")
    assert total(samples, "tuned_proxy_upstream_errors_total", upstream="long") == 0


async def test_the_connect_timeout_is_the_upstreams_own(timed: RunningProxy) -> None:
    """The connection never completes; the connect timeout (0.2 s) answers, not the idle (10 s)
    or total (20 s) ones: the guard below fails the test long before those."""
    async with asyncio.timeout(5):
        outcome = await exchange(timed.url, {"model": "hole", "messages": MESSAGES})
    assert outcome.status == 504
    assert json.loads(outcome.body)["error"]["code"] == "upstream_timeout"
    samples = samples_of(timed)
    assert total(samples, "tuned_proxy_upstream_errors_total", upstream="hole", reason="timeout")
    assert timed.app[STATE].upstreams.connection_counts() == (0, 0)
