"""What drifted between an application's tool and its training definition: the findings
`tuned-proxy rewrite` prints for every tool an `identical` policy restores."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from proxy.cli import main
from proxy.rewrite.drift import describe_drift

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "policies" / "tuned-proxy.example.yaml"
TRAINED = {
    "name": "lookup_order",
    "description": "Fetch one order.",
    "parameters": {
        "type": "object",
        "properties": {
            "order_id": {"type": "string", "description": "The order number."},
            "include": {"type": "string", "enum": ["items", "payments"]},
        },
        "required": ["order_id"],
    },
    "strict": True,
}


def edited(change: Any) -> dict[str, Any]:
    function = copy.deepcopy(TRAINED)
    change(function)
    return function


@pytest.mark.parametrize(
    ("change", "findings"),
    [
        (lambda f: f.update(description="Get an order."), ["description edited"]),
        (lambda f: f.pop("description"), ["description removed"]),
        (
            lambda f: f["parameters"]["properties"].update(locale={"type": "string"}),
            ["parameters added: locale"],
        ),
        (
            lambda f: f["parameters"]["properties"].pop("include"),
            ["parameters removed: include"],
        ),
        (lambda f: f["parameters"].update(required=["include"]), ["required: +include -order_id"]),
        (
            lambda f: f["parameters"]["properties"]["order_id"].update(type="integer"),
            ["order_id: type string → integer"],
        ),
        (
            lambda f: f["parameters"]["properties"]["include"].update(enum=["items"]),
            ["include: enum changed"],
        ),
        (
            lambda f: f["parameters"]["properties"]["order_id"].update(description="Id."),
            ["order_id: description edited"],
        ),
        (
            lambda f: f["parameters"]["properties"]["order_id"].update(maxLength=9),
            ["order_id: schema changed"],
        ),
        (lambda f: f.pop("strict"), ["strict: true → absent"]),
        (lambda f: None, []),
    ],
)
def test_each_kind_of_drift_is_named(change: Any, findings: list[str]) -> None:
    assert describe_drift(edited(change), TRAINED) == findings


def test_several_drifts_are_listed_in_order() -> None:
    def change(function: dict[str, Any]) -> None:
        function["description"] = "new"
        function["parameters"]["properties"]["locale"] = {"type": "string"}
        function["parameters"]["required"].append("locale")

    assert describe_drift(edited(change), TRAINED) == [
        "description edited",
        "parameters added: locale",
        "required: +locale",
    ]


def test_rewrite_says_what_drifted_and_what_passed_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tools = json.loads((REPO / "policies" / "support.tools.json").read_text())[:2]
    drifted = copy.deepcopy(tools)
    function = drifted[1]["function"]
    function["description"] += " (edited)"
    function["parameters"]["properties"]["locale"] = {"type": "string"}
    drifted.append({"type": "function", "function": {"name": "play_music", "parameters": {}}})
    request = tmp_path / "request.json"
    request.write_text(
        json.dumps(
            {
                "model": "support-agent",
                "messages": [{"role": "user", "content": "x"}],
                "tools": drifted,
            }
        )
    )
    args = ["rewrite", "-c", str(EXAMPLE), "--model", "support-agent", "--variant", "ft-full"]
    assert main([*args, str(request)]) == 0
    err = capsys.readouterr().err
    name = function["name"]
    assert f"  tool_drift_undone {name}: description edited; parameters added: locale\n" in err
    assert "  tool_unknown_passed play_music\n" in err
    assert main([*args, "--json", str(request)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["drift"] == {name: ["description edited", "parameters added: locale"]}
    actions = [change["action"] for change in report["changes"]]
    assert actions.count("tool_drift_undone") == 1
    assert "tool_unknown_passed" in actions
    assert report["body"]["tools"][1] == tools[1]  # the training definition went out
