"""Teacher agreement: the outcome of two answers' calls, the comparison in either order, and
end to end a comparing shadow on the fake model, counted in `/metrics`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from proxy.agreement import Comparison, agreement
from proxy.record import RequestRecord
from tests.support.configs import POLICIES, basic_config
from tests.support.metrics import samples_of, total
from tests.support.servers import FakeUpstream, StartProxy
from tests.support.waiting import eventually

LOOKUP = ("lookup_order", '{"order_id": "ORD-1", "verbose": true}')
SEARCH = ("search_knowledge_base", '{"query": "returns"}')


@pytest.mark.parametrize(
    ("served", "shadow", "outcome"),
    [
        ([LOOKUP], [("lookup_order", '{"verbose":true,"order_id":"ORD-1"}')], "same_calls"),
        ([LOOKUP, SEARCH], [SEARCH, LOOKUP], "same_calls"),  # order does not count
        ([LOOKUP], [("lookup_order", '{"order_id": "ORD-2"}')], "same_functions"),
        ([LOOKUP], [("lookup_order", "not json")], "same_functions"),
        ([LOOKUP], [SEARCH], "different"),
        ([LOOKUP], [LOOKUP, LOOKUP], "different"),  # twice is not once
        ([LOOKUP], [], "different"),
        ([], [], "no_calls"),
        (None, [LOOKUP], "error"),
        ([LOOKUP], None, "error"),
    ],
)
def test_the_outcome_of_two_answers(
    served: list[tuple[str, str]] | None, shadow: list[tuple[str, str]] | None, outcome: str
) -> None:
    assert agreement(served, shadow) == outcome


def answer(status: int, *calls: tuple[str, str]) -> RequestRecord:
    record = RequestRecord(request_id="req", path="/v1/chat/completions", status=status)
    record.call_arguments = list(calls)
    return record


@pytest.mark.parametrize("shadow_first", [True, False])
def test_the_second_answer_to_arrive_counts_once(shadow_first: bool) -> None:
    counted: list[tuple[str, str]] = []
    comparison = Comparison("chat", lambda route, outcome: counted.append((route, outcome)))
    arrivals = [
        lambda: comparison.served_answer(answer(200, LOOKUP)),
        lambda: comparison.shadow_answer(answer(200, LOOKUP)),
    ]
    for arrive in reversed(arrivals) if shadow_first else arrivals:
        assert counted == []
        arrive()
    assert counted == [("chat", "same_calls")]


@pytest.mark.parametrize("gone", [False, True])
def test_a_served_answer_that_failed_or_was_abandoned_is_an_error(gone: bool) -> None:
    record = answer(200, LOOKUP) if gone else answer(502)
    record.client_disconnected = gone
    counted: list[str] = []
    comparison = Comparison("chat", lambda route, outcome: counted.append(outcome))
    comparison.served_answer(record)
    comparison.shadow_answer(answer(200, LOOKUP))
    assert counted == ["error"]


# ----------------------------------------------------------------------------- end to end

TOOLS = json.loads((POLICIES / "support.tools.json").read_text())
QUESTION = "Where is my order ORD-123456?"
AGREEMENT = "tuned_proxy_shadow_agreement_total"


def write_policy(folder: Path, name: str, slim: str) -> None:
    """A policy on the support tools whose slimming of `lookup_order` makes the fake model
    answer otherwise: `omit_function` (another function), `omit_parameters` (no arguments)."""
    (folder / f"{name}.yaml").write_text(
        "training_tools: support.tools.json\n"
        f"tools: {{mode: slim, slim: {{functions: {{lookup_order: {slim}}}}}}}\n"
    )


@pytest.mark.parametrize(
    ("shadow", "tools", "outcome"),
    [
        ({"model": "ft-model"}, TOOLS, "same_calls"),
        ({"model": "ft-model", "policy": "no-params"}, TOOLS, "same_functions"),
        ({"model": "ft-model", "policy": "no-lookup"}, TOOLS, "different"),
        ({"model": "ft-model"}, None, "no_calls"),
        ({"model": "ft-error-500"}, TOOLS, "error"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_a_comparing_shadow_counts_its_agreement_with_the_served_answer(
    fake_upstream: FakeUpstream,
    start_proxy: StartProxy,
    tmp_path: Path,
    shadow: dict[str, Any],
    tools: Any,
    outcome: str,
    stream: bool,
) -> None:
    write_policy(tmp_path / "policies", "no-params", "omit_parameters")
    write_policy(tmp_path / "policies", "no-lookup", "omit_function")
    spec = {"upstream": "fake", "sample": 1.0, "compare": "tool_calls", **shadow}
    proxy = await start_proxy(basic_config(fake_upstream.url, shadow=spec))
    client = proxy.client()
    messages: Any = [{"role": "user", "content": QUESTION}]
    asked = {"tools": tools} if tools else {}
    if stream:
        chunks = await client.chat.completions.create(
            model="chat", messages=messages, stream=True, **asked
        )
        async for _ in chunks:
            pass
    else:
        completion = await client.chat.completions.create(model="chat", messages=messages, **asked)
        assert bool(completion.choices[0].message.tool_calls) == bool(tools)
    await eventually(
        lambda: total(samples_of(proxy), AGREEMENT, route="chat") == 1, "one comparison counted"
    )
    assert total(samples_of(proxy), AGREEMENT, route="chat", outcome=outcome) == 1


@pytest.mark.parametrize(
    ("model", "stream"),
    [("ft-stream-error", True), ("ft-bad-json", False), ("ft-malformed-json", False)],
)
async def test_a_shadow_answer_that_is_not_whole_is_compared_as_an_error(
    fake_upstream: FakeUpstream, start_proxy: StartProxy, model: str, stream: bool
) -> None:
    """A shadow's 200 that breaks (an error event in its stream, a body that is not JSON) is
    no answer to agree or disagree with."""
    spec = {"upstream": "fake", "model": model, "sample": 1.0, "compare": "tool_calls"}
    proxy = await start_proxy(basic_config(fake_upstream.url, shadow=spec))
    client = proxy.client()
    messages: Any = [{"role": "user", "content": QUESTION}]
    if stream:
        chunks = await client.chat.completions.create(
            model="chat", messages=messages, stream=True, tools=TOOLS
        )
        async for _ in chunks:
            pass
    else:
        await client.chat.completions.create(model="chat", messages=messages, tools=TOOLS)
    await eventually(
        lambda: total(samples_of(proxy), AGREEMENT, route="chat") == 1, "one comparison counted"
    )
    assert total(samples_of(proxy), AGREEMENT, route="chat", outcome="error") == 1


async def test_a_shadow_without_compare_counts_no_agreement(
    fake_upstream: FakeUpstream, start_proxy: StartProxy
) -> None:
    spec = {"upstream": "fake", "model": "ft-model", "sample": 1.0}
    proxy = await start_proxy(basic_config(fake_upstream.url, shadow=spec))
    client = proxy.client()
    await client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": QUESTION}], tools=TOOLS
    )
    await eventually(
        lambda: total(samples_of(proxy), "tuned_proxy_shadow_requests_total", outcome="ok") == 1,
        "the shadow answered",
    )
    assert total(samples_of(proxy), AGREEMENT) == 0


async def test_the_responses_api_is_compared_too(
    fake_upstream: FakeUpstream, start_proxy: StartProxy
) -> None:
    spec = {"upstream": "fake", "model": "ft-model", "sample": 1.0, "compare": "tool_calls"}
    config = basic_config(fake_upstream.url, shadow=spec)
    config["upstreams"]["fake"]["responses"] = "native"
    proxy = await start_proxy(config)
    flat: Any = [{"type": "function", "strict": False, **tool["function"]} for tool in TOOLS]
    response = await proxy.client().responses.create(model="chat", input=QUESTION, tools=flat)
    assert response.output[0].type == "function_call"
    await eventually(
        lambda: total(samples_of(proxy), AGREEMENT, outcome="same_calls") == 1,
        "the Responses answers agree",
    )
