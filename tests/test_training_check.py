"""`tuned-proxy training check`: one fixture per rule, single-example rules, summary, large file.

A case folder under `tests/training_cases/` holds `train.jsonl` (ten examples, so the
minimum-count rule stays quiet unless the case is about it), `expected.txt` with the exact
finding lines (the file named `train.jsonl`) and, optionally, `options.json` with the
`fmt` and `max_tokens` the check runs with.
"""

from __future__ import annotations

import argparse
import copy
import math
import re
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from proxy import jsonutil
from proxy.training import TrainingFileCheck, run_check
from proxy.training.check import check_example, format_summary
from proxy.training.cli import add_training_commands
from proxy.training.reader import UTF8_BOM
from proxy.training.rules import Context

REPO = Path(__file__).resolve().parent.parent
CASES = Path(__file__).parent / "training_cases"
CASE_DIRS = sorted(path for path in CASES.iterdir() if path.is_dir())
SUPPORT_TRAIN = REPO / "policies" / "support.train.jsonl"
SUMMARY = re.compile(r"train\.jsonl: \d+ (chat |preference \(DPO\) )?examples")

Example = dict[str, Any]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def call(call_id: str, arguments: Any = '{"city": "Oslo"}', name: str = "get_weather") -> Any:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def answered_call(call_id: str = "call_a") -> Example:
    return {
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "tool_calls": [call(call_id)]},
            {"role": "tool", "tool_call_id": call_id, "content": "3 C"},
            {"role": "assistant", "content": "3 °C in Oslo."},
        ],
        "tools": [WEATHER],
    }


def findings(example: Any, **context: Any) -> list[str]:
    """`severity: message` of every finding of one example."""
    generator = check_example(example, Context(**context))
    return [f"{finding.severity}: {finding.message}" for finding in generator]


def write_lines(path: Path, examples: list[Any], prefix: bytes = b"") -> Path:
    path.write_bytes(prefix + b"".join(jsonutil.dumps(example) + b"\n" for example in examples))
    return path


# --- one fixture per rule ---------------------------------------------------------------------


def case_options(case: Path) -> dict[str, Any]:
    options = case / "options.json"
    return jsonutil.loads(options.read_bytes()) if options.exists() else {}


@pytest.mark.parametrize("case", CASE_DIRS, ids=lambda path: path.name)
def test_case(case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    options = case_options(case)
    path = case / "train.jsonl"
    expected = (case / "expected.txt").read_text(encoding="utf-8").splitlines()

    code = run_check(
        path, options.get("fmt", "openai"), max_tokens=options.get("max_tokens", 65_536)
    )

    output = capsys.readouterr().out.replace(str(path), "train.jsonl").splitlines()
    summary_start = next(i for i, line in enumerate(output) if SUMMARY.match(line))
    assert output[:summary_start] == expected
    assert code == (1 if any(": error: " in line for line in expected) else 0)


def test_every_case_has_its_expectation() -> None:
    assert len(CASE_DIRS) >= 25
    for case in CASE_DIRS:
        assert (case / "train.jsonl").exists(), case.name
        assert (case / "expected.txt").exists(), case.name


def test_the_example_training_file_is_clean(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_check(SUPPORT_TRAIN, "openai")

    largest_tokens = math.ceil(largest_line(SUPPORT_TRAIN) / 4)
    assert code == 0
    assert capsys.readouterr().out == (
        f"{SUPPORT_TRAIN}: 17 chat examples\n"
        "  tools: 20 functions\n"
        "  calls: 23 (1 message with parallel calls)\n"
        "  assistant turns: 44 trained, 1 not trained (weight 0)\n"
        f"  largest example: about {largest_tokens:,} tokens (estimated)\n"
        "  0 errors, 0 warnings\n"
    )


def largest_line(path: Path) -> int:
    return max(len(line) for line in path.read_bytes().splitlines(keepends=True))


def test_azure_accepts_a_file_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "train.jsonl", [answered_call()] * 10, prefix=UTF8_BOM)

    check = TrainingFileCheck(path, fmt="azure")

    assert list(check.findings()) == []
    assert check.summary.examples == 10


def test_an_unreadable_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.jsonl"

    assert run_check(missing, "openai") == 1
    assert str(missing) in capsys.readouterr().err


def test_an_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="azure"):
        run_check(tmp_path / "train.jsonl", "anthropic")


