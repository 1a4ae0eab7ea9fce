"""`tuned-proxy training merge`: chat training files joined into one, repeats dropped, a
held-out part split off.

Capture writes a route's traffic as many files (rotated by size, named by UTC time), and the
same conversation is often captured more than once. Merging joins them in the order given (a
directory's `*.jsonl` in name order, which for capture files is time order), keeps the first
example of each distinct `messages` (tool-call ids aside: an upstream makes up new ones for
each answer), and sends each example to the output or to the held-out file by a hash of its
messages. The hash alone decides the side, so an example lands on the
same side whatever files it is merged with, and a repeat can never be trained on and
evaluated against at once.

Files can be large and many: lines are read one at a time and written as they are read, and
only a digest per distinct conversation is remembered. Both outputs are written under a
temporary name beside their target and renamed over it when everything was read: a merge that
fails writes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from proxy import jsonutil
from proxy.rewrite.fields import json_type
from proxy.training.findings import Finding, error, warning
from proxy.training.kinds import kind_of
from proxy.training.reader import RawLine, TrainingFileError, is_blank, read_lines

_CHAT_ONLY = "merge joins chat examples"


class MergeError(Exception):
    """The merge cannot start (an input is missing, an output would overwrite a file); the
    message names the file."""


@dataclass
class MergeReport:
    files: int = 0
    examples: int = 0  # examples read, duplicates included
    duplicates: int = 0
    truncated: int = 0  # last lines skipped as cut short
    written: int = 0
    held_out: int = 0
    errors: int = 0


# --- the inputs and outputs -------------------------------------------------------------------


def input_files(paths: Sequence[Path]) -> list[Path]:
    """The files to read, in order: a file as named, a directory as its `*.jsonl` by name.

    A file named twice (itself and through its directory) is read once: reading it again
    would only count its examples as duplicates of themselves.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted((p for p in path.glob("*.jsonl") if p.is_file()), key=lambda p: p.name)
            if not found:
                raise MergeError(f"{path}: no *.jsonl files in the directory")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise MergeError(f"{path}: no such file or directory")
    unique: dict[Path, Path] = {}
    for file in files:
        unique.setdefault(file.resolve(), file)
    return list(unique.values())


def check_outputs(inputs: Sequence[Path], outputs: Sequence[Path], *, force: bool) -> None:
    """Refuse outputs that would destroy data: an input (even with --force, since it is read
    while the output is written), the same file twice, an existing file without --force."""
    read = {file.resolve() for file in inputs}
    targets = [out.resolve() for out in outputs]
    for out, target in zip(outputs, targets, strict=True):
        if target in read:
            raise MergeError(f"{out} is one of the input files; write the merge elsewhere")
        if _partial(target) in read:
            raise MergeError(f"{out} is written first as {_partial(out)}, an input file")
        if not out.parent.is_dir():
            raise MergeError(f"{out}: no directory {out.parent} to write it in")
        if out.exists() and not force:
            raise MergeError(f"{out} exists; pass --force to overwrite it")
    if len(set(targets)) < len(targets):
        raise MergeError(f"{outputs[0]}: the output and the held-out file must differ")


def _partial(target: Path) -> Path:
    return target.with_name(target.name + ".partial")


