"""The eval's progress bar: drawn in place on a terminal, silent otherwise."""

from __future__ import annotations

import io

from proxy.eval.progress import BAR_WIDTH, ProgressBar


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_silent_when_stderr_is_not_a_terminal() -> None:
    stream = io.StringIO()
    bar = ProgressBar(10, stream)
    bar.advance()
    bar.close()
    assert stream.getvalue() == ""


def test_redraws_one_line_on_a_terminal() -> None:
    stream = FakeTerminal()
    bar = ProgressBar(4, stream)
    bar.advance()
    bar.advance(failed=True)
    bar.close()
    text = stream.getvalue()
    assert text.count("\r") == 2
    assert text.endswith("\n")
    last = text.rstrip("\n").split("\r")[-1]
    assert "2/4 requests, 1 failed" in last
    assert last.startswith("[" + "#" * (BAR_WIDTH // 2) + "." * (BAR_WIDTH // 2) + "]")
