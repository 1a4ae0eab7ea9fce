"""A one-line progress bar on stderr, redrawn in place; silent when stderr is not a terminal
(a CI log or a file would fill with carriage returns)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 30


class ProgressBar:
    def __init__(self, total: int, stream: TextIO | None = None, *, enabled: bool | None = None):
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()

    def advance(self, *, failed: bool = False) -> None:
        self.done += 1
        self.failed += int(failed)
        self.draw()

    def line(self) -> str:
        filled = BAR_WIDTH * self.done // self.total if self.total else BAR_WIDTH
        elapsed = int(time.monotonic() - self.started)
        failed = f", {self.failed} failed" if self.failed else ""
        return (
            f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.done}/{self.total} requests"
            f"{failed}, {elapsed // 60}:{elapsed % 60:02d}"
        )

    def draw(self) -> None:
        if self.enabled:
            self.stream.write("\r" + self.line())
            self.stream.flush()

    def close(self) -> None:
        """End the bar's line, so what is printed next starts on a fresh one."""
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
