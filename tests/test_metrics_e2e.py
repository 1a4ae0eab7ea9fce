"""Known traffic through the running proxy; `/metrics` parsed with prometheus_client's parser."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import aiohttp
import pytest

from proxy.outgoing import outgoing_request
from proxy.state import STATE
from tests.support.configs import REPO, basic_config, fake_variant, fault_config
from tests.support.keys import CLIENT_KEY
from tests.support.metrics import Samples, known, scrape, total
from tests.support.servers import FakeUpstream, RunningProxy, StartProxy
from tests.support.waiting import eventually

SUPPORT_TOOLS = json.loads((REPO / "policies" / "support.tools.json").read_text())
LOOKUP = [{"role": "user", "content": "Can you look up the status of my order ORD-842131?"}]
UNTRAINED_TOOL = {
    "type": "function",
    "function": {
        "name": "play_music",
        "description": "Play a song on the music system",
        "parameters": {"type": "object", "properties": {"song": {"type": "string"}}},
    },
}


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample of `name` with exactly `labels`; 0 where there is none (yet)."""
    return samples.get((known(name), frozenset(labels.items())), 0.0)


@pytest.fixture
async def measured(fake_upstream: FakeUpstream, start_proxy: StartProxy) -> RunningProxy:
    chat = {
        "variants": [
            fake_variant("full", "m-full", policy="support-full"),
            fake_variant("slim", "m-slim", 0, policy="support-slim"),
        ],
        "allow_variant_override": True,
    }
    broken_args = {
        "variants": [
            {"name": "v", "upstream": "fake", "model": "ft-invalid-args", "policy": "support-full"}
        ]
    }
    flaky = {
        "variants": [{"name": "v", "upstream": "fake", "model": "ft-error-503"}],
        "fallback": [{"upstream": "fake", "model": "m-backup"}],
    }
    config = fault_config(
        fake_upstream.url, routes={"chat": chat, "broken-args": broken_args, "flaky": flaky}
    )
    return await start_proxy(config)


async def post_all(
    proxy: RunningProxy, bodies: Iterable[dict[str, Any]], **headers: str
) -> list[bytes]:
    answers = []
    async with aiohttp.ClientSession() as session:
        for body in bodies:
            async with session.post(
                f"{proxy.url}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {CLIENT_KEY}", **headers},
            ) as response:
                answers.append(await response.read())
    return answers


async def test_counts_match_the_traffic_exactly(measured: RunningProxy) -> None:
    body = {"model": "chat", "messages": LOOKUP, "tools": SUPPORT_TOOLS}
    answers = await post_all(measured, [body] * 3)
    prompt = sum(json.loads(a)["usage"]["prompt_tokens"] for a in answers)
    completion = sum(json.loads(a)["usage"]["completion_tokens"] for a in answers)
    m = await scrape(measured.url)
    series = {"route": "chat", "variant": "full"}
    assert value(m, "tuned_proxy_requests_total", code="200", **series) == 3
    assert value(m, "tuned_proxy_tokens_total", kind="prompt", **series) == prompt
    assert value(m, "tuned_proxy_tokens_total", kind="completion", **series) == completion
    assert value(m, "tuned_proxy_tokens_total", kind="cached", **series) == 0
    assert value(m, "tuned_proxy_responses_total", finish_reason="tool_calls", **series) == 3
    assert value(m, "tuned_proxy_tool_calls_total", function="lookup_order", **series) == 3
    full = measured.app[STATE].runtime.routes["chat"].variant("full")
    assert full is not None
    actions = [change.action for change in outgoing_request(full, body).changes]
    assert actions
    for action in set(actions):
        expected = 3 * actions.count(action)
        assert value(m, "tuned_proxy_rewrites_total", action=action, **series) == expected
    assert value(m, "tuned_proxy_request_duration_seconds_count", **series) == 3
    assert value(m, "tuned_proxy_upstream_duration_seconds_count", **series) == 3
    assert value(m, "tuned_proxy_overhead_seconds_count", **series) == 3
    assert value(m, "tuned_proxy_time_to_first_token_seconds_count", **series) == 0
    assert total(m, "tuned_proxy_tool_argument_errors_total") == 0
    assert value(m, "tuned_proxy_in_flight_requests") == 0


async def test_schema_bytes_removed_equal_the_rewrite_report(measured: RunningProxy) -> None:
    body = {"model": "chat", "messages": LOOKUP, "tools": SUPPORT_TOOLS}
    await post_all(measured, [body] * 2, **{"x-tuned-proxy-variant": "slim"})
    slim = measured.app[STATE].runtime.routes["chat"].variant("slim")
    assert slim is not None
    expected = 2 * outgoing_request(slim, body).tool_bytes_removed
    assert expected > 0
    m = await scrape(measured.url)
    assert (
        value(m, "tuned_proxy_tool_schema_bytes_removed_total", route="chat", variant="slim")
        == expected
    )


