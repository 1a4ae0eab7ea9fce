"""Fuzzing with generated policies, against the rewrite engine and against the running proxy.

`tests/test_rewrite_properties.py` checks the rewrite over arbitrary requests with a fixed set
of policies; here the policies are generated too (any valid combination of the policy file's
keys, over generated training tools), and the requests also go through the running proxy to
the fake upstream. The properties: nothing but a 400 naming its field escapes the rewrite,
the rewrite is deterministic, and the proxy never answers a 5xx or anything that is not
OpenAI-shaped.

The example counts are small so the suite stays fast; `TUNED_PROXY_FUZZ_SCALE=N` multiplies
them (`tests/bench/fuzz_campaign.py` runs the long campaign).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from proxy import jsonutil
from proxy.errors import ConfigError, InvalidRequest
from proxy.rewrite import ACTIONS, RewriteResult, rewrite
from proxy.rewrite.policy import Policy, PolicySpec, build_policy
from proxy.state import STATE
from tests.support.configs import basic_config
from tests.support.keys import CLIENT_KEY
from tests.support.servers import FakeUpstream, RunningProxy, StartProxy
from tests.support.strategies import bodies, json_values, schemas

SCALE = int(os.environ.get("TUNED_PROXY_FUZZ_SCALE", "1"))
REWRITE_SETTINGS = settings(
    max_examples=300 * SCALE,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
SERVER_SETTINGS = settings(
    max_examples=40 * SCALE,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,  # one proxy serves every example of a test
    ],
)

# The function names `bodies` use, so that requests and training sets overlap.
FUNCTION_NAMES = ["lookup_order", "issue_refund", "escalate", "get_weather", "other"]
SLIM_LEVELS = ["keep", "omit_descriptions", "omit_parameters", "omit_function"]

# ----------------------------------------------------------------------------- policies

training_functions = st.fixed_dictionaries(
    {"name": st.sampled_from(FUNCTION_NAMES)},
    optional={
        "description": st.text(max_size=30),
        "parameters": st.dictionaries(st.sampled_from(["type", "properties", "required"]), schemas)
        | st.just({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}),
        "strict": st.booleans(),
    },
)
training_sets = st.lists(
    st.builds(lambda function: {"type": "function", "function": function}, training_functions),
    max_size=4,
    unique_by=lambda tool: tool["function"]["name"],
)
slim_specs = st.fixed_dictionaries(
    {},
    optional={
        "default": st.sampled_from(SLIM_LEVELS),
        "functions": st.dictionaries(st.sampled_from(FUNCTION_NAMES), st.sampled_from(SLIM_LEVELS)),
        "drop_strict": st.booleans(),
    },
)
system_prompts = st.one_of(
    st.just({"mode": "keep"}),
    st.fixed_dictionaries(
        {
            "mode": st.sampled_from(["replace", "prepend", "if_missing"]),
            "text": st.text(min_size=1, max_size=20),
        }
    ),
)
logit_biases = st.fixed_dictionaries(
    {
        "tokens": st.dictionaries(
            st.text("0123456789", min_size=1, max_size=6), st.integers(-100, 100), min_size=1
        )
    },
    optional={
        "when": st.sampled_from(["tools_auto", "always"]),
        "sampling": st.sampled_from(["drop", "skip_bias", "keep"]),
    },
)
policy_specs = st.fixed_dictionaries(
    {},
    optional={
        "tools": st.fixed_dictionaries(
            {},
            optional={
                "mode": st.sampled_from(["passthrough", "identical", "slim"]),
                "unknown": st.sampled_from(["pass", "drop", "reject"]),
            },
        ),
        "system_prompt": system_prompts,
        "parallel_tool_calls": st.booleans(),
        "legacy_functions": st.sampled_from(["translate", "pass"]),
        "logit_bias": logit_biases,
        "tool_choice": st.fixed_dictionaries({}, optional={"on_user_turn": st.just("required")}),
        "validate_arguments": st.booleans(),
    },
)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    """Any policy the loader accepts; combinations it refuses are not generated."""
    spec = draw(policy_specs)
    if spec.get("tools", {}).get("mode") == "slim":
        spec["tools"]["slim"] = draw(slim_specs)
    training = draw(training_sets)
    try:
        return build_policy("fuzz", PolicySpec.model_validate(spec), training)
    except ConfigError:
        assume(False)
        raise  # unreachable: assume(False) rejects the example


# ----------------------------------------------------------------------------- the rewrite


def rewrite_or_refusal(body: dict[str, Any], policy: Policy) -> RewriteResult | InvalidRequest:
    try:
        return rewrite(body, policy)
    except InvalidRequest as refused:
        return refused


@REWRITE_SETTINGS
@given(body=bodies, policy=policies())
def test_any_policy_rewrites_or_refuses_with_a_400_naming_the_field(
    body: dict[str, Any], policy: Policy
) -> None:
    original = jsonutil.dumps(body)
    outcome = rewrite_or_refusal(body, policy)
    assert jsonutil.dumps(body) == original  # the client's body is never changed
    event("refused" if isinstance(outcome, InvalidRequest) else "rewritten")
    if isinstance(outcome, InvalidRequest):
        assert isinstance(outcome.param, str)
        assert outcome.param
        return
    assert isinstance(jsonutil.loads(jsonutil.dumps(outcome.body)), dict)
    assert all(change.action in ACTIONS for change in outcome.changes)
    assert all(change.bytes_removed >= 0 for change in outcome.changes)


@REWRITE_SETTINGS
@given(body=bodies, policy=policies())
def test_any_policy_rewrites_deterministically(body: dict[str, Any], policy: Policy) -> None:
    first = rewrite_or_refusal(body, policy)
    second = rewrite_or_refusal(copy.deepcopy(body), policy)
    if isinstance(first, InvalidRequest) or isinstance(second, InvalidRequest):
        assert isinstance(first, InvalidRequest)
        assert isinstance(second, InvalidRequest)
        assert (first.param, first.message) == (second.param, second.message)
        return
    assert jsonutil.dumps(first.body) == jsonutil.dumps(second.body)
    assert first.changes == second.changes


# ----------------------------------------------------------------------------- the running proxy

# Fields the proxy reads before the rewrite, in shapes right and wrong.
transport_fields = st.fixed_dictionaries(
    {},
    optional={
        "stream": st.booleans() | json_values,
        "stream_options": st.fixed_dictionaries({}, optional={"include_usage": json_values})
        | json_values,
        "user": json_values,
    },
)
requests = st.builds(
    lambda body, extra: {**body, **extra, "model": "fuzz"}, bodies, transport_fields
)


@pytest.fixture
async def fuzzed(fake_upstream: FakeUpstream, start_proxy: StartProxy) -> RunningProxy:
    return await start_proxy(basic_config(fake_upstream.url))


def serve_with(proxy: RunningProxy, policy: Policy) -> None:
    """Serve route `fuzz` with `policy` from now on, the way a reload swaps the runtime."""
    state = proxy.app[STATE]
    chat = state.runtime.routes["chat"]
    variant = dataclasses.replace(chat.variants[0], policy=policy)
    fuzz = dataclasses.replace(chat, name="fuzz", variants=(variant,))
    state.runtime = dataclasses.replace(state.runtime, routes={"chat": chat, "fuzz": fuzz})


async def post(proxy: RunningProxy, body: dict[str, Any]) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{proxy.url}/v1/chat/completions",
            data=jsonutil.dumps(body),
            headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        ) as response,
    ):
        return response.status, await response.read()


def check_openai_shaped(status: int, raw: bytes, stream: bool) -> None:
    assert status < 500, raw[:500]
    if status >= 400:
        error = json.loads(raw)["error"]
        assert set(error) >= {"message", "type", "param", "code"}
        return
    if not stream:
        assert isinstance(json.loads(raw), dict)
        return
    events = [e[6:] for e in raw.split(b"\n\n") if e.startswith(b"data: ")]
    assert events[-1] == b"[DONE]" or "error" in json.loads(events[-1])


@SERVER_SETTINGS
@given(body=requests, policy=policies())
async def test_the_running_proxy_answers_anything_without_a_5xx_and_deterministically(
    fuzzed: RunningProxy, fake_upstream: FakeUpstream, body: dict[str, Any], policy: Policy
) -> None:
    serve_with(fuzzed, policy)
    before = len(fake_upstream.received)
    status, raw = await post(fuzzed, body)
    event(f"HTTP {status}")  # the campaign's statistics show how many got past each stage
    check_openai_shaped(status, raw, stream=body.get("stream") is True)
    forwarded = len(fake_upstream.received)
    again, _ = await post(fuzzed, body)
    assert again == status
    # Forwarded the second time exactly when it was the first time, and the same bytes.
    assert len(fake_upstream.received) - forwarded == forwarded - before
    if forwarded > before:
        assert fake_upstream.received[-1].body == fake_upstream.received[-2].body
