"""Properties of the rewrite over arbitrary JSON-shaped requests (hypothesis).

Whatever a client sends, the rewrite either answers a 400 (InvalidRequest) or returns a
body; it never mutates its input, gives the same answer twice, and a second rewrite of its
own output changes nothing more.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy import jsonutil
from proxy.errors import InvalidRequest
from proxy.request import ToolLists
from proxy.rewrite import ACTIONS, RewriteResult, rewrite
from proxy.rewrite.policy import PASSTHROUGH, Policy, PolicySpec, build_policy
from tests.support.strategies import TRAINING, bodies


def _policy(name: str, spec: dict[str, Any], tools: list[dict[str, Any]] = TRAINING) -> Policy:
    return build_policy(name, PolicySpec.model_validate(spec), tools)


POLICIES = [
    PASSTHROUGH,
    _policy("defaults", {}, []),
    _policy("identical-reject", {"tools": {"mode": "identical", "unknown": "reject"}}),
    _policy(
        "identical-everything",
        {
            "tools": {"mode": "identical", "unknown": "drop"},
            "system_prompt": {"mode": "replace", "text": "Trained prompt."},
            "parallel_tool_calls": False,
            "tool_choice": {"on_user_turn": "required"},
            "logit_bias": {"tokens": {"316": 5}, "when": "always", "sampling": "drop"},
        },
    ),
    _policy(
        "slim",
        {
            "tools": {
                "mode": "slim",
                "slim": {
                    "default": "omit_descriptions",
                    "functions": {"issue_refund": "omit_parameters", "escalate": "omit_function"},
                    "drop_strict": True,
                },
            },
            "system_prompt": {"mode": "prepend", "text": "Trained prompt."},
            "logit_bias": {"tokens": {"316": 5}, "sampling": "skip_bias"},
            "parallel_tool_calls": True,
        },
    ),
    _policy(
        "slim-untrained",
        {
            "tools": {"mode": "slim", "slim": {"default": "omit_parameters"}},
            "system_prompt": {"mode": "if_missing", "text": "Trained prompt."},
            "logit_bias": {"tokens": {"316": 5, "17": -3}},
        },
        [],
    ),
    _policy("slim-omit-all", {"tools": {"mode": "slim", "slim": {"default": "omit_function"}}}),
    _policy("passthrough-drop", {"tools": {"unknown": "drop"}, "parallel_tool_calls": False}),
]

policies = st.sampled_from(POLICIES)

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _rewrite_or_none(body: dict[str, Any], policy: Policy) -> RewriteResult | None:
    """The result, or None for a 400; any other exception fails the test."""
    try:
        return rewrite(body, policy)
    except InvalidRequest as refused:
        error = refused
    # a 400 always names the field it is about
    assert isinstance(error.param, str)
    assert error.param
    return None


@SETTINGS
@given(body=bodies, policy=policies)
def test_only_invalid_request_escapes_and_input_is_untouched(
    body: dict[str, Any], policy: Policy
) -> None:
    original = copy.deepcopy(body)
    original_bytes = jsonutil.dumps(body)
    result = _rewrite_or_none(body, policy)
    assert body == original
    assert jsonutil.dumps(body) == original_bytes
    if result is not None:
        assert all(change.action in ACTIONS for change in result.changes)
        assert all(change.bytes_removed >= 0 for change in result.changes)
        assert result.body is not body


@SETTINGS
@given(body=bodies, policy=policies)
def test_deterministic(body: dict[str, Any], policy: Policy) -> None:
    first = _rewrite_or_none(body, policy)
    second = _rewrite_or_none(body, policy)
    if first is None or second is None:
        assert first is second
        return
    assert jsonutil.dumps(first.body) == jsonutil.dumps(second.body)
    assert first.changes == second.changes
    assert first.legacy_functions == second.legacy_functions


@SETTINGS
@given(body=bodies, policy=policies)
def test_idempotent(body: dict[str, Any], policy: Policy) -> None:
    once = _rewrite_or_none(body, policy)
    if once is None:
        return
    twice = rewrite(once.body, policy)
    assert jsonutil.dumps(twice.body) == jsonutil.dumps(once.body)
    # a skipped bias is reported each time it is skipped, and a tool the model was not
    # trained on each time it passes; nothing else may happen again
    assert {change.action for change in twice.changes} <= {
        "logit_bias_skipped",
        "tool_unknown_passed",
    }


@SETTINGS
@given(body=bodies)
def test_passthrough_returns_the_body_unchanged(body: dict[str, Any]) -> None:
    result = rewrite(body, PASSTHROUGH)
    assert jsonutil.dumps(result.body) == jsonutil.dumps(body)
    assert result.changes == []


@SETTINGS
@given(body=bodies, policy=policies)
def test_shared_tools_rewrite_as_plain_ones(body: dict[str, Any], policy: Policy) -> None:
    """The parse stage's shared tool lists, and the memo kept against them, change nothing."""
    plain = _rewrite_or_none(body, policy)
    tool_lists = ToolLists()
    for _ in range(2):  # the first fills the memo, the second is served from it
        shared = body
        if "tools" in body:
            shared = {**body, "tools": tool_lists.parse(jsonutil.dumps(body["tools"]))}
        result = _rewrite_or_none(shared, policy)
        if plain is None or result is None:
            assert plain is result
            continue
        assert jsonutil.dumps(result.body) == jsonutil.dumps(plain.body)
        assert list(result.body) == list(plain.body)
        assert result.changes == plain.changes
        assert result.legacy_functions == plain.legacy_functions
