"""The request path's bounded cache: weighed by what it holds, the least lately used leaves."""

from __future__ import annotations

from proxy import jsonutil
from proxy.cache import BYTES_PER_JSON_ELEMENT, BoundedCache, weigh_json_text


def by_key_length(key: bytes, value: object) -> int:
    return len(key)


def test_a_bounded_cache_forgets_the_least_lately_used_by_entries_and_by_bytes() -> None:
    by_entries: BoundedCache[bytes, int] = BoundedCache(by_key_length, 2, max_bytes=100)
    for value, text in enumerate((b"[1]", b"[2]", b"[3]")):
        by_entries.put(text, value)
    assert len(by_entries) == 2
    assert by_entries.get(b"[1]") is None  # the oldest left
    assert by_entries.get(b"[2]") == 1  # used: now the most lately used
    by_entries.put(b"[4]", 3)
    assert by_entries.get(b"[3]") is None  # the least lately used left, not [2]
    assert by_entries.get(b"[2]") == 1
    by_bytes: BoundedCache[bytes, int] = BoundedCache(by_key_length, 100, max_bytes=10)
    assert by_bytes.put(b"[1,2,3,4]", 1)  # 9 bytes
    assert by_bytes.put(b"[5,6]", 2)  # 5 more: the first leaves
    assert len(by_bytes) == 1
    assert by_bytes.weight == 5
    assert not by_bytes.put(b"[" + b"0," * 10 + b"0]", 3)  # heavier than the budget: not kept
    assert by_bytes.get(b"[5,6]") == 2
    assert len(by_bytes) == 1


def test_the_weight_counts_the_value_and_a_replaced_entry_once() -> None:
    cache: BoundedCache[str, bytes] = BoundedCache(lambda key, value: len(value), 10, 100)
    cache.put("a", b"x" * 30)
    cache.put("a", b"x" * 50)
    assert cache.weight == 50
    cache.put("b", b"x" * 60)  # 110 > 100: "a" leaves
    assert (cache.get("a"), cache.weight) == (None, 60)
    cache.clear()
    assert (len(cache), cache.weight) == (0, 0)


def test_a_json_text_weighs_its_bytes_and_its_values() -> None:
    empty_objects = b"[" + b",".join([b"{}"] * 1000) + b"]"
    assert weigh_json_text(empty_objects) >= BYTES_PER_JSON_ELEMENT * 1000
    one_string = b'"' + b"a, b, {c}, [d], " * 100 + b'"'
    assert jsonutil.elements(one_string) == 1  # punctuation inside a string is not a value
    assert jsonutil.elements_at_most(one_string) > 100  # the cheap bound counts it
