"""The one bounded cache of the request path: a dict that forgets what was used least lately.

Every cache the proxy fills from traffic is one of these, weighed by what it holds (an
estimate of the memory of the key and the value, not of the key's text alone), so that a
client sending something new and heavy every time cannot grow the process.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from proxy import jsonutil

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# What a parsed JSON value costs in memory per element (a dict, a list, a string, a number),
# over its text: measured with tracemalloc on orjson's output, 8 B (a small int in a list) to
# 96 B (a one-key object); the larger figure is taken.
BYTES_PER_JSON_ELEMENT = 100


class BoundedCache(Generic[K, V]):
    """At most `max_entries` entries weighing at most `max_bytes` in all (as `weigh(key,
    value)` says); the entry used least lately leaves first, and an entry heavier than the
    whole budget is not kept."""

    def __init__(self, weigh: Callable[[K, V], int], max_entries: int, max_bytes: int) -> None:
        self.weigh, self.max_entries, self.max_bytes = weigh, max_entries, max_bytes
        self._entries: dict[K, tuple[V, int]] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def weight(self) -> int:
        """What the entries kept weigh now, in bytes."""
        return self._bytes

    def get(self, key: K) -> V | None:
        found = self._entries.pop(key, None)
        if found is None:
            return None
        self._entries[key] = found  # now the most lately used
        return found[0]

    def put(self, key: K, value: V) -> bool:
        """Keep `value` under `key`; False when it weighs more than the whole budget."""
        size = self.weigh(key, value)
        if size > self.max_bytes:
            return False
        replaced = self._entries.pop(key, None)
        if replaced is not None:
            self._bytes -= replaced[1]
        while self._entries and (
            len(self._entries) >= self.max_entries or self._bytes + size > self.max_bytes
        ):
            oldest = next(iter(self._entries))
            self._bytes -= self._entries.pop(oldest)[1]
        self._entries[key] = (value, size)
        self._bytes += size
        return True

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0


def weigh_json_text(text: bytes) -> int:
    """The memory a parsed JSON text may hold, from its text: the text plus its elements."""
    return len(text) + BYTES_PER_JSON_ELEMENT * jsonutil.elements_at_most(text)
