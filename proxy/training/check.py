"""`tuned-proxy training check`: a chat fine-tuning file with tools, checked line by line.

Every example goes through `RULES`, one ordered tuple of small functions; reading it tells
what is checked. The file-wide checks (enough examples, one definition per function) run
once at the end. Findings are yielded as they are found, so the check streams: its memory
grows with the number of distinct tool definitions, never with the number of examples.
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast, get_args

from proxy.tools_extract import Difference
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
from proxy.training.findings import Finding, error, warning
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
    ends_with_assistant,
    example_keys,
    message_roles,
    token_limit,
    tool_definitions,
    tools_format,
    weights,
)

RULES: tuple[Rule, ...] = (
    # the top level and the definitions the calls are checked against
    tools_format,
    tool_definitions,
    # messages, then the calls inside them
    message_roles,
    weights,
    call_shapes,
    arguments,
    offered,
    unique_call_ids,
    parallel_calls,
    # the conversation as a whole
    answers,
    ends_with_assistant,
    token_limit,
)

# How many line numbers a file-wide warning lists before it summarises the rest.
MAX_LINES_SHOWN = 10


@dataclass
class Summary:
    """What the file holds, counted while it is checked."""

    examples: int = 0  # non-blank lines, parsed or not
    legacy_examples: int = 0
    calls: int = 0
    parallel_messages: int = 0  # assistant messages making more than one call
    trained_turns: int = 0  # assistant messages without weight 0
    untrained_turns: int = 0  # assistant messages with weight 0
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
        example = yield from check_example(data, self._context, size=len(line.data))
        if example is not None:
            self._count(example)
            self._definitions.record(example, line.number)

    def _count(self, example: Example) -> None:
        summary = self.summary
        summary.legacy_examples += example.legacy
        summary.calls += len(example.calls)
        if len(example.calls) > len(example.calls_by_message):  # some message calls twice
            summary.parallel_messages += sum(
                count > 1 for count in calls_per_message(example).values()
            )
        for index, role in enumerate(example.roles):
            if role == "assistant":
                if example.messages[index].get("weight") == 0:
                    summary.untrained_turns += 1
                else:
                    summary.trained_turns += 1
        summary.largest_example_tokens = max(
            summary.largest_example_tokens, example.estimated_tokens
        )

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
    yield from example_keys(data)
    example = read_example(data, size)
    if example is None:
        return None
    for rule in RULES:
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
        f"{file}: {summary.examples} examples{legacy}",
        f"  tools: {summary.functions} functions{redefined}",
        f"  calls: {summary.calls} ({summary.parallel_messages} message{plural} with "
        "parallel calls)",
        f"  assistant turns: {summary.trained_turns} trained, {summary.untrained_turns} not "
        "trained (weight 0)",
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