@pytest.mark.parametrize("client_asks_usage", [False, True])
async def test_streams_count_usage_and_first_token(
    measured: RunningProxy, client_asks_usage: bool
) -> None:
    body: dict[str, Any] = {
        "model": "chat",
        "messages": LOOKUP,
        "tools": SUPPORT_TOOLS,
        "stream": True,
    }
    if client_asks_usage:
        body["stream_options"] = {"include_usage": True}
    (raw,) = await post_all(measured, [body])
    usage_events = [e for e in raw.split(b"\n\n") if b'"choices":[]' in e]
    assert len(usage_events) == (1 if client_asks_usage else 0)
    m = await scrape(measured.url)
    series = {"route": "chat", "variant": "full"}
    assert value(m, "tuned_proxy_tokens_total", kind="prompt", **series) > 0
    assert value(m, "tuned_proxy_time_to_first_token_seconds_count", **series) == 1
    assert value(m, "tuned_proxy_tool_calls_total", function="lookup_order", **series) == 1
    assert value(m, "tuned_proxy_responses_total", finish_reason="tool_calls", **series) == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_arguments_that_break_the_full_schema_are_counted(
    measured: RunningProxy, stream: bool
) -> None:
    body = {"model": "broken-args", "messages": LOOKUP, "tools": SUPPORT_TOOLS, "stream": stream}
    (raw,) = await post_all(measured, [body])
    assert b"lookup_order" in raw  # the answer reached the client unchanged
    m = await scrape(measured.url)
    errors = value(
        m,
        "tuned_proxy_tool_argument_errors_total",
        route="broken-args",
        variant="v",
        function="lookup_order",
        kind="schema",
    )
    assert errors == 1


async def test_function_outside_the_training_set_is_other(measured: RunningProxy) -> None:
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": "play a song on the music system"}],
        "tools": [UNTRAINED_TOOL],
    }
    (raw,) = await post_all(measured, [body])
    assert (
        json.loads(raw)["choices"][0]["message"]["tool_calls"][0]["function"]["name"]
        == "play_music"
    )
    m = await scrape(measured.url)
    assert (
        value(m, "tuned_proxy_tool_calls_total", route="chat", variant="full", function="other")
        == 1
    )
    assert total(m, "tuned_proxy_tool_calls_total", function="play_music") == 0


async def test_fallback_and_upstream_errors_are_counted(measured: RunningProxy) -> None:
    answers = await post_all(measured, [{"model": "flaky", "messages": LOOKUP}] * 2)
    assert all(json.loads(a)["model"] == "m-backup" for a in answers)
    m = await scrape(measured.url)
    assert value(m, "tuned_proxy_fallbacks_total", route="flaky", reason="status_5xx") == 2
    assert value(m, "tuned_proxy_upstream_errors_total", upstream="fake", reason="status_5xx") == 2
    assert (
        value(m, "tuned_proxy_requests_total", route="flaky", variant="fallback-1", code="200") == 2
    )


async def test_unknown_models_are_not_label_values(measured: RunningProxy) -> None:
    await post_all(measured, [{"model": f"gpt-made-up-{n}", "messages": LOOKUP} for n in range(3)])
    m = await scrape(measured.url)
    assert value(m, "tuned_proxy_requests_total", route="", variant="", code="404") == 3
    assert not any("gpt-made-up" in str(labels) for _, labels in m)


async def test_shadow_outcomes_and_reloads_are_counted(
    fake_upstream: FakeUpstream, start_proxy: StartProxy
) -> None:
    config = basic_config(fake_upstream.url)
    config["routes"]["chat"]["shadow"] = {"upstream": "fake", "model": "m-shadow", "sample": 1.0}
    proxy = await start_proxy(config)
    await post_all(proxy, [{"model": "chat", "messages": LOOKUP}])
    shadows = proxy.app[STATE].shadows
    for task in list(shadows.tasks):
        await task
    m = await scrape(proxy.url)
    assert value(m, "tuned_proxy_shadow_requests_total", route="chat", outcome="ok") == 1


async def test_a_scrape_within_the_cache_time_gets_the_same_rendering(
    fake_upstream: FakeUpstream, start_proxy: StartProxy
) -> None:
    """`server.metrics_cache_s`: scrapers at once cost one rendering; 0 renders every time."""

    async def scraped_text(proxy: RunningProxy) -> str:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{proxy.url}/metrics") as response,
        ):
            return await response.text()

    async def one_request(proxy: RunningProxy) -> None:
        body = {"model": "chat", "messages": LOOKUP}
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{proxy.url}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {CLIENT_KEY}"},
            ) as response,
        ):
            assert response.status == 200
            await response.read()
        await eventually(
            lambda: (
                b'code="200",route="chat",variant="main"} 1.0'
                in proxy.app[STATE].metrics.render()[0]
            ),
            "the request is counted",
        )

    cached = await start_proxy({**basic_config(fake_upstream.url), "server": {}})
    fresh = await start_proxy({**basic_config(fake_upstream.url), "server": {"metrics_cache_s": 0}})
    for proxy, reused in ((cached, True), (fresh, False)):
        before = await scraped_text(proxy)
        await one_request(proxy)
        after = await scraped_text(proxy)
        assert (after == before) is reused