def test_summary_counts_legacy_redefined_and_untrained(tmp_path: Path) -> None:
    legacy = {
        "messages": [
            {"role": "user", "content": "Weather in Rome?"},
            {"role": "assistant", "function_call": {"name": "get_weather", "arguments": "{}"}},
        ],
        "functions": [{**WEATHER["function"], "description": "Weather now"}],
    }
    untrained = answered_call()
    untrained["messages"][3]["weight"] = 0
    path = write_lines(tmp_path / "train.jsonl", [untrained, legacy] + [answered_call()] * 8)
    check = TrainingFileCheck(path)

    list(check.findings())

    summary = check.summary
    assert (summary.examples, summary.legacy_examples) == (10, 1)
    assert (summary.functions, summary.redefined_functions) == (1, 1)
    assert (summary.calls, summary.trained_turns, summary.untrained_turns) == (10, 18, 1)
    assert (summary.errors, summary.warnings) == (1, 2)  # schema, then legacy and drift


# --- single-example rules not worth a fixture file each ---------------------------------------


def test_a_clean_example_has_no_findings() -> None:
    assert findings(answered_call()) == []


def test_a_call_in_the_last_message_needs_no_answer() -> None:
    example = answered_call()
    example["messages"] = example["messages"][:2]

    assert findings(example) == []


def test_a_chat_example_with_a_stray_input_key_stays_a_chat_example() -> None:
    example = answered_call()
    example["input"] = {"note": "left over"}

    found = findings(example)
    assert any("unknown key `input`" in f for f in found)
    assert not any("preferred_output" in f or "input.messages" in f for f in found)


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        (None, "error: no `messages`"),
        ("hi", "error: `messages` is a string, not an array"),
        ([], "error: `messages` is empty"),
    ],
)
def test_messages_must_be_a_non_empty_array(messages: Any, expected: str) -> None:
    example: Example = {"tools": [WEATHER]}
    if messages is not None:
        example["messages"] = messages

    assert findings(example) == [expected]


def test_parallel_tool_calls_must_be_a_boolean() -> None:
    example = {**answered_call(), "parallel_tool_calls": "false"}

    assert findings(example) == ["error: `parallel_tool_calls` is a string, not a boolean"]


def test_parallel_calls_are_allowed_by_default() -> None:
    example = answered_call()
    example["messages"][1]["tool_calls"].append(call("call_b"))
    example["messages"].insert(3, {"role": "tool", "tool_call_id": "call_b", "content": "3 C"})

    assert findings(example) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda m: m[1].update(tool_calls=[]),
            [
                "error: messages[1] (assistant) has neither content nor tool_calls",
                "error: messages[1] (assistant): tool_calls is empty",
                "error: messages[2] (tool) answers call `call_a`, but no call has that id",
            ],
        ),
        (
            lambda m: m[1]["tool_calls"][0].pop("type"),
            ['error: messages[1].tool_calls[0]: type must be "function"'],
        ),
        (
            lambda m: m[1]["tool_calls"][0]["function"].pop("arguments"),
            ["error: messages[1].tool_calls[0].function.arguments are missing"],
        ),
        (
            lambda m: m[1]["tool_calls"][0]["function"].update(arguments='["Oslo"]'),
            ["error: messages[1].tool_calls[0].function.arguments encodes an array, not an object"],
        ),
        (
            lambda m: m[3].update(weight=True),
            ["error: messages[3] (assistant): weight is a boolean; it must be 0 or 1"],
        ),
        (
            lambda m: m[3].update(weight=1.0),
            ["error: messages[3] (assistant): weight is 1.0; it must be 0 or 1"],
        ),
        (
            lambda m: m.append({"role": "tool", "tool_call_id": "call_a", "content": "3 C"}),
            [
                "error: messages[4] (tool) answers call `call_a` again: it is already answered",
                "error: the example ends with messages[4] (tool), not an assistant message",
            ],
        ),
        (
            lambda m: m.insert(2, {"role": "user", "content": "Well?"}),
            [
                "error: messages[1].tool_calls[0] (`get_weather`, id `call_a`) is never answered",
                "error: messages[3] (tool) answers call `call_a` of an earlier turn, not one of "
                "the assistant message right before it",
            ],
        ),
        (
            lambda m: m.insert(3, {"role": "tool", "tool_call_id": "call_a", "content": "3 C"}),
            ["error: messages[3] (tool) answers call `call_a` again: it is already answered"],
        ),
        (
            lambda m: m[2].pop("tool_call_id"),
            [
                "error: messages[2] (tool) has no tool_call_id",
                "error: messages[1].tool_calls[0] (`get_weather`, id `call_a`) is never answered",
            ],
        ),
        (
            lambda m: m.insert(0, "hello"),
            [
                "error: messages[0] is a string, not an object",
            ],
        ),
        (lambda m: m[0].pop("role"), ["error: messages[0] has no role"]),
        (
            lambda m: m[0].update(content=[{"type": "text", "text": "Weather in Oslo?"}]),
            [],  # user content parts are fine; only tool messages need a string
        ),
    ],
)
def test_message_and_call_rules(change: Callable[[list[Any]], Any], expected: list[str]) -> None:
    example = answered_call()
    change(example["messages"])

    assert findings(example) == expected


