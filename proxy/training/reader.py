"""Reading a JSONL training file one line at a time.

Training files can be hundreds of megabytes, so nothing here holds more than one line: the
memory of `training check` and `training rewrite` grows with the longest example, not with
the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from proxy import jsonutil
from proxy.rewrite.fields import json_type
from proxy.training.findings import Finding, error

UTF8_BOM = b"\xef\xbb\xbf"  # Azure asks for training files saved with one


class TrainingFileError(Exception):
    """The file cannot be read at all (missing, unreadable); the message names it."""


class RawLine(NamedTuple):
    number: int  # 1-based
    data: bytes  # the line without its byte order mark; the newline is kept


def read_lines(path: Path) -> Iterator[RawLine]:
    """Yield every line of `path`, blank ones included (the caller decides what they mean)."""
    try:
        with path.open("rb") as file:
            for number, data in enumerate(file, start=1):
                yield RawLine(number, data.removeprefix(UTF8_BOM) if number == 1 else data)
    except OSError as exc:
        raise TrainingFileError(f"{path}: cannot read the file: {exc.strerror or exc}") from exc


def starts_with_bom(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            return file.read(len(UTF8_BOM)) == UTF8_BOM
    except OSError as exc:
        raise TrainingFileError(f"{path}: cannot read the file: {exc.strerror or exc}") from exc


def is_blank(line: RawLine) -> bool:
    return not line.data.strip()


def parse_example(line: RawLine) -> dict[str, Any] | Finding:
    """The example on `line`, or the error that says why it is not one."""
    try:
        # Without the newline, so that a truncated line's column points at its end.
        example = jsonutil.loads(line.data.rstrip(b"\r\n"))
    except jsonutil.JSONDecodeError as exc:
        # orjson counts lines inside the document; each example is one line, so the column
        # is what locates the fault.
        return error(
            f"invalid JSON at column {exc.colno}: {exc.msg}",
            "each line must be one complete JSON object, in UTF-8, with no line breaks inside",
        )
    if not isinstance(example, dict):
        return error(
            f"the line is {json_type(example)}, not a JSON object",
            'each line is one example: {"messages": [...], "tools": [...]}',
        )
    return example
