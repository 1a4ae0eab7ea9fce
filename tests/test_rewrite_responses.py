"""The rewrite of Responses API bodies, driven by data: one folder per behaviour under
`tests/responses_cases/`, laid out as `tests/cases/` (see test_rewrite.py), rewritten with
`rewrite_responses`. The policies are the chat ones: their training tools, in chat's shape on
disk, are served in the flat shape."""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from proxy import jsonutil
from proxy.errors import InvalidRequest
from proxy.policies import load_policy
from proxy.request import ToolLists
from proxy.rewrite import ACTIONS, rewrite_responses
from proxy.rewrite.policy import Policy
from tests.support.cases import (
    RECOUNTED,
    UNDONE_BY_CAPABILITIES,
    expected_changes,
    load_case,
)

CASES = Path(__file__).parent / "responses_cases"
CASE_DIRS = sorted(path for path in CASES.iterdir() if path.is_dir())


def check(body: dict[str, Any], policy: Policy, expected: dict[str, Any]) -> None:
    if "error" in expected:
        with pytest.raises(InvalidRequest) as refused:
            rewrite_responses(body, policy)
        assert {"param": refused.value.param, "code": refused.value.code} == expected["error"]
        return
    result = rewrite_responses(body, policy)
    assert jsonutil.dumps(result.body) == jsonutil.dumps(expected["body"])
    assert [asdict(change) for change in result.changes] == expected_changes(expected)


@pytest.mark.parametrize("case", CASE_DIRS, ids=lambda path: path.name)
def test_case(case: Path) -> None:
    policy, request, expected = load_case(case)
    original = copy.deepcopy(request)
    check(request, policy, expected)
    assert request == original  # the client's body is untouched: fallbacks start from it


@pytest.mark.parametrize("case", CASE_DIRS, ids=lambda path: path.name)
def test_case_with_shared_tools_memoized(case: Path) -> None:
    """The same outcome when the tools are a shared list: first (memo filled) and again."""
    policy, request, expected = load_case(case)
    tool_lists = ToolLists()
    for _ in range(2):
        body = request
        if "tools" in request:
            body = {**request, "tools": tool_lists.parse(jsonutil.dumps(request["tools"]))}
        check(body, policy, expected)


@pytest.mark.parametrize("case", CASE_DIRS, ids=lambda path: path.name)
def test_case_is_idempotent(case: Path) -> None:
    policy, request, expected = load_case(case)
    if "error" in expected:
        for _ in range(2):  # refused alike every time
            with pytest.raises(InvalidRequest) as refused:
                rewrite_responses(request, policy)
            assert refused.value.param == expected["error"]["param"]
        return
    once = rewrite_responses(request, policy)
    twice = rewrite_responses(once.body, policy)
    assert jsonutil.dumps(twice.body) == jsonutil.dumps(once.body)
    allowed = RECOUNTED | (UNDONE_BY_CAPABILITIES if (case / "upstream.yaml").is_file() else set())
    assert {change.action for change in twice.changes} <= allowed


def test_cases_cover_every_responses_step() -> None:
    actions = set()
    for case in CASE_DIRS:
        expected = jsonutil.loads((case / "expected.json").read_bytes())
        for change in expected.get("changes", []):
            assert change["action"] in ACTIONS, case.name
            actions.add(change["action"])
    assert {
        "tool_drift_undone",
        "tool_slimmed",
        "tool_omitted",
        "tools_emptied",
        "system_prompt_replaced",
        "system_prompt_inserted",
        "system_prompt_prepended",
        "parallel_tool_calls_set",
        "tool_choice_forced",
        "logit_bias_unsupported",
    } <= actions


def test_training_tools_are_converted_once_at_load() -> None:
    policy = load_policy(CASES / "identical_flat_tools" / "policy.yaml", "p")
    flat = policy.flat_training_tools["issue_refund"]
    nested = policy.training_tools["issue_refund"]["function"]
    assert list(flat) == ["type", "name", "description", "strict", "parameters"]
    assert flat["parameters"] is nested["parameters"]  # shared, not copied
    assert flat["strict"] is True
    assert policy.flat_training_tools["lookup_order"]["strict"] is False  # chat's default
