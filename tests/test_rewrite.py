"""The rewrite engine, driven by data: one folder per behaviour under `tests/cases/`.

A case folder holds `policy.yaml` (its `training_tools` resolved beside it), `request.json`
and `expected.json`, which is either
  {"body": <the rewritten body>, "changes": [{"action", "detail"?, "bytes_removed"?}, …],
   "legacy_functions"?: true}
or, for a request the policy refuses,
  {"error": {"param": …, "code": …}}.
Bodies are compared as serialised bytes, so key order counts (the training definitions
must reach the model byte for byte).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from proxy import jsonutil
from proxy.errors import InvalidRequest
from proxy.request import ToolLists
from proxy.rewrite import ACTIONS, Change, RewriteResult, rewrite
from proxy.rewrite.policy import PASSTHROUGH
from tests.support.cases import (
    RECOUNTED,
    UNDONE_BY_CAPABILITIES,
    expected_changes,
    load_case,
)

CASES = Path(__file__).parent / "cases"
CASE_DIRS = sorted(path for path in CASES.iterdir() if path.is_dir())


@pytest.mark.parametrize("case", CASE_DIRS, ids=lambda path: path.name)
def test_case(case: Path) -> None:
    policy, request, expected = load_case(case)
    original = copy.deepcopy(request)
    original_bytes = jsonutil.dumps(request)

    if "error" in expected:
        with pytest.raises(InvalidRequest) as refused:
            rewrite(request, policy)
        assert {"param": refused.value.param, "code": refused.value.code} == expected["error"]
    else:
        result = rewrite(request, policy)
        assert result.body == expected["body"]
        assert jsonutil.dumps(result.body) == jsonutil.dumps(expected["body"])
        assert [asdict(change) for change in result.changes] == expected_changes(expected)
        assert result.legacy_functions == expected.get("legacy_functions", False)

    # the client's body is untouched: fallbacks start again from it
    assert request == original
    assert jsonutil.dumps(request) == original_bytes


def test_cases_exist() -> None:
    assert len(CASE_DIRS) >= 40


def test_every_case_names_known_actions() -> None:
    for case in CASE_DIRS:
        expected = jsonutil.loads((case / "expected.json").read_bytes())
        for change in expected.get("changes", []):
            assert change["action"] in ACTIONS, case.name


def test_passthrough_changes_nothing_even_legacy() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "functions": [{"name": "f"}],
        "tools": "not even a list",
    }
    result = rewrite(body, PASSTHROUGH)
    assert result.body == body
    assert result.changes == []
    assert result.legacy_functions is False


def test_result_body_is_a_new_top_level_dict() -> None:
    """The caller sets `model` on the result; that must not reach the client's body."""
    body = {"model": "support-agent", "messages": [{"role": "user", "content": "hi"}]}
    result = rewrite(body, PASSTHROUGH)
    result.body["model"] = "ft-model"
    assert body["model"] == "support-agent"


def test_tool_bytes_removed_sums_the_changes() -> None:
    policy, request, _ = load_case(CASES / "slim_all_tools_omitted")
    result = rewrite(request, policy)
    sizes = [len(jsonutil.dumps(tool)) for tool in request["tools"]]
    assert result.tool_bytes_removed == sum(sizes)
    assert RewriteResult(body={}, changes=[Change("x", bytes_removed=3)]).tool_bytes_removed == 3


def test_identical_sends_the_training_objects() -> None:
    policy, request, _ = load_case(CASES / "identical_sends_training_bytes")
    result = rewrite(request, policy)
    assert result.body["tools"][0] is policy.training_tools["lookup_order"]


def test_slim_shares_the_prepared_definitions() -> None:
    """Slimming is a lookup per request: the definitions were prepared at load time."""
    policy, request, _ = load_case(CASES / "slim_descriptions_nested_schemas")
    result = rewrite(request, policy)
    prepared = policy.slimmed_tools["create_ticket"].definition
    assert result.body["tools"][0] is prepared


