"""A bounded cache for the request path: a dict that forgets its oldest entries."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """At most `max_entries` entries whose keys weigh at most `max_bytes` in all (as
    `weigh(key)` says), the oldest leaving first; a key heavier than the whole budget is not
    kept. Filled by traffic, so that a client sending something new every time cannot grow it.
    """

    def __init__(self, weigh: Callable[[K], int], max_entries: int, max_bytes: int) -> None:
        self.weigh, self.max_entries, self.max_bytes = weigh, max_entries, max_bytes
        self._entries: dict[K, V] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        return self._entries.get(key)

    def put(self, key: K, value: V) -> None:
        size = self.weigh(key)
        if size > self.max_bytes:
            return
        while self._entries and (
            len(self._entries) >= self.max_entries or self._bytes + size > self.max_bytes
        ):
            oldest = next(iter(self._entries))
            del self._entries[oldest]
            self._bytes -= self.weigh(oldest)
        self._entries[key] = value
        self._bytes += size

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
