"""Eval cases: the turns of a held-out chat fine-tuning file that a variant is asked to replay.

An example is read with the training-file reader (line numbers, BOM, one line at a time) and
turned into one case per assistant turn worth asking about:

- a turn that makes tool calls: the request is the conversation up to that turn, with the
  example's tools, and the expected answer is its calls (several = parallel calls);
- a turn that answers a user message in plain text while tools are offered: a turn that needs
  no tool, where the right answer is to make no call.

Turns with `weight: 0` are skipped: the training format marks with it a turn kept as context
but known to be wrong, so it is no answer to compare with. Examples in the deprecated
`functions` format are skipped whole and reported; eval works on `tools`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from proxy.training.example import Example, read_example
from proxy.training.findings import Finding
from proxy.training.kinds import kind_of
from proxy.training.reader import is_blank, parse_example, read_lines

CaseKind = Literal["tool_call", "no_call"]

# Keys of a training message that are not part of a chat request (the API would refuse them).
_TRAINING_ONLY_KEYS = frozenset({"weight"})


@dataclass(frozen=True)
class ExpectedCall:
    name: str
    arguments: str  # the JSON string as written in the example


@dataclass(frozen=True)
class EvalCase:
    """One turn to replay: what the application sends, and what the example answered."""

    id: str  # "L12.m4": line 12 of the file, message 4 of its example
    line: int
    message_index: int
    request: dict[str, Any]  # messages, tools, parallel_tool_calls; no model
    expected: tuple[ExpectedCall, ...]  # empty: a turn that needs no tool

    @property
    def kind(self) -> CaseKind:
        return "tool_call" if self.expected else "no_call"

    @property
    def parallel(self) -> bool:
        return len(self.expected) > 1


@dataclass(frozen=True)
class Skipped:
    line: int
    reason: str


@dataclass
class CaseSet:
    cases: list[EvalCase] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    examples: int = 0  # examples read (non-blank lines), skipped ones included

    def count(self, kind: CaseKind) -> int:
        return sum(1 for case in self.cases if case.kind == kind)


def read_cases(path: Path, max_examples: int | None = None) -> CaseSet:
    """Every case of the file at `path` (at most `max_examples` examples are read).

    Raises `TrainingFileError` when the file cannot be read at all; a line that is not a
    usable example is reported in `skipped`, never fatal.
    """
    found = CaseSet()
    for line_number, data in _examples(path):
        if max_examples is not None and found.examples >= max_examples:
            break
        found.examples += 1
        if isinstance(data, Finding):
            found.skipped.append(Skipped(line_number, data.message))
            continue
        outcome = cases_of_example(data, line_number)
        if isinstance(outcome, Skipped):
            found.skipped.append(outcome)
        else:
            found.cases.extend(outcome)
    return found


def _examples(path: Path) -> Iterator[tuple[int, dict[str, Any] | Finding]]:
    for line in read_lines(path):
        if not is_blank(line):
            yield line.number, parse_example(line)


def cases_of_example(data: dict[str, Any], line: int) -> list[EvalCase] | Skipped:
    """The cases of one example, or why it has none that can be replayed."""
    if kind_of(data) == "preference":
        # Its outputs are text only (the guide's rule): no tool call to compare the answer to.
        return Skipped(line, "a preference (DPO) example: eval replays chat examples")
    example = read_example(data)
    if example is None:
        return Skipped(line, "the example has no messages")
    if example.legacy:
        return Skipped(line, "legacy `functions` format (eval replays `tools` examples)")
    tools = data.get("tools")
    if not isinstance(tools, list) or not tools:
        return Skipped(line, "the example offers no tools")
    cases = []
    for index, role in enumerate(example.roles):
        if role != "assistant":
            continue
        case = _case(example, index, line, tools)
        if isinstance(case, Skipped):
            return case
        if case is not None:
            cases.append(case)
    return cases


def _case(example: Example, index: int, line: int, tools: list[Any]) -> EvalCase | Skipped | None:
    message = example.message(index)
    if message is None or message.get("weight") == 0:
        return None
    calls = example.calls_by_message.get(index, [])
    expected = []
    for call in calls:
        arguments = call.function.get("arguments") if call.function is not None else None
        if call.name is None or not isinstance(arguments, str):
            return Skipped(line, f"{call.where}: a call needs a name and string arguments")
        expected.append(ExpectedCall(call.name, arguments))
    if not expected and not _answers_user(example, index):
        # A text turn after tool results sums them up; the turns that decide whether to
        # call at all are the ones that answer the user.
        return None
    return EvalCase(
        id=f"L{line}.m{index}",
        line=line,
        message_index=index,
        request=_request(example, index, tools),
        expected=tuple(expected),
    )


def _answers_user(example: Example, index: int) -> bool:
    message = example.message(index)
    content = message.get("content") if message is not None else None
    return index > 0 and example.roles[index - 1] == "user" and isinstance(content, str)


def _request(example: Example, index: int, tools: list[Any]) -> dict[str, Any]:
    """What the application sends before turn `index`: the conversation so far and the tools."""
    messages = [_as_request_message(m) for m in example.messages[:index]]
    request: dict[str, Any] = {"messages": messages, "tools": tools}
    if isinstance(example.data.get("parallel_tool_calls"), bool):
        request["parallel_tool_calls"] = example.data["parallel_tool_calls"]
    return request


def _as_request_message(message: Any) -> Any:
    if isinstance(message, dict) and _TRAINING_ONLY_KEYS & message.keys():
        return {k: v for k, v in message.items() if k not in _TRAINING_ONLY_KEYS}
    return message
