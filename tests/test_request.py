"""The parse stage: a body split into its fields, and tool lists parsed once per text."""

from __future__ import annotations

import pytest

from proxy import jsonutil
from proxy.errors import InvalidRequest
from proxy.request import ToolLists, parse_chat_body

TOOLS = b'[{"type": "function", "function": {"name": "lookup_order"}}]'


def body_with(tools: bytes, extra: bytes = b"") -> bytes:
    return b'{"model": "m", "messages": [], "tools": ' + tools + extra + b"}"


def test_the_same_tools_text_gives_the_same_shared_list() -> None:
    tool_lists = ToolLists()
    first = parse_chat_body(body_with(TOOLS), tool_lists)["tools"]
    second = parse_chat_body(body_with(TOOLS, b', "user": "u"'), tool_lists)["tools"]
    assert first is second
    assert isinstance(first, jsonutil.JsonList)
    assert first == [{"type": "function", "function": {"name": "lookup_order"}}]
    other = parse_chat_body(body_with(TOOLS.replace(b"lookup", b"cancel")), tool_lists)["tools"]
    assert other is not first
    assert len(tool_lists) == 2


def test_alternating_lists_each_keep_their_own_value() -> None:
    """The last-seen shortcut must never hand one list's value to another's text."""
    tool_lists = ToolLists(max_lists=1)  # the cache keeps one: the shortcut is all there is
    texts = [TOOLS, TOOLS.replace(b"lookup", b"cancel"), TOOLS, TOOLS, TOOLS.replace(b"l", b"L")]
    for text in texts:
        tools = parse_chat_body(body_with(text), tool_lists)["tools"]
        assert tools == jsonutil.loads(text)
        assert tools.json == jsonutil.dumps(jsonutil.loads(text))
    again = parse_chat_body(body_with(texts[-1]), tool_lists)["tools"]
    assert again is tools


def test_a_shared_list_serialises_as_its_value_and_refuses_changes() -> None:
    shared = parse_chat_body(body_with(TOOLS), ToolLists())["tools"]
    assert jsonutil.dumps({"tools": shared}) == jsonutil.dumps({"tools": jsonutil.loads(TOOLS)})
    with pytest.raises(TypeError):
        shared.append({})
    with pytest.raises(TypeError):
        shared[0] = {}
    assert shared == jsonutil.loads(TOOLS)


def test_a_duplicate_key_is_not_forwarded() -> None:
    """What goes upstream is what the proxy read: the last of duplicate keys, as before."""
    tools = b'[{"type": "function", "function": {"name": "x", "name": "lookup_order"}}]'
    shared = parse_chat_body(body_with(tools), ToolLists())["tools"]
    assert shared.json == b'[{"type":"function","function":{"name":"lookup_order"}}]'


def test_without_a_cache_tools_are_a_plain_list() -> None:
    tools = parse_chat_body(body_with(TOOLS))["tools"]
    assert type(tools) is list


def test_tools_that_are_not_a_list_are_not_kept() -> None:
    tool_lists = ToolLists()
    body = parse_chat_body(body_with(b'{"not": "a list"}'), tool_lists)
    assert body["tools"] == {"not": "a list"}
    assert len(tool_lists) == 0


def test_the_cache_is_bounded_by_count_and_by_bytes() -> None:
    by_count = ToolLists(max_lists=2)
    first = by_count.parse(b'["a"]')
    kept = by_count.parse(b'["b"]')
    by_count.parse(b'["c"]')  # the oldest, "a", leaves
    assert len(by_count) == 2
    assert by_count.parse(b'["b"]') is kept
    assert by_count.parse(b'["a"]') is not first
    by_bytes = ToolLists(max_bytes=20)
    by_bytes.parse(b'["0123456789"]')  # 14 bytes
    by_bytes.parse(b'["abcdefghij"]')  # 14 more: the first leaves
    assert len(by_bytes) == 1
    too_big = b'["' + b"x" * 30 + b'"]'
    assert by_bytes.parse(too_big) == ["x" * 30]
    assert by_bytes.parse(too_big) is not by_bytes.parse(too_big)  # heavier than it: not kept
    assert len(by_bytes) == 1


def test_fields_keep_their_values() -> None:
    raw = (
        b'{"model": "m", "messages": [{"role": "user", "content": "h\\u00e9"}],'
        b' "temperature": 0.5, "seed": 123456789012345678901234567890, "n": null}'
    )
    assert parse_chat_body(raw) == jsonutil.loads(raw)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"model": "m", "messages": [1,,2]}', "invalid_json"),
        (b'{"model": "m", "messages": []', "invalid_json"),
        (b'{"model": "m", "messages": []} trailing', "invalid_json"),
        (b'{"model": "m", "messages": [], "x": "\xff"}', "invalid_json"),  # not UTF-8
        (b'{"model": "m", "messages": [], "x": "\\ud800"}', "invalid_json"),  # lone surrogate
        (b'{"model": "m", "messages": [], "tools": [NaN]}', "invalid_json"),
        (b'{"mo\xffdel": "m", "messages": []}', "invalid_json"),  # a key that is not UTF-8
        (b'{"\xc0\xaf": 1}', "invalid_json"),
        (b'{"model": "m", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "invalid_json"),
        (b"[1, 2]", None),
        (b'"a string"', None),
    ],
)
def test_bad_bodies_are_400s(raw: bytes, code: str | None) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_chat_body(raw, ToolLists())
    assert refused.value.status == 400
    assert refused.value.code == code
