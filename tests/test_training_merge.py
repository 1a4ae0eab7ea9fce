"""`tuned-proxy training merge`: joining, repeats, the held-out split, cut-short lines, refusals."""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from proxy.cli import build_parser, main

REPO = Path(__file__).resolve().parent.parent
POLICIES = REPO / "policies"
SUPPORT_FILES = [POLICIES / "support.train.jsonl", POLICIES / "support.heldout.jsonl"]

Example = dict[str, Any]


def chat(question: str, answer: str = "ok", **extra: Any) -> Example:
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return {"messages": messages, **extra}


def write_jsonl(path: Path, examples: list[Any], *, tail: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(example) + "\n" for example in examples]
    path.write_text("".join(lines) + tail, encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[Example]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def merge(*args: str | Path) -> int:
    return main(["training", "merge", *map(str, args)])


def conversation(example: Example) -> str:
    """The documented identity of a conversation, computed apart from the code under test:
    its messages' compact JSON with sorted keys, call ids renamed call_0, call_1, … in order
    of appearance."""
    messages = json.loads(json.dumps(example["messages"]))
    ids: dict[str, str] = {}
    for message in messages:
        for call in message.get("tool_calls", ()):
            call["id"] = ids.setdefault(call["id"], f"call_{len(ids)}")
        if "tool_call_id" in message:
            message["tool_call_id"] = ids.setdefault(message["tool_call_id"], f"call_{len(ids)}")
    return json.dumps(messages, sort_keys=True, separators=(",", ":"))


def side_by_formula(example: Example, holdout: float) -> str:
    """The documented split, computed apart from the code under test."""
    point = int.from_bytes(hashlib.sha256(conversation(example).encode()).digest()[:8], "big")
    return "held" if point / 2**64 < holdout else "out"


def distinct(examples: list[Example]) -> list[Example]:
    """The first example of each conversation."""
    seen: set[str] = set()
    kept = []
    for example in examples:
        if conversation(example) not in seen:
            seen.add(conversation(example))
            kept.append(example)
    return kept


# --- joining and repeats ----------------------------------------------------------------------


def test_repeats_across_files_are_dropped_keeping_the_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = write_jsonl(tmp_path / "a.jsonl", [chat("q1"), chat("q2", tools=[])])
    # q2 again with its keys in another order and other keys beside: still a repeat.
    user, assistant = chat("q2")["messages"]
    repeat = {"parallel_tool_calls": False, "messages": [dict(reversed(user.items())), assistant]}
    second = write_jsonl(tmp_path / "b.jsonl", [repeat, chat("q3"), chat("q1")])
    out = tmp_path / "out.jsonl"

    assert merge(first, second, "-o", out) == 0

    assert read_jsonl(out) == [chat("q1"), chat("q2", tools=[]), chat("q3")]
    summary = capsys.readouterr().out
    assert "read 2 files: 5 examples" in summary
    assert "duplicates dropped: 2" in summary
    assert f"wrote {out} (3 examples)" in summary
    assert f"next: tuned-proxy training check {out}" in summary


def calling(question: str, call_id: str, result: str = "", result_id: str | None = None) -> Example:
    """A conversation whose assistant calls a tool (and, with a result, gets it and answers)."""
    call = {"name": "lookup_order", "arguments": '{"order_id": "ORD-123456"}'}
    messages: list[Any] = [
        {"role": "user", "content": question},
        {
            "role": "assistant",
            "tool_calls": [{"id": call_id, "type": "function", "function": call}],
        },
    ]
    if result:
        tool = {"role": "tool", "tool_call_id": result_id or call_id, "content": result}
        messages += [tool, {"role": "assistant", "content": "It is on its way."}]
    return {"messages": messages}


def test_a_repeat_answered_with_other_call_ids_is_a_repeat(tmp_path: Path) -> None:
    """An upstream makes up new call ids for every answer: the same conversation captured
    twice differs in them alone. Which result answers which call still counts."""
    source = write_jsonl(
        tmp_path / "captured.jsonl",
        [
            calling("q1", "call_Xy12"),
            calling("q1", "EMN9loKNtfXjeRGRr4L1MhArZZzXuhji"),  # a repeat
            calling("q2", "call_a", "shipped"),
            calling("q2", "call_b", "shipped"),  # a repeat: the result follows its call's id
            calling("q2", "call_a", "shipped", result_id="call_other"),  # answers no call
        ],
    )
    out, held = tmp_path / "out.jsonl", tmp_path / "held.jsonl"

    assert merge(source, "-o", out, "--holdout", "0.5", "--holdout-out", held) == 0

    merged = read_jsonl(out) + read_jsonl(held)
    expected = [calling("q1", "call_Xy12"), calling("q2", "call_a", "shipped")]
    expected.append(calling("q2", "call_a", "shipped", result_id="call_other"))
    assert sorted(map(json.dumps, merged)) == sorted(map(json.dumps, expected))
    for example in merged:  # written as read, the ids included
        assert read_jsonl(out).count(example) + read_jsonl(held).count(example) == 1
        side = "out" if example in read_jsonl(out) else "held"
        assert side == side_by_formula(example, 0.5)


def test_a_directory_is_read_in_name_order(tmp_path: Path) -> None:
    captures = tmp_path / "captures"
    write_jsonl(captures / "20250102T000000Z.jsonl", [chat("late")])
    write_jsonl(captures / "20250101T000000Z.jsonl", [chat("early"), chat("early too")])
    write_jsonl(captures / "20250101T120000Z.jsonl", [chat("middle")])
    (captures / "notes.txt").write_text('{"messages": []}\n', encoding="utf-8")
    extra = write_jsonl(tmp_path / "extra.jsonl", [chat("extra")])
    out = tmp_path / "out.jsonl"

    # A file named twice (here also through its directory) is read once.
    assert merge(extra, captures, captures / "20250102T000000Z.jsonl", "-o", out) == 0

    questions = [example["messages"][0]["content"] for example in read_jsonl(out)]
    assert questions == ["extra", "early", "early too", "middle", "late"]


def test_examples_are_written_as_read_one_compact_line_each(tmp_path: Path) -> None:
    odd = {"z_first": 1, "messages": [{"content": "Grüße, 東京 ✓", "role": "user"}], "a": 0.5}
    source = write_jsonl(tmp_path / "odd.jsonl", [odd])
    out = tmp_path / "out.jsonl"

    assert merge(*SUPPORT_FILES, source, "-o", out) == 0

    originals = [example for path in SUPPORT_FILES for example in read_jsonl(path)] + [odd]
    # The held-out file's line 115 repeats its line 19 but for the call ids.
    assert len(distinct(originals)) == len(originals) - 1
    expected = "".join(
        json.dumps(example, ensure_ascii=False, separators=(",", ":")) + "\n"
        for example in distinct(originals)
    )
    assert out.read_bytes() == expected.encode("utf-8")


# --- the held-out split -----------------------------------------------------------------------


def test_the_split_follows_a_hash_of_the_messages(tmp_path: Path) -> None:
    examples = [chat(f"question {number}") for number in range(200)]
    source = write_jsonl(tmp_path / "all.jsonl", examples)
    out, held = tmp_path / "out.jsonl", tmp_path / "held.jsonl"

    assert merge(source, "-o", out, "--holdout", "0.25", "--holdout-out", held) == 0

    kept, held_out = read_jsonl(out), read_jsonl(held)
    assert kept == [e for e in examples if side_by_formula(e, 0.25) == "out"]
    assert held_out == [e for e in examples if side_by_formula(e, 0.25) == "held"]
    assert 25 <= len(held_out) <= 75  # a quarter of 200, give or take


def test_the_split_is_the_same_every_time_and_whatever_the_other_files(tmp_path: Path) -> None:
    mine = write_jsonl(tmp_path / "mine.jsonl", [chat(f"mine {n}") for n in range(60)])
    others = write_jsonl(tmp_path / "others.jsonl", [chat(f"other {n}") for n in range(60)])

    def split(name: str, *inputs: Path) -> tuple[bytes, bytes]:
        out, held = tmp_path / f"{name}.out.jsonl", tmp_path / f"{name}.held.jsonl"
        assert merge(*inputs, "-o", out, "--holdout", "0.3", "--holdout-out", held) == 0
        return out.read_bytes(), held.read_bytes()

    alone = split("alone", mine)
    assert split("again", mine) == alone
    # Both sides have examples, so the comparison below can fail.
    assert alone[0]
    assert alone[1]

    out, held = (set(part.splitlines()) for part in split("joined", others, mine))
    mine_out, mine_held = (set(part.splitlines()) for part in alone)
    assert mine_out <= out
    assert not mine_out & held
    assert mine_held <= held
    assert not mine_held & out


def test_holdout_zero_writes_an_empty_held_out_file(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "a.jsonl", [chat(f"q{n}") for n in range(20)])
    out, held = tmp_path / "out.jsonl", tmp_path / "held.jsonl"

    assert merge(source, "-o", out, "--holdout", "0", "--holdout-out", held) == 0

    assert len(read_jsonl(out)) == 20
    assert held.read_bytes() == b""


# --- lines that are not examples --------------------------------------------------------------


def test_a_cut_short_last_line_is_skipped_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cut = write_jsonl(tmp_path / "cut.jsonl", [chat("q1"), chat("q2")], tail='{"messages": [{"ro')
    # Blank lines after the cut line still leave it the last.
    blank = write_jsonl(tmp_path / "blank.jsonl", [chat("q3")], tail='{"messages": \n\n')
    out = tmp_path / "out.jsonl"

    assert merge(cut, blank, "-o", out) == 0

    assert read_jsonl(out) == [chat("q1"), chat("q2"), chat("q3")]
    captured = capsys.readouterr()
    assert f"{cut}:3: warning: the last line is not complete JSON" in captured.err
    assert f"{blank}:2: warning: the last line is not complete JSON" in captured.err
    assert "truncated last lines skipped: 2" in captured.out


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"messages": [', "error: invalid JSON at column"),
        ("[1, 2]", "error: the line is an array, not a JSON object"),
        ('{"prompt": "hi", "completion": "there"}', "error: no `messages` list"),
        ('{"messages": "hi"}', "error: no `messages` list"),
    ],
)
def test_a_bad_line_before_the_end_is_an_error_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad_line: str, message: str
) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", [chat("q0")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(f"{json.dumps(chat('q1'))}\n{bad_line}\n{json.dumps(chat('q2'))}\n")
    out, held = tmp_path / "out.jsonl", tmp_path / "held.jsonl"
    out.write_text("the previous merge\n")

    code = merge(good, bad, "-o", out, "--holdout", "0.5", "--holdout-out", held, "--force")

    assert code == 1
    assert f"{bad}:2: {message}" in capsys.readouterr().err
    assert out.read_text() == "the previous merge\n"
    assert not held.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "good.jsonl", "out.jsonl"]


