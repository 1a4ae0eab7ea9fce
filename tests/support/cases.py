"""The rewrite cases' folders read as the tests take them: `tests/cases/` (chat) and
`tests/responses_cases/` (the Responses API) share their layout and what a second rewrite is
expected to report again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from proxy import jsonutil
from proxy.policies import load_policy
from proxy.rewrite.capabilities import SERVER_CAPABILITIES
from proxy.rewrite.policy import Policy


def load_case(case: Path) -> tuple[Policy, dict[str, Any], dict[str, Any]]:
    policy = served_policy(case)
    request = jsonutil.loads((case / "request.json").read_bytes())
    expected = jsonutil.loads((case / "expected.json").read_bytes())
    return policy, request, expected


def served_policy(case: Path) -> Policy:
    """The case's policy, as served by the upstream its `upstream.yaml` describes (`server`
    and `capabilities` keys, as in the config), else by OpenAI's API."""
    policy = load_policy(case / "policy.yaml", case.name)
    described = case / "upstream.yaml"
    if not described.is_file():
        return policy
    spec = yaml.safe_load(described.read_text())
    known = SERVER_CAPABILITIES[spec.get("server", "openai")]
    return policy.serving_on(known.with_overrides(**spec.get("capabilities", {})))


# What a second rewrite reports again: a lever the request still cannot have (a bias skipped
# or unsupported, a choice the upstream cannot honour), or a field the policy sets and the
# upstream's capabilities then remove, each time.
RECOUNTED = {
    "logit_bias_skipped",
    "logit_bias_unsupported",
    "tool_choice_required_unsupported",
    "parallel_tool_calls_set",
    "parallel_tool_calls_unsupported",
    "tool_unknown_passed",
}


# On an upstream without `strict`, a training definition's `strict` is removed every time,
# so the request never equals the definition and `identical` restores it every time.
UNDONE_BY_CAPABILITIES = {"tool_drift_undone", "strict_unsupported"}


def expected_changes(expected: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"detail": "", "bytes_removed": 0, **change} for change in expected["changes"]]
