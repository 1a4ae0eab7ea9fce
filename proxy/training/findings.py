"""What `training check` reports: one finding per problem, with the line and a fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One problem of a training file.

    `line` is the 1-based line of the example, None for a problem of the whole file.
    An error makes the file unusable for fine-tuning (the upload or the job would fail, or
    the model would learn something broken); a warning is worth a look but may be intended.
    """

    severity: Severity
    message: str
    fix: str
    line: int | None = None

    def format(self, file: str) -> str:
        """`FILE:LINE: severity: message (fix: …)`, the way compilers report, so editors link it."""
        where = file if self.line is None else f"{file}:{self.line}"
        return f"{where}: {self.severity}: {self.message} (fix: {self.fix})"


def error(message: str, fix: str) -> Finding:
    return Finding("error", message, fix)


def warning(message: str, fix: str) -> Finding:
    return Finding("warning", message, fix)