@pytest.mark.parametrize(
    ("tools", "expected"),
    [
        (
            {"type": "function"},
            [
                "error: `tools` is an object, not an array",
                "error: messages[1].tool_calls[0] calls `get_weather`, but the example offers "
                "no tools",
            ],
        ),
        (
            [{"type": "custom", "custom": {"name": "grep"}}, WEATHER],
            ["error: tools[0]: type is `custom`; fine-tuning examples take function tools only"],
        ),
        (
            [{"type": "function", "function": {"name": "get_weather", "parameters": "city"}}],
            ["error: tools[0].function.parameters is a string, not an object"],
        ),
        (
            [WEATHER] + [{"type": "function", "function": {"name": f"f{i}"}} for i in range(128)],
            ["error: `tools` has 129 entries; at most 128 are allowed"],
        ),
        (
            [],
            [
                "error: messages[1].tool_calls[0] calls `get_weather`, but the example offers "
                "no tools"
            ],
        ),
    ],
)
def test_tool_definition_rules(tools: Any, expected: list[str]) -> None:
    example = {**answered_call(), "tools": tools}

    assert findings(example) == expected


def test_legacy_calls_are_answered_by_function_messages() -> None:
    example = {
        "messages": [
            {"role": "user", "content": "Weather in Rome?"},
            {"role": "assistant", "function_call": {"name": "get_weather", "arguments": "{}"}},
            {"role": "user", "content": "Well?"},
            {"role": "function", "name": "get_weather", "content": "25 C"},
            {"role": "assistant", "content": "25 °C."},
        ],
        "functions": [WEATHER["function"]],
    }

    assert findings(example) == [
        "warning: uses the deprecated `functions` format (functions, function_call, role function)",
        "error: messages[1].function_call.arguments do not fit the schema of `get_weather`: "
        "'city' is a required property",
        "error: messages[1].function_call (`get_weather`) is never answered",
        "error: messages[3] (function) answers a function_call, but the message before it "
        "makes none",
    ]


def test_the_token_estimate_counts_the_line(tmp_path: Path) -> None:
    line = jsonutil.dumps(answered_call()) + b"\n"
    at_limit = math.ceil(len(line) / 4)

    quiet = list(check_example(answered_call(), Context(max_tokens=at_limit), size=len(line)))
    loud = list(check_example(answered_call(), Context(max_tokens=at_limit - 1), size=len(line)))

    assert quiet == []
    assert [finding.message.split(" (")[0] for finding in loud] == [f"about {at_limit} tokens"]


def test_the_example_is_not_modified() -> None:
    example = answered_call()
    example["messages"][1]["tool_calls"][0]["function"]["arguments"] = {"city": 1}
    original = copy.deepcopy(example)

    findings(example)

    assert example == original


# --- preference (DPO) examples ---------------------------------------------------------------