class _Replacement:
    """A file written as `TARGET.partial` and renamed over its target only on `commit`:
    readers of the target never see half a merge, and a failed merge leaves nothing behind
    (the `.partial` name is no `*.jsonl`, so no later merge of the directory reads it)."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.partial = _partial(target)

    def __enter__(self) -> BinaryIO:
        self.sink = self.partial.open("wb")
        return self.sink

    def commit(self) -> None:
        self.sink.close()
        self.partial.replace(self.target)

    def __exit__(self, *exc_info: object) -> None:
        self.sink.close()
        self.partial.unlink(missing_ok=True)


# --- one example ------------------------------------------------------------------------------


def messages_digest(messages: list[Any]) -> bytes:
    """The SHA-256 of the messages' canonical JSON, their tool-call ids renamed: what tells
    repeats apart and picks a side.

    Canonical (sorted keys, compact) so that a repeat written with other key order or spacing
    is still a repeat; a digest rather than the text so that memory grows by 32 bytes per
    conversation, however long. Call ids are labels an upstream makes up for each answer
    (OpenAI's and llama.cpp's are random), so the same conversation captured twice, answered
    with the same calls, differs in them alone: they are renamed in order of appearance
    (`call_ids_renamed`), which keeps which result answers which call.
    """
    return hashlib.sha256(jsonutil.dumps_canonical(call_ids_renamed(messages))).digest()


def call_ids_renamed(messages: list[Any]) -> list[Any]:
    """The messages with each string tool-call id, where a call names it (`tool_calls[].id`)
    and where a result does (`tool_call_id`), replaced by `call_N`, N counting the distinct
    ids in order of appearance from 0; a message without either is the same object."""
    names: dict[str, str] = {}

    def renamed(value: Any) -> Any:
        return names.setdefault(value, f"call_{len(names)}") if isinstance(value, str) else value

    out = []
    for message in messages:
        if isinstance(message, dict):
            calls = message.get("tool_calls")
            if isinstance(calls, list):
                message = {**message, "tool_calls": [_call_renamed(c, renamed) for c in calls]}
            if "tool_call_id" in message:
                message = {**message, "tool_call_id": renamed(message["tool_call_id"])}
        out.append(message)
    return out


def _call_renamed(call: Any, renamed: Callable[[Any], Any]) -> Any:
    if isinstance(call, dict) and "id" in call:
        return {**call, "id": renamed(call["id"])}
    return call


def holdout_point(digest: bytes) -> float:
    """A number in [0, 1) fixed by the digest (its first 8 bytes, as `sticky_uniform` does
    for routing); an example is held out when it is below the held-out fraction."""
    return int.from_bytes(digest[:8], "big") / 2**64


def chat_example(value: Any) -> dict[str, Any] | Finding:
    """`value` when it is a chat example, else the error that says why it cannot be merged."""
    if not isinstance(value, dict):
        return error(
            f"the line is {json_type(value)}, not a JSON object",
            'each line is one chat example: {"messages": [...], "tools": [...]}',
        )
    if kind_of(value) == "preference":
        return error(
            f"a preference (DPO) example: {_CHAT_ONLY}",
            "merge chat files only; keep preference files apart",
        )
    if not isinstance(value.get("messages"), list):
        return error(
            f"no `messages` list: {_CHAT_ONLY}",
            'each line is one chat example: {"messages": [...], "tools": [...]}',
        )
    return value


def _unparsable(line: RawLine, exc: jsonutil.JSONDecodeError) -> Finding:
    return dataclasses.replace(
        error(
            f"invalid JSON at column {exc.colno}: {exc.msg}",
            "each line must be one complete JSON object; only a file's last line may be cut "
            "short (a capture stopped mid-write), and it is then skipped",
        ),
        line=line.number,
    )


# --- the merge --------------------------------------------------------------------------------


class _Merge:
    def __init__(self, holdout: float) -> None:
        self.holdout = holdout
        self.seen: set[bytes] = set()
        self.report = MergeReport()

    def read(self, path: Path, out: BinaryIO, heldout: BinaryIO | None) -> None:
        """Merge one file's examples. A line that is not JSON is held back until the next
        non-blank line shows it was not the file's last: only a last line can be one that a
        crash cut short."""
        self.report.files += 1
        unparsable: Finding | None = None
        for line in read_lines(path):
            if is_blank(line):
                continue
            if unparsable is not None:
                self._fail(path, unparsable)
                unparsable = None
            try:
                value = jsonutil.loads(line.data.rstrip(b"\r\n"))
            except jsonutil.JSONDecodeError as exc:
                unparsable = _unparsable(line, exc)
                continue
            self._take(path, line.number, value, out, heldout)
        if unparsable is not None:
            self._skip_truncated(path, unparsable)

    def _take(
        self, path: Path, number: int, value: Any, out: BinaryIO, heldout: BinaryIO | None
    ) -> None:
        example = chat_example(value)
        if isinstance(example, Finding):
            self._fail(path, dataclasses.replace(example, line=number))
            return
        self.report.examples += 1
        digest = messages_digest(example["messages"])
        if digest in self.seen:
            self.report.duplicates += 1
            return
        self.seen.add(digest)
        if self.report.errors:
            return  # nothing will be written: only count
        line = jsonutil.dumps(example) + b"\n"
        if heldout is not None and holdout_point(digest) < self.holdout:
            heldout.write(line)
            self.report.held_out += 1
        else:
            out.write(line)
            self.report.written += 1

    def _fail(self, path: Path, finding: Finding) -> None:
        self.report.errors += 1
        print(finding.format(str(path)), file=sys.stderr)

    def _skip_truncated(self, path: Path, unparsable: Finding) -> None:
        self.report.truncated += 1
        skipped = warning(
            f"the last line is not complete JSON ({unparsable.message}); skipped",
            "nothing to do if the file was being written when its writer stopped; "
            "otherwise repair the line",
        )
        print(dataclasses.replace(skipped, line=unparsable.line).format(str(path)), file=sys.stderr)


def merge(
    inputs: Sequence[Path], out: Path, *, holdout: float = 0.0, heldout: Path | None = None
) -> MergeReport:
    """Merge `inputs` into `out` (and `heldout`); both are replaced only when no example had
    an error (`report.errors`). Raises TrainingFileError or OSError on a file it cannot read
    or write, and then writes nothing either."""
    job = _Merge(holdout)
    replacements = [_Replacement(out)] + ([] if heldout is None else [_Replacement(heldout)])
    with ExitStack() as stack:
        sinks = [stack.enter_context(replacement) for replacement in replacements]
        held = sinks[1] if heldout is not None else None
        for path in inputs:
            job.read(path, sinks[0], held)
        if not job.report.errors:
            for replacement in replacements:
                replacement.commit()
    return job.report


def format_summary(report: MergeReport, out: Path, heldout: Path | None) -> str:
    """What was merged, where it went, and the next commands to run on it."""
    lines = [
        f"read {report.files} file{'' if report.files == 1 else 's'}: {report.examples} examples",
        f"  duplicates dropped: {report.duplicates}",
        f"  truncated last lines skipped: {report.truncated}",
        f"wrote {out} ({report.written} examples)",
    ]
    next_steps = [f"tuned-proxy training check {out}"]
    if heldout is not None:
        lines.append(f"held out {heldout} ({report.held_out} examples)")
        next_steps.append(f"tuned-proxy eval {heldout} -c CONFIG --model ROUTE")
    lines.append("next: " + next_steps[0])
    lines.extend("      " + step for step in next_steps[1:])
    return "\n".join(lines)


def run_merge(
    paths: Sequence[Path],
    out: Path,
    *,
    holdout: float = 0.0,
    heldout: Path | None = None,
    force: bool = False,
) -> int:
    """The body of `tuned-proxy training merge`: findings on stderr, the summary on stdout.

    Returns 1, having written nothing, when an input cannot be read or has an error, or an
    output is refused; else 0.
    """
    outputs = [out] if heldout is None else [out, heldout]
    try:
        inputs = input_files(paths)
        check_outputs(inputs, outputs, force=force)
        report = merge(inputs, out, holdout=holdout, heldout=heldout)
    except (MergeError, TrainingFileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if report.errors:
        written = " or ".join(str(path) for path in outputs)
        print(f"error: nothing written to {written}", file=sys.stderr)
        return 1
    print(format_summary(report, out, heldout))
    return 0
