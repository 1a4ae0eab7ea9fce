"""`tuned-proxy policy init`: a policy written from a training file serves that file's tools
as they are, with the system prompt every example shares."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from proxy.cli import main
from proxy.config import load_config
from proxy.outgoing import outgoing_request
from proxy.policies import load_policy

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "policies" / "support.train.jsonl"


def write_lines(path: Path, examples: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(example) + "\n" for example in examples))
    return path


def test_the_policy_serves_the_training_examples_tools_identically(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policy", "init", str(TRAIN), "--name", "support", "-o", str(tmp_path)]) == 0
    assert "wrote" in capsys.readouterr().out
    policy = load_policy(tmp_path / "support.yaml", "support")
    assert policy.spec.tools.mode == "identical"
    first = json.loads(TRAIN.read_text().splitlines()[0])
    assert policy.spec.system_prompt.text == first["messages"][0]["content"]
    config = {
        "policies_dir": ".",
        "upstreams": {"local": {"kind": "mock"}},
        "routes": {
            "support": {
                "variants": [{"name": "v", "upstream": "local", "model": "m", "policy": "support"}]
            }
        },
    }
    (tmp_path / "tuned-proxy.yaml").write_text(yaml.safe_dump(config))
    assert main(["check", "-c", str(tmp_path / "tuned-proxy.yaml")]) == 0
    target = load_config(tmp_path / "tuned-proxy.yaml").routes["support"].variants[0]
    for line in TRAIN.read_text().splitlines():
        example = json.loads(line)
        result = outgoing_request(target, {"model": "support", **example})
        assert result.body["tools"] == example["tools"]
        actions = {change.action for change in result.changes}
        assert "tool_drift_undone" not in actions
        assert "tool_unknown_passed" not in actions


def tool(name: str) -> dict[str, object]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


def test_values_the_examples_do_not_agree_on_are_left_to_the_client(tmp_path: Path) -> None:
    examples = [
        {
            "messages": [{"role": "system", "content": "A"}, {"role": "user", "content": "x"}],
            "tools": [tool("f")],
            "parallel_tool_calls": False,
        },
        {
            "messages": [{"role": "system", "content": "B"}, {"role": "user", "content": "y"}],
            "tools": [tool("f")],
            "parallel_tool_calls": True,
        },
    ]
    train = write_lines(tmp_path / "train.jsonl", examples)
    assert (
        main(["policy", "init", str(train), "--name", "p", "-o", str(tmp_path), "--mode", "slim"])
        == 0
    )
    text = (tmp_path / "p.yaml").read_text()
    spec = yaml.safe_load(text)
    assert "system_prompt" not in spec
    assert "parallel_tool_calls" not in spec
    assert spec["tools"]["mode"] == "slim"
    assert "system prompts differ" in text
    assert "parallel_tool_calls differently (1 false, 1 true, 0 unset)" in text


def test_one_value_everywhere_is_written(tmp_path: Path) -> None:
    message = [{"role": "user", "content": "x"}]
    examples = [{"messages": message, "tools": [tool("f")], "parallel_tool_calls": False}] * 3
    train = write_lines(tmp_path / "train.jsonl", examples)
    assert main(["policy", "init", str(train), "--name", "p", "-o", str(tmp_path)]) == 0
    spec = yaml.safe_load((tmp_path / "p.yaml").read_text())
    assert spec["parallel_tool_calls"] is False
    assert "system_prompt" not in spec  # no example has one: the client's is kept


def test_existing_files_are_kept_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "support.yaml").write_text("# mine\n")
    args = ["policy", "init", str(TRAIN), "--name", "support", "-o", str(tmp_path)]
    assert main(args) == 1
    assert "pass --force to overwrite" in capsys.readouterr().err
    assert (tmp_path / "support.yaml").read_text() == "# mine\n"
    assert main([*args, "--force"]) == 0
    assert (tmp_path / "support.yaml").read_text().startswith("# Written by")
