"""`tuned-proxy training check`: a fine-tuning file with tools, checked line by line.

A file holds chat examples or preference (DPO) examples (`proxy.training.kinds`). Every
example goes through `RULES[kind]`, one ordered tuple of small functions; reading it tells
what is checked. A preference example's input is a conversation like a chat example, so most
rules are shared. A file mixing the kinds is reported at its first example of the other kind;
the other file-wide checks (enough examples, one definition per function) run once at the
end. Findings are yielded as they are found, so the check streams: its memory grows with the
number of distinct tool definitions, never with the number of examples.
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast, get_args

from proxy.training.calls import (
    answers,
    arguments,
    call_shapes,
    calls_per_message,
    offered,
    parallel_calls,
    unique_call_ids,
)
from proxy.training.definitions import Definitions
from proxy.training.example import Example, read_example
from proxy.training.extract import Difference
from proxy.training.findings import Finding, error, warning
from proxy.training.kinds import Kind, conversation, kind_of
from proxy.training.preference import input_ends_before_outputs, input_weights, preference_keys
from proxy.training.reader import (
    RawLine,
    TrainingFileError,
    is_blank,
    parse_example,
    read_lines,
    starts_with_bom,
)
from proxy.training.rules import (
    DEFAULT_MAX_TOKENS,
    MIN_EXAMPLES,
    Context,
    Format,
    Rule,
    conversation_keys,
    ends_with_assistant,
    message_roles,
    token_limit,
    tool_definitions,
    tools_format,
    weights,
)

# The calls inside the messages, and their answers: the same for both kinds.
_CALL_RULES: tuple[Rule, ...] = (
    call_shapes,
    arguments,
    offered,
    unique_call_ids,
    parallel_calls,
    answers,
)
RULES: dict[Kind, tuple[Rule, ...]] = {
    "chat": (
        # the top level and the definitions the calls are checked against
        tools_format,
        tool_definitions,
        # messages, then the calls inside them
        message_roles,
        weights,
        *_CALL_RULES,
        # the conversation as a whole
        ends_with_assistant,
        token_limit,
    ),
    # The input is checked as a chat conversation, except what is about training: only the
    # outputs are trained, and they are the last assistant message.
    "preference": (
        tools_format,
        tool_definitions,
        message_roles,
        input_weights,
        *_CALL_RULES,
        input_ends_before_outputs,
        token_limit,
    ),
}

KIND_NAMES: dict[Kind, str] = {"chat": "chat", "preference": "preference (DPO)"}

# How many line numbers a file-wide warning lists before it summarises the rest.
MAX_LINES_SHOWN = 10


@dataclass
class Summary:
    """What the file holds, counted while it is checked."""

    examples: int = 0  # non-blank lines, parsed or not
    chat_examples: int = 0
    preference_examples: int = 0
    legacy_examples: int = 0
    calls: int = 0
    parallel_messages: int = 0  # assistant messages making more than one call
    trained_turns: int = 0  # assistant messages of chat examples without weight 0
    untrained_turns: int = 0  # assistant messages of chat examples with weight 0
    largest_example_tokens: int = 0  # estimated
    functions: int = 0  # distinct function names across the file
    redefined_functions: int = 0  # functions with more than one definition
    errors: int = 0
    warnings: int = 0


class TrainingFileCheck:
    """The check of one file: iterate `findings()`, then read `summary`."""

    def __init__(
        self, path: Path, *, fmt: Format = "openai", max_tokens: int = DEFAULT_MAX_TOKENS
    ) -> None:
        self.path = path
        self.fmt = fmt
        self.summary = Summary()
        self._context = Context(max_tokens=max_tokens)
        self._definitions = Definitions()
        self._first_kind: tuple[Kind, int] | None = None  # and its line
        self._mixed = False

    def findings(self) -> Iterator[Finding]:
        """Every finding in file order, then the file-wide ones; raises TrainingFileError."""
        for finding in self._all_findings():
            if finding.severity == "error":
                self.summary.errors += 1
            else:
                self.summary.warnings += 1
            yield finding

    def _all_findings(self) -> Iterator[Finding]:
        if self.fmt == "azure" and not starts_with_bom(self.path):
            yield replace(
                warning(
                    "no UTF-8 byte order mark: Azure OpenAI asks for training files in UTF-8 "
                    "with a BOM",
                    "save the file as UTF-8 with BOM",
                ),
                line=1,
            )
        for line in read_lines(self.path):
            for finding in self._check_line(line):
                yield replace(finding, line=line.number)
        yield from self._file_findings()

    def _check_line(self, line: RawLine) -> Iterator[Finding]:
        if is_blank(line):
            yield warning("blank line", "remove it: every line of the file is one example")
            return
        self.summary.examples += 1
        data = parse_example(line)
        if isinstance(data, Finding):
            yield data
            return
        yield from self._count_kind(kind_of(data), line.number)
        example = yield from check_example(data, self._context, size=len(line.data))
        if example is not None:
            self._count(example)
            self._definitions.record(example, line.number)

    def _count_kind(self, kind: Kind, line: int) -> Iterator[Finding]:
        """Count the example's kind; an error at the first one that differs from the first's."""
        if kind == "preference":
            self.summary.preference_examples += 1
        else:
            self.summary.chat_examples += 1
        if self._first_kind is None:
            self._first_kind = (kind, line)
            return
        first, first_line = self._first_kind
        if kind != first and not self._mixed:
            self._mixed = True
            yield error(
                f"a {KIND_NAMES[kind]} example in a file whose first example (line {first_line}) "
                f"is a {KIND_NAMES[first]} example: a fine-tuning job trains with one method",
                "put chat and preference examples in separate files, one per job",
            )

    def _count(self, example: Example) -> None:
        summary = self.summary
        summary.legacy_examples += example.legacy
        summary.calls += len(example.calls)
        if len(example.calls) > len(example.calls_by_message):  # some message calls twice
            summary.parallel_messages += sum(
                count > 1 for count in calls_per_message(example).values()
            )
        if example.kind == "chat":  # a preference example's input is context, never trained
            self._count_turns(example)
        summary.largest_example_tokens = max(
            summary.largest_example_tokens, example.estimated_tokens
        )

    def _count_turns(self, example: Example) -> None:
        for index, role in enumerate(example.roles):
            if role == "assistant":
                if example.messages[index].get("weight") == 0:
                    self.summary.untrained_turns += 1
                else:
                    self.summary.trained_turns += 1

    def _file_findings(self) -> Iterator[Finding]:
        examples = self.summary.examples
        if examples < MIN_EXAMPLES:
            yield error(
                f"{examples} example{'' if examples == 1 else 's'}; fine-tuning needs at "
                f"least {MIN_EXAMPLES}",
                "add examples: 50 to 100 usually show a clear improvement",
            )
        self.summary.functions = self._definitions.functions
        for difference in self._definitions.differences():
            self.summary.redefined_functions += 1
            yield _redefined(difference)


def check_example(
    data: dict[str, Any], context: Context, *, size: int = 0
) -> Generator[Finding, None, Example | None]:
    """Yield the findings of one example (`size`: its line's bytes); return its view.

    The view is None when the example has no messages to check.
    """
    kind = kind_of(data)
    if kind == "preference":
        yield from preference_keys(data)
    conversation_data = conversation(data)
    if isinstance(conversation_data, dict):  # else `preference_keys` said why
        yield from conversation_keys(conversation_data, kind)
    example = read_example(data, size)
    if example is None:
        return None
    for rule in RULES[kind]:
        yield from rule(example, context)
    return example


def _redefined(difference: Difference) -> Finding:
    verb = "uses" if difference.examples == 1 else "use"
    found = warning(
        f"`{difference.function}` is defined {difference.variants} ways across the examples: "
        f"{_line_list(difference.lines, difference.examples)} {verb} one that differs from the "
        f"most used: {difference.summary}",
        "make every example use one definition: `tuned-proxy tools extract` writes the most "
        "used one, and a model trained on two definitions of a tool has learned neither exactly",
    )
    return replace(found, line=difference.lines[0])


def _line_list(lines: list[int], total: int) -> str:
    shown = ", ".join(str(line) for line in lines[:MAX_LINES_SHOWN])
    more = total - min(len(lines), MAX_LINES_SHOWN)
    return ("line " if total == 1 else "lines ") + shown + (f" and {more} more" if more else "")


def _examples_line(summary: Summary) -> str:
    """`17 chat examples`: the kind of the file, or the count of each kind (and of the lines
    that could not be read as an example) when it is not one kind throughout."""
    counts = {
        KIND_NAMES["chat"]: summary.chat_examples,
        KIND_NAMES["preference"]: summary.preference_examples,
        "unreadable": summary.examples - summary.chat_examples - summary.preference_examples,
    }
    present = [name for name, count in counts.items() if count]
    if len(present) == 1 and present[0] != "unreadable":
        return f"{summary.examples} {present[0]} examples"
    each = ", ".join(f"{counts[name]} {name}" for name in present)
    return f"{summary.examples} examples" + (f": {each}" if each else "")


def format_summary(file: str, summary: Summary) -> str:
    legacy = (
        f" ({summary.legacy_examples} in the deprecated functions format)"
        if summary.legacy_examples
        else ""
    )
    redefined = (
        f", {summary.redefined_functions} defined in more than one way"
        if summary.redefined_functions
        else ""
    )
    plural = "" if summary.parallel_messages == 1 else "s"
    lines = [
        f"{file}: {_examples_line(summary)}{legacy}",
        f"  tools: {summary.functions} functions{redefined}",
        f"  calls: {summary.calls} ({summary.parallel_messages} message{plural} with "
        "parallel calls)",
    ]
    if summary.chat_examples or not summary.preference_examples:
        # a preference example trains its outputs, not the assistant turns of its input
        lines.append(
            f"  assistant turns: {summary.trained_turns} trained, {summary.untrained_turns} not "
            "trained (weight 0)"
        )
    lines += [
        f"  largest example: about {summary.largest_example_tokens:,} tokens (estimated)",
        f"  {summary.errors} error{'' if summary.errors == 1 else 's'}, "
        f"{summary.warnings} warning{'' if summary.warnings == 1 else 's'}",
    ]
    return "\n".join(lines)


def _format(fmt: str) -> Format:
    if fmt not in get_args(Format):
        raise ValueError(f"unknown training file format {fmt!r}; use openai or azure")
    return cast(Format, fmt)


def run_check(path: Path, fmt: str, *, max_tokens: int = DEFAULT_MAX_TOKENS) -> int:
    """The body of `tuned-proxy training check`: findings and a summary on stdout.

    Returns 1 when the file has an error (or cannot be read), else 0.
    """
    check = TrainingFileCheck(path, fmt=_format(fmt), max_tokens=max_tokens)
    file = str(path)
    try:
        for finding in check.findings():
            print(finding.format(file))
    except TrainingFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_summary(file, check.summary))
    return 1 if check.summary.errors else 0