def test_a_preference_example_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preference = {
        "input": {"messages": [{"role": "user", "content": "hi"}]},
        "preferred_output": [{"role": "assistant", "content": "Hello!"}],
        "non_preferred_output": [{"role": "assistant", "content": "What?"}],
    }
    source = write_jsonl(tmp_path / "mixed.jsonl", [chat("q1"), preference])
    out = tmp_path / "out.jsonl"

    assert merge(source, "-o", out) == 1

    err = capsys.readouterr().err
    assert f"{source}:2: error: a preference (DPO) example: merge joins chat examples" in err
    assert not out.exists()


# --- refusals ---------------------------------------------------------------------------------


def test_an_existing_output_is_kept_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_jsonl(tmp_path / "a.jsonl", [chat("q1")])
    out = tmp_path / "out.jsonl"
    out.write_text("keep me\n")

    assert merge(source, "-o", out) == 1
    assert f"{out} exists; pass --force" in capsys.readouterr().err
    assert out.read_text() == "keep me\n"

    assert merge(source, "-o", out, "--force") == 0
    assert read_jsonl(out) == [chat("q1")]


def test_an_existing_held_out_file_is_kept_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_jsonl(tmp_path / "a.jsonl", [chat("q1")])
    out, held = tmp_path / "out.jsonl", tmp_path / "held.jsonl"
    held.write_text("keep me\n")

    assert merge(source, "-o", out, "--holdout", "0.1", "--holdout-out", held) == 1

    assert f"{held} exists; pass --force" in capsys.readouterr().err
    assert held.read_text() == "keep me\n"
    assert not out.exists()


