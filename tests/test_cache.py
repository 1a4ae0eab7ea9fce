"""The request path's bounded cache: the oldest entries leave first."""

from __future__ import annotations

from proxy.cache import BoundedCache


def test_a_bounded_cache_forgets_the_oldest_by_entries_and_by_bytes() -> None:
    by_entries: BoundedCache[bytes, int] = BoundedCache(len, max_entries=2, max_bytes=100)
    for value, text in enumerate((b"[1]", b"[2]", b"[3]")):
        by_entries.put(text, value)
    assert len(by_entries) == 2
    assert by_entries.get(b"[1]") is None  # the oldest left
    assert by_entries.get(b"[3]") == 2
    by_bytes: BoundedCache[bytes, int] = BoundedCache(len, max_entries=100, max_bytes=10)
    by_bytes.put(b"[1,2,3,4]", 1)  # 9 bytes
    by_bytes.put(b"[5,6]", 2)  # 5 more: the first leaves
    assert len(by_bytes) == 1
    by_bytes.put(b"[" + b"0," * 10 + b"0]", 3)  # heavier than the whole budget: not kept
    assert by_bytes.get(b"[5,6]") == 2
    assert len(by_bytes) == 1