def test_untouched_values_are_shared_not_copied() -> None:
    policy, request, _ = load_case(CASES / "system_prompt_replace")
    result = rewrite(request, policy)
    assert result.body["messages"][1] is request["messages"][1]


def refusal(exc: InvalidRequest) -> dict[str, Any]:
    """What a client is told of a refused request: its status and its OpenAI error body."""
    return {"status": exc.status, **exc.body()["error"]}


@pytest.mark.parametrize("case", CASE_DIRS, ids=lambda path: path.name)
def test_case_is_idempotent(case: Path) -> None:
    """A rewrite of the rewrite changes nothing more; a refusal is the same every time, and
    leaves the request as it was (a fallback starts again from it)."""
    policy, request, expected = load_case(case)
    if "error" in expected:
        original = copy.deepcopy(request)
        original_bytes = jsonutil.dumps(request)
        refusals = []
        for _ in range(3):
            with pytest.raises(InvalidRequest) as refused:
                rewrite(request, policy)
            refusals.append(refusal(refused.value))
            assert request == original
            assert jsonutil.dumps(request) == original_bytes
        assert refusals[0]["status"] == 400
        assert {"param": refusals[0]["param"], "code": refusals[0]["code"]} == expected["error"]
        assert refusals[1:] == refusals[:1] * 2
        return
    once = rewrite(request, policy)
    twice = rewrite(once.body, policy)
    assert jsonutil.dumps(twice.body) == jsonutil.dumps(once.body)
    allowed = RECOUNTED | (UNDONE_BY_CAPABILITIES if (case / "upstream.yaml").is_file() else set())
    assert {change.action for change in twice.changes} <= allowed


def with_shared_tools(body: dict[str, Any], tool_lists: ToolLists) -> dict[str, Any]:
    """`body` as the parse stage gives it: its `tools` the shared list for their text."""
    if "tools" not in body:
        return body
    return {**body, "tools": tool_lists.parse(jsonutil.dumps(body["tools"]))}


@pytest.mark.parametrize("case", CASE_DIRS, ids=lambda path: path.name)
def test_case_with_shared_tools_memoized(case: Path) -> None:
    """The same outcome when the tools are a shared list: first (memo filled) and again (hit)."""
    policy, request, expected = load_case(case)
    tool_lists = ToolLists()
    for _ in range(2):
        body = with_shared_tools(request, tool_lists)
        if "error" in expected:
            with pytest.raises(InvalidRequest) as refused:
                rewrite(body, policy)
            assert {"param": refused.value.param, "code": refused.value.code} == expected["error"]
            continue
        result = rewrite(body, policy)
        assert jsonutil.dumps(result.body) == jsonutil.dumps(expected["body"])
        assert [asdict(change) for change in result.changes] == expected_changes(expected)
    assert request == load_case(case)[1]


def test_a_replaced_policy_starts_with_its_own_memo() -> None:
    policy, request, _ = load_case(CASES / "slim_descriptions_nested_schemas")
    rewrite(with_shared_tools(request, ToolLists()), policy)
    assert len(policy.tool_rewrites) == 1
    assert len(dataclasses.replace(policy).tool_rewrites) == 0


def test_a_shared_list_stripped_of_strict_is_stripped_once() -> None:
    """An upstream without `strict`: the same shared list comes back for the same tools, its
    text serialised once, and its removals reported on every request."""
    policy, request, _ = load_case(CASES / "capability_ollama_levers_removed")
    tool_lists = ToolLists()
    first = rewrite(with_shared_tools(request, tool_lists), policy)
    second = rewrite(with_shared_tools(request, tool_lists), policy)
    assert type(first.body["tools"]) is jsonutil.JsonList
    assert second.body["tools"] is first.body["tools"]
    assert "strict_unsupported" in {change.action for change in first.changes}
    assert second.changes == first.changes