def preference() -> Example:
    """`answered_call` as a preference example: its reply is the preferred output."""
    chat = answered_call()
    *conversation, reply = chat["messages"]
    return {
        "input": {"messages": conversation, "tools": chat["tools"]},
        "preferred_output": [reply],
        "non_preferred_output": [{"role": "assistant", "content": "I cannot tell."}],
    }


def test_a_clean_preference_example_has_no_findings() -> None:
    assert findings(preference()) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda e: e.pop("input"), ["error: no `input`"]),
        (lambda e: e.update(input=[]), ["error: `input` is an array, not an object"]),
        (lambda e: e["input"].pop("messages"), ["error: no `input.messages`"]),
        (lambda e: e["input"].update(messages=[]), ["error: `input.messages` is empty"]),
        (lambda e: e.update(metadata={}), ["warning: unknown key `metadata`"]),
        (lambda e: e["input"].update(seed=1), ["warning: unknown key `input.seed`"]),
        (
            lambda e: e["input"].update(parallel_tool_calls="no"),
            ["error: `input.parallel_tool_calls` is a string, not a boolean"],
        ),
        (
            lambda e: e["input"].update(tools={}),
            [
                "error: `input.tools` is an object, not an array",
                "error: input.messages[1].tool_calls[0] calls `get_weather`, but the example "
                "offers no tools",
            ],
        ),
        (lambda e: e.pop("preferred_output"), ["error: no `preferred_output`"]),
        (lambda e: e.update(preferred_output=[]), ["error: `preferred_output` is empty"]),
        (
            lambda e: e["preferred_output"].__setitem__(0, "3 °C"),
            ["error: preferred_output[0] is a string, not an object"],
        ),
        (
            lambda e: e["non_preferred_output"][0].pop("role"),
            ["error: non_preferred_output[0] has no role; an output is the assistant's reply"],
        ),
        (
            lambda e: e["non_preferred_output"][0].update(content=None),
            ["error: non_preferred_output[0] has no text: content is null"],
        ),
        (
            lambda e: e["preferred_output"][0].update(tool_calls=[call("call_b")]),
            [
                "error: preferred_output[0] has tool_calls, but preference outputs are text only "
                "(fine-tuning guide)"
            ],
        ),
        (
            lambda e: e.update(preferred_completion=e.pop("preferred_output")),
            [
                "warning: `preferred_completion` is the API reference's name; the fine-tuning "
                "guide names it `preferred_output`"
            ],
        ),
        (
            lambda e: e.update(preferred_completion=e["preferred_output"]),
            [
                "error: both `preferred_completion` and `preferred_output`: the output is "
                "given twice"
            ],
        ),
        (
            lambda e: e["input"]["messages"].append({"role": "assistant", "content": "Hm."}),
            [
                "error: `input.messages` ends with input.messages[3] (assistant): the preferred "
                "and non-preferred outputs are the last assistant message"
            ],
        ),
        (
            lambda e: e["input"]["messages"][1].update(weight=0),
            [
                "warning: input.messages[1] (assistant) has `weight`, but a preference example "
                "trains only its outputs"
            ],
        ),
    ],
)
def test_preference_rules(change: Callable[[Example], Any], expected: list[str]) -> None:
    example = preference()
    change(example)

    assert findings(example) == expected


def test_a_preference_file_counts_no_assistant_turns(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "train.jsonl", [preference()] * 10)
    check = TrainingFileCheck(path)

    assert list(check.findings()) == []

    summary = check.summary
    assert (summary.preference_examples, summary.chat_examples) == (10, 0)
    assert (summary.functions, summary.calls) == (1, 10)
    assert (summary.trained_turns, summary.untrained_turns) == (0, 0)


@pytest.mark.parametrize(
    ("examples", "expected"),
    [
        ([preference()] * 3, "3 preference (DPO) examples"),
        ([preference()] * 3 + ["{not json", [1]], "5 examples: 3 preference (DPO), 2 unreadable"),
        ([answered_call(), preference()], "2 examples: 1 chat, 1 preference (DPO)"),
        (["{not json"], "1 examples: 1 unreadable"),
    ],
)
def test_the_summary_names_the_kinds_it_counted(
    tmp_path: Path, examples: list[Any], expected: str
) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(
        b"".join(
            (line.encode() if isinstance(line, str) else jsonutil.dumps(line)) + b"\n"
            for line in examples
        )
    )
    check = TrainingFileCheck(path)
    list(check.findings())

    assert format_summary(str(path), check.summary).splitlines()[0] == f"{path}: {expected}"


