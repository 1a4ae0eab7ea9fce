"""Teacher agreement: a comparing shadow's tool calls against the served answer's.

The served answer and the shadow's each arrive when they arrive; whichever comes second
compares them and counts the outcome, so the client's answer never waits for the shadow:

- `same_calls`: the same functions with equal arguments (compared as parsed JSON), in any order;
- `same_functions`: the same functions (as many calls of each), other arguments;
- `different`: other functions, or one answer called a tool and the other did not;
- `no_calls`: neither called a tool;
- `error`: either answer failed (an error status, a broken stream, a client gone).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from proxy import jsonutil
from proxy.record import RequestRecord

Calls = list[tuple[str, str]]  # (function, arguments) of each call an answer made
Count = Callable[[str, str], None]  # (route, outcome)
_FAILED = None


class Comparison:
    """One request's comparison: fed the served answer and the shadow's, in either order."""

    __slots__ = ("count", "route", "served", "shadow", "waiting")

    def __init__(self, route: str, count: Count) -> None:
        self.route = route
        self.count = count
        self.served: Calls | None = _FAILED
        self.shadow: Calls | None = _FAILED
        self.waiting = 2

    def served_answer(self, record: RequestRecord) -> None:
        """The client's answer, at its record stage."""
        answered = record.status == 200 and record.error is None and not record.client_disconnected
        self.served = calls_of(record) if answered else _FAILED
        self._arrived()

    def shadow_answer(self, record: RequestRecord | None) -> None:
        """The shadow's answer when it came back whole, else None."""
        self.shadow = calls_of(record) if record is not None else _FAILED
        self._arrived()

    def _arrived(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.count(self.route, agreement(self.served, self.shadow))


def calls_of(record: RequestRecord) -> Calls:
    """The answer's calls with their arguments (the record keeps them when it compares)."""
    return record.answered_arguments()


def agreement(served: Calls | None, shadow: Calls | None) -> str:
    """The outcome label for two answers' calls (None: the answer failed)."""
    if served is None or shadow is None:
        return "error"
    if not served and not shadow:
        return "no_calls"
    if Counter(name for name, _ in served) != Counter(name for name, _ in shadow):
        return "different"
    if Counter(map(_comparable, served)) == Counter(map(_comparable, shadow)):
        return "same_calls"
    return "same_functions"


def _comparable(call: tuple[str, str]) -> tuple[str, Any]:
    """A call as compared: its arguments parsed (key order and spacing do not count) and
    written back canonically; arguments that are not JSON compare as their text."""
    name, arguments = call
    try:
        parsed = jsonutil.loads(arguments)
    except jsonutil.JSONDecodeError:
        return name, ("text", arguments)
    return name, ("json", jsonutil.dumps_canonical(parsed))
