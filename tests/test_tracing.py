"""Traces, end to end: the proxy a real server, the client the `openai` SDK, the upstream the
fake model's server, and the collector an OTLP/HTTP receiver decoding what the OpenTelemetry
SDK's own exporter sends (`tests/support/collector.py`)."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import yaml

from proxy.config import TracingConfig
from proxy.reload import reload_config
from proxy.state import STATE
from proxy.tracing import MAX_EXPORT_BATCH, MAX_QUEUED_SPANS, Tracing, close_tracing
from tests.support.collector import Collector, ReceivedSpan, start_collector
from tests.support.configs import POLICIES, basic_config, fault_config, refusing_upstream
from tests.support.http import CHAT, MESSAGES
from tests.support.keys import CLIENT_KEY, UPSTREAM_KEY, key_env
from tests.support.metrics import samples_of, total
from tests.support.processes import read_until, serving
from tests.support.servers import FakeUpstream, RunningProxy, StartProxy, closed_port
from tests.support.waiting import eventually

# The application's span, as its own instrumentation would send it.
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
EXPORT_THREAD = "OtelBatchSpanRecordProcessor"  # the SDK's BatchSpanProcessor's thread
SECRET = "PURPLE-ELEPHANT-7731"  # in the message; the fake model puts it in the arguments too
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


@pytest.fixture
async def collector(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Collector]:
    # The SDK's own knob: export every 20 ms rather than every 5 s, so spans arrive at once.
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    receiver = await start_collector()
    assert receiver.runner is not None
    yield receiver
    await receiver.runner.cleanup()


def traced(config: dict[str, Any], collector: Collector, **tracing: Any) -> dict[str, Any]:
    return {**config, "tracing": {"otlp_endpoint": collector.url, **tracing}}


async def spans_of(collector: Collector, count: int) -> list[ReceivedSpan]:
    await eventually(lambda: len(collector.spans) >= count, f"{count} spans exported")
    return collector.spans


def one(spans: list[ReceivedSpan], kind: str) -> ReceivedSpan:
    (span,) = [span for span in spans if span.kind == kind]
    return span


def carried(traceparent: str) -> tuple[str, str, bool]:
    """(trace id, span id, sampled) of a `traceparent` header (other flags may be set: the
    SDK marks the ids of a trace it started as random)."""
    version, trace_id, span_id, flags = traceparent.split("-")
    assert version == "00"
    return trace_id, span_id, bool(int(flags, 16) & 1)


def export_threads() -> int:
    return sum(thread.name == EXPORT_THREAD for thread in threading.enumerate())


async def test_a_request_continues_the_clients_trace_to_the_upstream(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, collector: Collector
) -> None:
    proxy = await start_proxy(traced(basic_config(fake_upstream.url), collector))
    client = proxy.client(default_headers={"traceparent": TRACEPARENT})

    answer = await client.chat.completions.create(model="chat", messages=MESSAGES)

    spans = await spans_of(collector, 2)
    server, upstream = one(spans, "server"), one(spans, "client")
    assert (server.name, server.trace_id, server.parent_span_id) == (
        "chat chat",
        CLIENT_TRACE,
        CLIENT_SPAN,
    )
    assert (upstream.name, upstream.trace_id, upstream.parent_span_id) == (
        "chat ft-model",
        CLIENT_TRACE,
        server.span_id,
    )
    assert carried(fake_upstream.last.headers["traceparent"]) == (
        CLIENT_TRACE,
        upstream.span_id,
        True,
    )
    assert server.attributes.pop("tuned_proxy.request_id").startswith("req_")
    assert server.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "chat",
        "gen_ai.response.model": answer.model,
        "gen_ai.usage.input_tokens": answer.usage.prompt_tokens if answer.usage else None,
        "gen_ai.usage.output_tokens": answer.usage.completion_tokens if answer.usage else None,
        "gen_ai.response.finish_reasons": ["stop"],
        "http.response.status_code": 200,
        "tuned_proxy.route": "chat",
        "tuned_proxy.variant": "main",
        "tuned_proxy.upstream": "fake",
        "tuned_proxy.api": "chat",
        "tuned_proxy.stream": False,
        "tuned_proxy.attempts": 1,
        "tuned_proxy.policy": "passthrough",
    }
    host, port = fake_upstream.url.removeprefix("http://").split(":")
    # What the answer said is on the request's span alone (tokens counted once per request).
    assert upstream.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "ft-model",
        "openai.api.type": "chat_completions",
        "server.address": host,
        "server.port": int(port),
        "http.response.status_code": 200,
        "tuned_proxy.variant": "main",
        "tuned_proxy.upstream": "fake",
        "tuned_proxy.upstream.server": "other",
    }
    assert (server.error, upstream.error) == (False, False)
    assert {span.service for span in spans} == {"tuned-proxy"}


async def test_each_fallback_attempt_is_a_client_span_of_its_own(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, collector: Collector
) -> None:
    route = {
        "variants": [{"name": "v", "upstream": "dead", "model": "m"}],
        "fallback": [
            {"name": "busy", "upstream": "fake", "model": "ft-error-503"},
            {"name": "good", "upstream": "fake", "model": "ft-model"},
        ],
    }
    config = fault_config(
        fake_upstream.url, upstreams={"dead": refusing_upstream()}, routes={"chat": route}
    )
    proxy = await start_proxy(traced(config, collector))

    await proxy.client().chat.completions.create(model="chat", messages=MESSAGES)

    spans = await spans_of(collector, 4)
    server = one(spans, "server")
    clients = [span for span in spans if span.kind == "client"]
    attempts = {span.attributes["tuned_proxy.variant"]: span for span in clients}
    assert set(attempts) == {"v", "busy", "good"}
    assert {span.parent_span_id for span in attempts.values()} == {server.span_id}
    assert {span.trace_id for span in spans} == {server.trace_id}
    assert (attempts["v"].error, attempts["v"].attributes["error.type"]) == (True, "connect")
    assert attempts["busy"].attributes["error.type"] == "status_5xx"
    assert attempts["busy"].attributes["http.response.status_code"] == 503
    assert not attempts["good"].error
    assert "error.type" not in attempts["good"].attributes
    assert server.attributes["tuned_proxy.attempts"] == 3
    assert not server.error
    seen = [carried(received.headers["traceparent"]) for received in fake_upstream.received]
    assert seen == [(server.trace_id, attempts[name].span_id, True) for name in ("busy", "good")]


async def test_an_upstream_failure_makes_the_request_span_an_error(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, collector: Collector
) -> None:
    config = fault_config(fake_upstream.url, routes={"chat": ("fake", "ft-error-500")})
    proxy = await start_proxy(traced(config, collector))

    with pytest.raises(openai.InternalServerError):
        await proxy.client().chat.completions.create(model="chat", messages=MESSAGES)

    spans = await spans_of(collector, 2)
    server, upstream = one(spans, "server"), one(spans, "client")
    assert (server.error, server.attributes["error.type"]) == (True, "status_5xx")
    assert server.attributes["http.response.status_code"] == 500
    assert (upstream.error, upstream.attributes["error.type"]) == (True, "status_5xx")


async def test_the_shadow_copy_is_a_trace_of_its_own_linked_to_the_request(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, collector: Collector
) -> None:
    shadow = {"upstream": "fake", "model": "ft-shadow-model"}
    proxy = await start_proxy(traced(basic_config(fake_upstream.url, shadow=shadow), collector))
    client = proxy.client(default_headers={"traceparent": TRACEPARENT})

    await client.chat.completions.create(model="chat", messages=MESSAGES)

    spans = await spans_of(collector, 3)
    server = one(spans, "server")
    (copy,) = collector.named("chat ft-shadow-model")
    assert copy.kind == "client"
    assert (copy.trace_id != CLIENT_TRACE, copy.parent_span_id) == (True, "")
    assert copy.links == [(CLIENT_TRACE, server.span_id)]
    assert copy.attributes["tuned_proxy.shadow"] is True
    assert copy.attributes["tuned_proxy.shadow.outcome"] == "ok"
    assert copy.attributes["gen_ai.usage.input_tokens"] > 0
    copied = next(r for r in fake_upstream.received if r.body["model"] == "ft-shadow-model")
    assert carried(copied.headers["traceparent"]) == (copy.trace_id, copy.span_id, True)


async def test_a_responses_request_is_a_chat_span_of_the_responses_api(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, collector: Collector
) -> None:
    proxy = await start_proxy(traced(basic_config(fake_upstream.url), collector))

    answer = await proxy.client().responses.create(model="chat", input="Hello")

    spans = await spans_of(collector, 2)
    server, upstream = one(spans, "server"), one(spans, "client")
    assert server.name == "chat chat"
    assert server.attributes["gen_ai.operation.name"] == "chat"
    assert server.attributes["tuned_proxy.api"] == "responses"
    # A compatible upstream gets the Responses API through the bridge, as chat completions.
    assert upstream.attributes["openai.api.type"] == "chat_completions"
    assert answer.usage is not None
    assert server.attributes["gen_ai.usage.output_tokens"] == answer.usage.output_tokens


@pytest.mark.parametrize("stream", [False, True])
async def test_nothing_of_the_content_arguments_or_keys_is_exported(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, collector: Collector, stream: bool
) -> None:
    config = basic_config(fake_upstream.url)
    config["routes"]["chat"]["variants"][0]["model"] = "ft-tool"
    proxy = await start_proxy(traced(config, collector))
    messages: Any = [{"role": "user", "content": f"look up order {SECRET}"}]
    tools: Any = [TOOL]
    client = proxy.client()

    if stream:
        chunks = await client.chat.completions.create(
            model="chat", messages=messages, tools=tools, stream=True
        )
        arguments = "".join(
            [
                call.function.arguments or ""
                async for chunk in chunks
                for choice in chunk.choices
                for call in choice.delta.tool_calls or []
                if call.function is not None
            ]
        )
    else:
        answer = await client.chat.completions.create(model="chat", messages=messages, tools=tools)
        call = (answer.choices[0].message.tool_calls or [])[0]
        arguments = call.function.arguments

    assert SECRET in arguments  # what the answer says is what must not be exported
    spans = await spans_of(collector, 2)
    assert one(spans, "server").attributes["tuned_proxy.tool_calls"] == ["lookup_order"]
    assert one(spans, "server").attributes["gen_ai.response.finish_reasons"] == ["tool_calls"]
    exported = b"".join(collector.payloads)
    for secret in (SECRET, arguments, "look up order", CLIENT_KEY, UPSTREAM_KEY):
        assert secret.encode() not in exported


async def test_a_sample_of_zero_records_nothing_but_still_carries_the_trace(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, collector: Collector
) -> None:
    proxy = await start_proxy(traced(basic_config(fake_upstream.url), collector, sample=0))

    await proxy.client().chat.completions.create(model="chat", messages=MESSAGES)
    unrecorded = carried(fake_upstream.last.headers["traceparent"])
    # The client's sampled flag decides for its own trace.
    traced_client = proxy.client(default_headers={"traceparent": TRACEPARENT})
    await traced_client.chat.completions.create(model="chat", messages=MESSAGES)

    spans = await spans_of(collector, 2)
    assert not unrecorded[2]  # not sampled, and not exported
    assert unrecorded[0] not in {span.trace_id for span in spans}
    assert {span.trace_id for span in spans} == {CLIENT_TRACE}
    assert proxy.runner is not None
    await proxy.runner.cleanup()  # flushes: nothing else was waiting
    assert len(collector.spans) == 2


async def test_tracing_off_builds_nothing_and_sends_no_traceparent(proxy: RunningProxy) -> None:
    before = export_threads()
    client = proxy.client(default_headers={"traceparent": TRACEPARENT})

    await client.chat.completions.create(model="chat", messages=MESSAGES)

    assert proxy.app[STATE].tracing is None
    assert export_threads() == before
    assert not any(thread.name == "tuned-proxy-trace-flush" for thread in threading.enumerate())


async def test_requests_succeed_while_the_collector_refuses_and_drops_are_counted(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1")  # give up on a batch at once
    config = basic_config(fake_upstream.url)
    config["tracing"] = {"otlp_endpoint": f"http://127.0.0.1:{closed_port()}"}
    proxy = await start_proxy(config)
    client = proxy.client()

    for _ in range(3):
        await client.chat.completions.create(model="chat", messages=MESSAGES)

    def dropped() -> float:
        samples = samples_of(proxy)
        return total(samples, "tuned_proxy_trace_spans_dropped_total", reason="export_failed")

    await eventually(lambda: dropped() == 6, "the 6 spans counted as dropped", timeout_s=15)


async def test_a_full_export_queue_drops_the_spans_beyond_it_and_counts_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    stalled = await start_collector(stalled=True)  # takes the first batch and never answers
    dropped: dict[str, int] = {}

    def count(reason: str, spans: int) -> None:
        dropped[reason] = dropped.get(reason, 0) + spans

    tracing = Tracing(TracingConfig(otlp_endpoint=stalled.url), count)
    ended = MAX_QUEUED_SPANS + 2 * MAX_EXPORT_BATCH
    try:
        for number in range(ended):
            tracing.start_request({}, f"req_{number}").finish("chat", {}, [])
            await asyncio.sleep(0)
        # Everything beyond what the queue holds (with the batch the exporter took) is dropped.
        assert 0 < dropped["queue_full"] <= ended - MAX_QUEUED_SPANS
    finally:
        assert stalled.stall is not None
        assert stalled.runner is not None
        stalled.stall.set()
        await close_tracing(tracing)
        await stalled.runner.cleanup()


async def test_a_reload_that_changes_tracing_swaps_the_provider(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, collector: Collector
) -> None:
    baseline = export_threads()
    proxy = await start_proxy(basic_config(fake_upstream.url))
    state = proxy.app[STATE]
    client = proxy.client()

    def reload_with(config: dict[str, Any]) -> None:
        proxy.config_path.write_text(yaml.safe_dump(config))
        assert reload_config(state, proxy.config_path)

    reload_with(traced(basic_config(fake_upstream.url), collector, service_name="first"))
    first = state.tracing
    assert first is not None
    assert export_threads() == baseline + 1
    await client.chat.completions.create(model="chat", messages=MESSAGES)
    reload_with(traced(basic_config(fake_upstream.url), collector, service_name="first"))
    assert state.tracing is first  # the same tracing: the same provider
    reload_with(traced(basic_config(fake_upstream.url), collector, service_name="second"))
    assert state.tracing is not first
    await client.chat.completions.create(model="chat", messages=MESSAGES)

    spans = await spans_of(collector, 4)
    assert sorted(span.service for span in spans) == ["first", "first", "second", "second"]
    await eventually(lambda: export_threads() == baseline + 1, "the first provider shut down")
    reload_with(basic_config(fake_upstream.url))
    assert state.tracing is None
    await eventually(lambda: export_threads() == baseline, "the second provider shut down")


@pytest.mark.slow
async def test_the_log_line_names_the_trace_and_sigterm_flushes_the_spans(
    tmp_path: Path,
    fake_upstream: FakeUpstream,
    collector: Collector,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_BSP_SCHEDULE_DELAY")  # the SDK's 5 s: only the flush sends them
    for name, value in key_env().items():
        monkeypatch.setenv(name, value)
    shutil.copytree(POLICIES, tmp_path / "policies")
    path = tmp_path / "tuned-proxy.yaml"
    path.write_text(yaml.safe_dump(traced(basic_config(fake_upstream.url), collector)))
    headers = {"Authorization": f"Bearer {CLIENT_KEY}", "x-request-id": "traced-1"}

    async with serving(path) as server, aiohttp.ClientSession() as session:
        body = {"model": "chat", "messages": MESSAGES}
        async with session.post(f"{server.url}{CHAT}", json=body, headers=headers) as response:
            assert response.status == 200
        line = await read_until(server.proc, server.lines, "request")
        assert collector.spans == []
        server.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.proc.wait(), 20) == 0

    spans = collector.spans
    assert len(spans) == 2
    assert line["request_id"] == "traced-1"
    assert {span.trace_id for span in spans} == {line["trace_id"]}
    assert one(spans, "server").attributes["tuned_proxy.request_id"] == "traced-1"
    assert "trace_id" in json.dumps(line)
