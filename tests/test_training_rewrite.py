"""`tuned-proxy training rewrite`: policy tools, legacy conversion, call ids, round trips,
preference (DPO) files."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from proxy import jsonutil
from proxy.policies import load_policy
from proxy.rewrite import rewrite
from proxy.training import TrainingFileCheck, rewrite_example, run_rewrite
from proxy.training.reader import UTF8_BOM
from proxy.training.rewrite import derived_call_ids, is_placeholder, replace_placeholder_ids
from tests.support.configs import basic_config
from tests.support.servers import FakeUpstream, StartProxy

REPO = Path(__file__).resolve().parent.parent
POLICIES = REPO / "policies"
SUPPORT_TRAIN = POLICIES / "support.train.jsonl"
CASES = Path(__file__).parent / "training_cases"
CALL_ID = re.compile(r"call_[0-9a-f]{24}")

Example = dict[str, Any]


def examples(path: Path) -> list[Example]:
    lines = path.read_bytes().removeprefix(UTF8_BOM).splitlines()
    return [jsonutil.loads(line) for line in lines if line.strip()]


def check(path: Path) -> tuple[list[str], int, int]:
    """The findings of `training check`, and its error and warning counts."""
    result = TrainingFileCheck(path)
    found = [finding.format(path.name) for finding in result.findings()]
    return found, result.summary.errors, result.summary.warnings


def run(tmp_path: Path, train: Path, policy: Path, *, new_call_ids: bool = False) -> Path:
    out = tmp_path / "out.jsonl"
    assert run_rewrite(train, policy, out, new_call_ids=new_call_ids) == 0
    return out


def write_policy(tmp_path: Path, text: str, name: str = "policy") -> Path:
    """A policy file beside a copy of the support training tools."""
    shutil.copy(POLICIES / "support.tools.json", tmp_path / "support.tools.json")
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --- round trips with the example policies ----------------------------------------------------

EXAMPLE_POLICIES = ["support-full", "support-slim", "support-params", "support-bias", "weather"]


@pytest.mark.parametrize("name", EXAMPLE_POLICIES)
def test_a_rewritten_file_passes_check(tmp_path: Path, name: str) -> None:
    out = run(tmp_path, SUPPORT_TRAIN, POLICIES / f"{name}.yaml")

    assert check(out) == ([], 0, 0)
    assert len(examples(out)) == len(examples(SUPPORT_TRAIN))


@pytest.mark.parametrize("name", EXAMPLE_POLICIES)
def test_rewritten_tools_are_what_the_rewrite_engine_sends(tmp_path: Path, name: str) -> None:
    policy_path = POLICIES / f"{name}.yaml"
    policy = load_policy(policy_path, name)
    out = run(tmp_path, SUPPORT_TRAIN, policy_path)

    for original, rewritten in zip(examples(SUPPORT_TRAIN), examples(out), strict=True):
        request = {"model": "support-agent", "messages": original["messages"][:2]}
        request["tools"] = original["tools"]
        sent = rewrite(request, policy).body
        assert jsonutil.dumps(rewritten["tools"]) == jsonutil.dumps(sent["tools"])
        # only the tools change: the conversation is trained as it was
        assert rewritten["messages"] == original["messages"]
        assert rewritten.get("parallel_tool_calls") == original.get("parallel_tool_calls")


async def test_rewritten_tools_are_what_the_proxy_sends_upstream(
    tmp_path: Path, fake_upstream: FakeUpstream, start_proxy: StartProxy
) -> None:
    config = basic_config(fake_upstream.url)
    config["routes"]["chat"]["variants"][0]["policy"] = "support-slim"
    proxy = await start_proxy(config)
    client = proxy.client()
    out = run(tmp_path, SUPPORT_TRAIN, POLICIES / "support-slim.yaml")

    for original, rewritten in zip(examples(SUPPORT_TRAIN), examples(out), strict=True):
        # the application sends the full definitions, as in training
        await client.chat.completions.create(
            model="chat", messages=original["messages"][:2], tools=original["tools"]
        )
        upstream_tools = fake_upstream.last.body["tools"]
        assert jsonutil.dumps(upstream_tools) == jsonutil.dumps(rewritten["tools"])
    assert len(fake_upstream.received) == len(examples(SUPPORT_TRAIN))


def test_slim_removes_descriptions_and_saves_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run(tmp_path, SUPPORT_TRAIN, POLICIES / "support-slim.yaml")

    tools = examples(out)[0]["tools"]
    assert all("description" not in tool["function"] for tool in tools)
    assert out.stat().st_size < SUPPORT_TRAIN.stat().st_size
    report = capsys.readouterr().err
    assert "17 examples rewritten with policy support-slim, 17 changed" in report
    assert "340 slimmed" in report


def test_a_file_already_on_the_training_tools_is_copied_byte_for_byte(tmp_path: Path) -> None:
    out = run(tmp_path, SUPPORT_TRAIN, POLICIES / "support-full.yaml")

    assert out.read_bytes() == SUPPORT_TRAIN.read_bytes()


def test_a_passthrough_policy_changes_nothing(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, "tools: {mode: passthrough}\n")

    out = run(tmp_path, SUPPORT_TRAIN, policy)

    assert out.read_bytes() == SUPPORT_TRAIN.read_bytes()


def test_identical_makes_drifted_definitions_the_training_ones(tmp_path: Path) -> None:
    drifted = examples(SUPPORT_TRAIN)
    drifted[3]["tools"][0]["function"]["description"] = "Search the help center."
    train = tmp_path / "train.jsonl"
    train.write_bytes(b"".join(jsonutil.dumps(example) + b"\n" for example in drifted))
    assert any("defined 2 ways" in finding for finding in check(train)[0])

    out = run(tmp_path, train, POLICIES / "support-full.yaml")

    assert check(out) == ([], 0, 0)
    training_tools = jsonutil.loads((POLICIES / "support.tools.json").read_bytes())
    assert examples(out)[3]["tools"] == training_tools


def test_only_tools_are_applied_not_the_serving_keys(tmp_path: Path) -> None:
    # support-bias has a system prompt, parallel_tool_calls: false and a logit bias: none of
    # them belongs in a training file.
    out = run(tmp_path, SUPPORT_TRAIN, POLICIES / "support-bias.yaml")

    for example in examples(out):
        assert "logit_bias" not in example
    parallel = examples(out)[-1]
    assert "parallel_tool_calls" not in parallel
    assert len(parallel["messages"][2]["tool_calls"]) == 2


# --- the legacy format ------------------------------------------------------------------------


def test_legacy_examples_are_converted_to_tools(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, "")
    legacy_case = CASES / "legacy_functions" / "train.jsonl"
    assert check(legacy_case)[2] == 1  # the deprecation warning

    out = run(tmp_path, legacy_case, policy)

    converted = examples(out)[2]
    assert "functions" not in converted
    assert converted["tools"] == [
        {"type": "function", "function": examples(legacy_case)[2]["functions"][0]}
    ]
    assert converted["parallel_tool_calls"] is False  # a legacy answer holds one call
    call = converted["messages"][1]["tool_calls"][0]
    assert converted["messages"][2] == {
        "role": "tool",
        "tool_call_id": call["id"],
        "content": "25 C",
    }
    assert check(out) == ([], 0, 0)


def test_legacy_ids_become_unique_call_ids_when_asked(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, "")

    out = run(tmp_path, CASES / "legacy_functions" / "train.jsonl", policy, new_call_ids=True)

    converted = examples(out)[2]
    call_id = converted["messages"][1]["tool_calls"][0]["id"]
    assert CALL_ID.fullmatch(call_id)
    assert converted["messages"][2]["tool_call_id"] == call_id


# --- call ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call_id", "uses", "placeholder"),
    [
        ("call_id", 1, True),
        ("call_1", 1, True),
        ("CALL-12", 1, True),
        ("1", 1, True),
        ("", 1, True),
        (None, 1, True),
        ("call_legacy_3", 1, True),
        ("call_k1", 1, False),
        ("call_4Xzl8mQp2", 1, False),
        ("call_4Xzl8mQp2", 2, True),  # shared by two calls of one example
    ],
)
def test_placeholder_ids(call_id: Any, uses: int, placeholder: bool) -> None:
    assert is_placeholder(call_id, uses) is placeholder


def conversation(*ids: str) -> list[Any]:
    """A call per id, each answered; consecutive equal ids are parallel calls of one message."""
    messages: list[Any] = [{"role": "user", "content": "Weather?"}]
    calls = [{"id": call_id, "type": "function", "function": {"name": "f"}} for call_id in ids]
    messages.append({"role": "assistant", "tool_calls": calls})
    messages += [{"role": "tool", "tool_call_id": call_id, "content": "ok"} for call_id in ids]
    return messages


def test_shared_ids_are_replaced_in_call_order() -> None:
    messages = conversation("call_id", "call_id")
    new_ids = iter(["call_one", "call_two"])

    replaced, count = replace_placeholder_ids(messages, new_ids)

    assert count == 2
    assert [call["id"] for call in replaced[1]["tool_calls"]] == ["call_one", "call_two"]
    assert [message["tool_call_id"] for message in replaced[2:]] == ["call_one", "call_two"]
    assert messages == conversation("call_id", "call_id")  # the input is not modified


def test_a_placeholder_reused_turn_after_turn_maps_each_answer_to_its_turn() -> None:
    messages = conversation("call_id") + conversation("call_id")[1:]

    replaced, count = replace_placeholder_ids(messages, iter(["call_one", "call_two"]))

    assert count == 2
    assert [m.get("tool_call_id") for m in replaced if m["role"] == "tool"] == [
        "call_one",
        "call_two",
    ]
    assert [m["tool_calls"][0]["id"] for m in replaced if m["role"] == "assistant"] == [
        "call_one",
        "call_two",
    ]


def test_real_ids_are_kept() -> None:
    messages = conversation("call_k1", "call_k2")

    replaced, count = replace_placeholder_ids(messages, iter([]))

    assert (replaced, count) == (messages, 0)


def test_a_missing_id_gets_one_in_first_position() -> None:
    messages = conversation("call_1")
    del messages[1]["tool_calls"][0]["id"]

    replaced, _ = replace_placeholder_ids(messages, iter(["call_new"]))

    assert next(iter(replaced[1]["tool_calls"][0])) == "id"
    assert replaced[1]["tool_calls"][0]["id"] == "call_new"


@pytest.mark.parametrize("malformed", [[], {}], ids=["list", "object"])
def test_an_id_that_is_not_a_string_is_replaced(malformed: Any) -> None:
    messages = conversation("call_1")
    messages[1]["tool_calls"][0]["id"] = malformed

    replaced, count = replace_placeholder_ids(messages, iter(["call_new"]))

    assert count == 1
    assert replaced[1]["tool_calls"][0]["id"] == "call_new"


def test_derived_ids_are_unique_and_reproducible() -> None:
    first = [next(ids) for ids in [derived_call_ids(b"1:line")] for _ in range(3)]
    ids = derived_call_ids(b"1:line")

    assert [next(ids) for _ in range(3)] == first
    assert len(set(first)) == 3
    assert all(CALL_ID.fullmatch(call_id) for call_id in first)


def test_new_call_ids_fix_the_duplicate_ids_case(tmp_path: Path) -> None:
    case = CASES / "duplicate_call_ids" / "train.jsonl"
    assert check(case)[1] == 1

    out = run(tmp_path, case, POLICIES / "support-full.yaml", new_call_ids=True)

    assert check(out) == ([], 0, 0)
    fixed = examples(out)[4]["messages"]
    ids = [call["id"] for call in fixed[1]["tool_calls"]]
    assert len(set(ids)) == 2
    assert [fixed[2]["tool_call_id"], fixed[3]["tool_call_id"]] == ids
    # the other examples' ids are real ones and stay
    assert examples(out)[0] == examples(case)[0]
    again = tmp_path / "again.jsonl"
    run_rewrite(case, POLICIES / "support-full.yaml", again, new_call_ids=True)
    assert again.read_bytes() == out.read_bytes()  # reproducible ids


# --- preference (DPO) files: the input is rewritten, the outputs are not ---------------------


def as_preference(chat: Example) -> Example:
    """A chat example as a preference example: its last message is the preferred output."""
    # weights are for chat examples' turns: a preference example trains its outputs
    *conversation, reply = [
        {key: value for key, value in message.items() if key != "weight"}
        for message in chat["messages"]
    ]
    context = {key: value for key, value in chat.items() if key != "messages"}
    return {
        "input": {"messages": conversation, **context},
        "preferred_output": [reply],
        "non_preferred_output": [{"role": "assistant", "content": "Please call us instead."}],
    }


def write_examples(path: Path, lines: list[Example]) -> Path:
    path.write_bytes(b"".join(jsonutil.dumps(example) + b"\n" for example in lines))
    return path


@pytest.fixture
def support_preference(tmp_path: Path) -> Path:
    lines = [as_preference(example) for example in examples(SUPPORT_TRAIN)]
    path = write_examples(tmp_path / "preference.jsonl", lines)
    assert check(path) == ([], 0, 0)
    return path


def test_preference_inputs_get_the_tools_the_policy_serves(
    tmp_path: Path, support_preference: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = load_policy(POLICIES / "support-slim.yaml", "support-slim")

    out = run(tmp_path, support_preference, POLICIES / "support-slim.yaml")

    for original, rewritten in zip(examples(support_preference), examples(out), strict=True):
        request = {"model": "support-agent", "messages": original["input"]["messages"][:2]}
        request["tools"] = original["input"]["tools"]
        sent = rewrite(request, policy).body
        assert jsonutil.dumps(rewritten["input"]["tools"]) == jsonutil.dumps(sent["tools"])
        assert rewritten["input"]["messages"] == original["input"]["messages"]
        assert rewritten["preferred_output"] == original["preferred_output"]
        assert rewritten["non_preferred_output"] == original["non_preferred_output"]
        assert list(rewritten) == list(original)  # the keys stay where they were
    assert check(out) == ([], 0, 0)
    assert "17 examples rewritten with policy support-slim, 17 changed" in capsys.readouterr().err


def test_a_preference_file_on_the_training_tools_is_copied_byte_for_byte(
    tmp_path: Path, support_preference: Path
) -> None:
    out = run(tmp_path, support_preference, POLICIES / "support-full.yaml")

    assert out.read_bytes() == support_preference.read_bytes()


def test_legacy_functions_of_a_preference_input_are_converted(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, "")
    legacy = examples(CASES / "legacy_functions" / "train.jsonl")[2]
    train = write_examples(tmp_path / "train.jsonl", [as_preference(legacy)])

    out = run(tmp_path, train, policy, new_call_ids=True)

    converted = examples(out)[0]
    assert converted["input"]["tools"] == [{"type": "function", "function": legacy["functions"][0]}]
    assert "functions" not in converted["input"]
    call_id = converted["input"]["messages"][1]["tool_calls"][0]["id"]
    assert CALL_ID.fullmatch(call_id)
    assert converted["input"]["messages"][2] == {
        "role": "tool",
        "tool_call_id": call_id,
        "content": "25 C",
    }
    assert converted["preferred_output"] == [legacy["messages"][-1]]


def test_a_preference_example_without_an_input_object_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = {"input": "Hi", "preferred_output": [], "non_preferred_output": []}
    missing = {"preferred_output": [], "non_preferred_output": []}
    train = write_examples(tmp_path / "train.jsonl", [line, missing])
    out = tmp_path / "o.jsonl"

    assert run_rewrite(train, POLICIES / "support-full.yaml", out, new_call_ids=False) == 1

    err = capsys.readouterr().err
    assert f"{train}:1: error: Invalid type for 'input': expected an object" in err
    assert f"{train}:2: error: Missing 'input'" in err
    assert not out.exists()


def test_a_field_refused_inside_a_preference_input_is_said_to_be_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = {
        "input": {"messages": [{"role": "user", "content": "Hi"}], "tools": "lookup_order"},
        "preferred_output": [{"role": "assistant", "content": "Yes"}],
        "non_preferred_output": [{"role": "assistant", "content": "No"}],
    }
    train = write_examples(tmp_path / "train.jsonl", [line])

    out = tmp_path / "o.jsonl"
    assert run_rewrite(train, POLICIES / "support-full.yaml", out, new_call_ids=False) == 1

    assert f"{train}:1: error: in `input`: Invalid type for 'tools'" in capsys.readouterr().err


# --- what the policy removes, refuses, and files it cannot read -------------------------------


def test_a_called_function_the_policy_omits_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = write_policy(
        tmp_path,
        "training_tools: support.tools.json\n"
        "tools: {mode: slim, slim: {functions: {lookup_order: omit_function}}}\n",
    )

    out = run(tmp_path, SUPPORT_TRAIN, policy)

    warning = f"{SUPPORT_TRAIN}:2: warning: `lookup_order` is called in 1 example (the first here)"
    assert warning in capsys.readouterr().err
    found, errors, _ = check(out)
    assert errors == 1
    assert "calls `lookup_order`, which is not in this example's tools" in found[0]


def test_a_tool_the_policy_rejects_fails_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = write_policy(
        tmp_path, "training_tools: support.tools.json\ntools: {mode: identical, unknown: reject}\n"
    )
    train = CASES / "definition_drift" / "train.jsonl"  # get_weather is no support tool
    out = tmp_path / "out.jsonl"
    out.write_text("before")

    assert run_rewrite(train, policy, out, new_call_ids=False) == 1

    err = capsys.readouterr().err
    assert f"{train}:1: error: The function `get_weather` is not one this model" in err
    assert f"{train}:10: error:" in err
    assert out.read_text() == "before"
    assert not (tmp_path / "out.jsonl.partial").exists()


def test_invalid_json_fails_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = CASES / "invalid_json" / "train.jsonl"

    out = tmp_path / "o.jsonl"
    assert run_rewrite(train, POLICIES / "support-full.yaml", out, new_call_ids=False) == 1

    assert f"{train}:4: error: invalid JSON" in capsys.readouterr().err
    assert not out.exists()


def test_a_bad_policy_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = write_policy(tmp_path, "tools: {mode: sideways}\n")

    assert run_rewrite(SUPPORT_TRAIN, policy, tmp_path / "o.jsonl", new_call_ids=False) == 1

    assert f"{policy}: tools.mode:" in capsys.readouterr().err


def test_the_byte_order_mark_is_kept_and_blank_lines_dropped(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_bytes(UTF8_BOM + SUPPORT_TRAIN.read_bytes().replace(b"\n", b"\n\n", 1))

    out = run(tmp_path, train, POLICIES / "support-slim.yaml")

    assert out.read_bytes().startswith(UTF8_BOM)
    assert b"\n\n" not in out.read_bytes()
    assert len(examples(out)) == 17
    assert list(TrainingFileCheck(out, fmt="azure").findings()) == []


def test_rewrite_example_leaves_its_input_alone() -> None:
    policy = load_policy(POLICIES / "support-slim.yaml", "support-slim")
    example = examples(SUPPORT_TRAIN)[0]
    before = jsonutil.dumps(example)

    result = rewrite_example(example, policy, new_call_ids=iter(["call_x"]))

    assert result.changed
    assert jsonutil.dumps(example) == before