@pytest.mark.parametrize("which", ["output", "held-out"])
def test_an_input_is_never_overwritten_even_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str
) -> None:
    captures = tmp_path / "captures"
    source = write_jsonl(captures / "a.jsonl", [chat("q1"), chat("q1")])
    before = source.read_bytes()
    out, held = tmp_path / "out.jsonl", tmp_path / "held.jsonl"
    if which == "output":
        out = source
    else:
        held = source

    code = merge(captures, "-o", out, "--holdout", "0.5", "--holdout-out", held, "--force")

    assert code == 1
    assert f"{source} is one of the input files" in capsys.readouterr().err
    assert source.read_bytes() == before


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--holdout", "0.1"], "--holdout needs --holdout-out"),
        (["--holdout-out", "held.jsonl"], "--holdout-out needs --holdout"),
        (["--holdout", "1", "--holdout-out", "held.jsonl"], "must be at least 0 and below 1"),
        (["--holdout", "-0.1", "--holdout-out", "held.jsonl"], "must be at least 0 and below 1"),
    ],
)
def test_holdout_options_are_checked_by_the_parser(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    source = write_jsonl(tmp_path / "a.jsonl", [chat("q1")])
    out = tmp_path / "out.jsonl"

    with pytest.raises(SystemExit) as exit_info:
        merge(source, "-o", out, *options)

    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_missing_input_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out.jsonl"

    assert merge(tmp_path / "nothing.jsonl", "-o", out) == 1
    assert merge(tmp_path / "empty", "-o", out) == 1

    err = capsys.readouterr().err
    assert "nothing.jsonl: no such file or directory" in err
    assert "empty: no *.jsonl files in the directory" in err
    assert not out.exists()


# --- with the other commands ------------------------------------------------------------------


def test_a_merge_of_checked_files_passes_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for path in SUPPORT_FILES:
        assert main(["training", "check", str(path)]) == 0
    assert "0 errors, 0 warnings" in capsys.readouterr().out
    out, held = tmp_path / "out.jsonl", tmp_path / "held.jsonl"

    split = ["--holdout", "0.1", "--holdout-out", held]
    assert merge(*SUPPORT_FILES, *SUPPORT_FILES, "-o", out, *split) == 0
    capsys.readouterr()

    assert main(["training", "check", str(out)]) == 0
    assert "0 errors, 0 warnings" in capsys.readouterr().out
    total = len(distinct([example for path in SUPPORT_FILES for example in read_jsonl(path)]))
    assert len(read_jsonl(out)) + len(read_jsonl(held)) == total
    assert read_jsonl(held)  # the held-out part exists for eval


@pytest.mark.slow
def test_the_command_runs_as_a_process_and_says_what_to_run_next(tmp_path: Path) -> None:
    captures = tmp_path / "captures"
    write_jsonl(captures / "1.jsonl", [chat(f"q{n}") for n in range(40)])
    write_jsonl(captures / "2.jsonl", [chat(f"q{n}") for n in range(20, 60)], tail='{"mess')
    out, held = tmp_path / "out.jsonl", tmp_path / "held.jsonl"

    command = ["training", "merge", str(captures), "-o", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "proxy", *command, "--holdout", "0.2", "--holdout-out", str(held)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    cut = captures / "2.jsonl"
    assert f"{cut}:41: warning: the last line is not complete JSON" in result.stderr
    assert "read 2 files: 80 examples" in result.stdout
    assert "duplicates dropped: 20" in result.stdout
    assert len(read_jsonl(out)) + len(read_jsonl(held)) == 60
    # The suggested eval command is one the eval parser accepts, with the held-out file.
    suggestion = next(line for line in result.stdout.splitlines() if "tuned-proxy eval" in line)
    args = build_parser().parse_args(shlex.split(suggestion.strip())[1:])
    assert (args.command, args.examples) == ("eval", str(held))


@pytest.mark.slow
def test_memory_does_not_grow_with_the_examples(tmp_path: Path) -> None:
    padding = "x" * 4000
    source = write_jsonl(tmp_path / "big.jsonl", [chat(f"q{n} {padding}") for n in range(3000)])
    out = tmp_path / "out.jsonl"

    tracemalloc.start()
    try:
        assert merge(source, "-o", out) == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert out.read_bytes().count(b"\n") == 3000
    # Holding the examples would take more than the file; a digest each takes a few percent.
    assert peak < source.stat().st_size // 10