# --- a large file, streamed -------------------------------------------------------------------

LARGE = 100_000


def large_example(number: int) -> Example:
    """Four shapes in turn, so every rule and counter sees work: text with an untrained turn,
    an answered call, a call ending the example, parallel calls."""
    city = f"City{number}"
    user = {"role": "user", "content": f"Weather in {city}?"}
    arguments = jsonutil.dumps({"city": city}).decode()
    shape = number % 4
    if shape == 0:
        messages = [
            user,
            {"role": "assistant", "content": f"Which {city}?", "weight": 0},
            {"role": "user", "content": "The big one."},
            {"role": "assistant", "content": "Sunny."},
        ]
    elif shape == 1:
        messages = [
            user,
            {"role": "assistant", "tool_calls": [call(f"call_{number}", arguments)]},
            {"role": "tool", "tool_call_id": f"call_{number}", "content": "3 C"},
            {"role": "assistant", "content": f"3 °C in {city}."},
        ]
    elif shape == 2:
        messages = [user, {"role": "assistant", "tool_calls": [call(f"call_{number}", arguments)]}]
    else:
        messages = [
            user,
            {"role": "assistant", "tool_calls": [call("call_a", arguments), call("call_b")]},
            {"role": "tool", "tool_call_id": "call_a", "content": "3 C"},
            {"role": "tool", "tool_call_id": "call_b", "content": "4 C"},
            {"role": "assistant", "content": "3 and 4 °C."},
        ]
    return {"messages": messages, "tools": [WEATHER]}


def peak_traced_bytes(work: Callable[[], object]) -> int:
    """The peak of Python allocations while `work` runs (tracemalloc)."""
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def large_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("large") / "train.jsonl"
    with path.open("wb") as file:
        for number in range(LARGE):
            file.write(jsonutil.dumps(large_example(number)) + b"\n")
    return path


def memory_bound(path: Path) -> int:
    # Holding the file's text alone exceeds this; holding its parsed examples, many times.
    return path.stat().st_size // 10


@pytest.mark.slow
def test_a_large_file_is_checked_in_bounded_memory(large_file: Path) -> None:
    check = TrainingFileCheck(large_file)
    found: list[str] = []

    peak = peak_traced_bytes(lambda: found.extend(f.message for f in check.findings()))

    assert found == []
    summary = check.summary
    assert summary.examples == LARGE
    assert summary.calls == LARGE  # shapes 1 and 2 make one call each, shape 3 two
    assert summary.parallel_messages == LARGE // 4
    assert (summary.trained_turns, summary.untrained_turns) == (LARGE * 6 // 4, LARGE // 4)
    assert peak < memory_bound(large_file)


@pytest.mark.slow
def test_the_memory_bound_catches_reading_the_whole_file(large_file: Path) -> None:
    # The measurement above can fail: an implementation that reads the file at once does.
    assert peak_traced_bytes(large_file.read_bytes) > memory_bound(large_file)


# --- the command line -------------------------------------------------------------------------


def training_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tuned-proxy")
    add_training_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def test_the_check_command_runs_with_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES / "token_limit" / "train.jsonl"
    args = training_parser().parse_args(
        ["training", "check", str(case), "--format", "azure", "--max-tokens", "400"]
    )

    assert args.run(args) == 0  # warnings only
    out = capsys.readouterr().out
    assert f"{case}:1: warning: no UTF-8 byte order mark" in out
    assert f"{case}:6: warning: about 684 tokens" in out


def test_the_check_command_names_a_preference_file(capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES / "preference" / "train.jsonl"
    args = training_parser().parse_args(["training", "check", str(case)])

    assert args.run(args) == 0

    out = capsys.readouterr().out
    assert out.startswith(f"{case}: 10 preference (DPO) examples\n")
    assert "assistant turns" not in out


def test_max_tokens_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        training_parser().parse_args(["training", "check", "t.jsonl", "--max-tokens", "0"])

    assert "must be a positive number" in capsys.readouterr().err
