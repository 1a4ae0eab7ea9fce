"""Turning a held-out file into eval cases, and the shipped held-out set itself."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from proxy.eval.cases import ExpectedCall, read_cases
from proxy.training.reader import TrainingFileError
from tests.support.configs import POLICIES, REPO

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]


def call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def conversation() -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Weather in Oslo and Rome?"},
            {
                "role": "assistant",
                "tool_calls": [
                    call("a", "get_weather", '{"city": "Oslo"}'),
                    call("b", "get_weather", '{"city": "Rome"}'),
                ],
            },
            {"role": "tool", "tool_call_id": "a", "content": "5"},
            {"role": "tool", "tool_call_id": "b", "content": "20"},
            {"role": "assistant", "content": "Oslo 5, Rome 20."},
        ],
        "tools": TOOLS,
        "parallel_tool_calls": True,
    }


def test_one_case_per_call_turn_and_per_text_answer_to_the_user(tmp_path: Path) -> None:
    cases = read_cases(write_jsonl(tmp_path / "h.jsonl", [conversation()]))
    assert [(c.id, c.kind) for c in cases.cases] == [("L1.m2", "no_call"), ("L1.m4", "tool_call")]
    greeting, weather = cases.cases
    assert greeting.request["messages"] == conversation()["messages"][:2]
    assert weather.expected == (
        ExpectedCall("get_weather", '{"city": "Oslo"}'),
        ExpectedCall("get_weather", '{"city": "Rome"}'),
    )
    assert weather.parallel
    assert weather.request["messages"] == conversation()["messages"][:4]
    assert weather.request["tools"] == TOOLS
    assert weather.request["parallel_tool_calls"] is True
    assert "model" not in weather.request
    # The summary after the tool results is no decision to call or not: not a case.
    assert cases.count("no_call") == 1


def test_weight_zero_turns_are_not_asked_and_weight_is_not_sent(tmp_path: Path) -> None:
    example = conversation()
    example["messages"][2]["weight"] = 0
    example["messages"][4]["weight"] = 1
    cases = read_cases(write_jsonl(tmp_path / "h.jsonl", [example])).cases
    assert [c.id for c in cases] == ["L1.m4"]
    sent = cases[0].request["messages"]
    assert all("weight" not in m for m in sent)
    assert sent[2] == {"role": "assistant", "content": "Hello!"}


def test_unusable_lines_are_skipped_with_their_reason(tmp_path: Path) -> None:
    legacy = {
        "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
        ],
        "functions": [{"name": "f"}],
    }
    no_tools = {
        "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    }
    broken_call = conversation()
    broken_call["messages"][4]["tool_calls"][0]["function"]["arguments"] = {"city": "Oslo"}
    preference = {
        "input": {"messages": conversation()["messages"][:1], "tools": conversation()["tools"]},
        "preferred_output": [{"role": "assistant", "content": "y"}],
        "non_preferred_output": [{"role": "assistant", "content": "n"}],
    }
    path = write_jsonl(
        tmp_path / "h.jsonl",
        ["{not json", legacy, "", no_tools, broken_call, [1, 2], conversation(), preference],
    )
    found = read_cases(path)
    assert found.examples == 7  # the blank line is not an example
    reasons = {s.line: s.reason for s in found.skipped}
    assert set(reasons) == {1, 2, 4, 5, 6, 8}
    assert "preference (DPO)" in reasons[8]
    assert "invalid JSON" in reasons[1]
    assert "legacy" in reasons[2]
    assert "no tools" in reasons[4]
    assert "messages[4].tool_calls[0]" in reasons[5]
    assert "not a JSON object" in reasons[6]
    assert [c.line for c in found.cases] == [7, 7]


def test_limit_reads_only_the_first_examples(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "h.jsonl", [conversation()] * 5)
    assert {c.line for c in read_cases(path, max_examples=2).cases} == {1, 2}


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TrainingFileError, match="cannot read"):
        read_cases(tmp_path / "absent.jsonl")


# ----------------------------------------------------------------------------- shipped set


def test_the_heldout_file_is_what_its_generator_writes(tmp_path: Path) -> None:
    output = tmp_path / "heldout.jsonl"
    script = REPO / "tests" / "data" / "make_support_heldout.py"
    subprocess.run([sys.executable, str(script), "-o", str(output)], check=True)
    assert output.read_bytes() == (POLICIES / "support.heldout.jsonl").read_bytes()


def test_the_heldout_set_covers_every_tool_parallel_calls_and_turns_without_a_tool() -> None:
    found = read_cases(POLICIES / "support.heldout.jsonl")
    assert found.examples >= 100
    assert not found.skipped
    tools = json.loads((POLICIES / "support.tools.json").read_text())
    called = Counter(call.name for case in found.cases for call in case.expected)
    assert set(called) == {tool["function"]["name"] for tool in tools}
    assert sum(1 for case in found.cases if case.parallel) >= 10
    assert found.count("no_call") >= 10


def test_the_heldout_set_shares_no_user_message_with_the_training_set() -> None:
    def user_texts(path: Path) -> set[str]:
        texts = set()
        for line in path.read_text().splitlines():
            for message in json.loads(line)["messages"]:
                if message["role"] == "user":
                    texts.add(message["content"])
        return texts

    shared = user_texts(POLICIES / "support.heldout.jsonl") & user_texts(
        POLICIES / "support.train.jsonl"
    )
    assert shared <= {"Yes please."}  # a bare confirmation is not a leak
