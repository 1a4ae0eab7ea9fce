"""Admission: what the proxy takes on before it works on a request, refused at once (503 with
`retry-after`) rather than queued when it would go past a limit.

Two limits: the requests being served (`server.max_in_flight`), counted once a request's body
has arrived, so that connections that send headers and no body take no slot; and the memory
that request bodies hold (`server.max_bytes_in_flight`): each body's bytes as they arrive, and
the values its JSON will be parsed into (estimated from its text before it is parsed).
"""

from __future__ import annotations

from types import TracebackType

from proxy.errors import Overloaded


class BytesInFlight:
    """The estimated bytes request bodies hold now, across every request in flight."""

    def __init__(self) -> None:
        self.held = 0

    def holding(self, limit: int) -> Holding:
        """A request's share, given back when its `with` block ends."""
        return Holding(self, limit)


class Holding:
    """One request's share of `BytesInFlight`: taken piece by piece, given back at once."""

    __slots__ = ("_budget", "_limit", "taken")

    def __init__(self, budget: BytesInFlight, limit: int) -> None:
        self._budget = budget
        self._limit = limit
        self.taken = 0

    def take(self, size: int) -> None:
        """Hold `size` more bytes, or refuse the request (503) when that would go past the
        limit: memory a request would need is refused before it is spent."""
        budget = self._budget
        if budget.held + size > self._limit:
            raise Overloaded(
                "The proxy holds too many request bytes in flight; retry shortly.",
                code="too_many_bytes_in_flight",
            )
        budget.held += size
        self.taken += size

    def __enter__(self) -> Holding:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._budget.held -= self.taken
        self.taken = 0
