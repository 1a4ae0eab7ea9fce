"""The parse stage: a body split into its fields, and tool lists parsed once per text."""

from __future__ import annotations

import pytest

from proxy import jsonutil
from proxy.admission import BytesInFlight
from proxy.errors import InvalidRequest
from proxy.jsonutil import JsonList
from proxy.request import BodyLimits, ToolLists, _list_weight, parse_chat_body

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


def test_the_cache_is_bounded_by_count_and_by_memory() -> None:
    by_count = ToolLists(max_lists=2)
    first = by_count.parse(b'["a"]')
    kept = by_count.parse(b'["b"]')
    by_count.parse(b'["c"]')  # the least lately used, "a", leaves
    assert len(by_count) == 2
    assert by_count.parse(b'["b"]') is kept
    assert by_count.parse(b'["a"]') is not first
    one = _list_weight(b'["0123456789"]', JsonList(["0123456789"], b'["0123456789"]'))
    by_memory = ToolLists(max_bytes=one + 10)
    by_memory.parse(b'["0123456789"]')
    by_memory.parse(b'["abcdefghij"]')  # as heavy again: the first leaves
    assert len(by_memory) == 1
    assert by_memory.weight <= one + 10
    too_big = b'["' + b"x" * 300 + b'"]'
    assert by_memory.parse(too_big) == ["x" * 300]
    assert by_memory.parse(too_big) is not by_memory.parse(too_big)  # heavier: not kept
    assert len(by_memory) == 1


def test_a_list_of_many_small_values_weighs_them() -> None:
    """4 MB of `{}` holds ~95 MB once parsed: the weight says so, not the text's size."""
    text = b"[" + b",".join([b"{}"] * 10_000) + b"]"
    lists = ToolLists(max_bytes=len(text) * 10)
    lists.parse(text)
    assert len(lists) == 0  # 30 KB of text, ~1 MB of values: over a 300 KB budget


def test_too_many_json_values_are_refused_before_they_are_parsed() -> None:
    limits = BodyLimits(max_json_elements=1000, max_tools=128)
    many = b'{"model": "m", "messages": [], "metadata": [' + b",".join([b"{}"] * 2000) + b"]}"
    with pytest.raises(InvalidRequest) as refused:
        parse_chat_body(many, ToolLists(), limits)
    assert refused.value.code == "too_many_json_values"
    assert "at most 1000" in refused.value.message
    # Commas inside a string are not values: a long text passes.
    text = b'{"model": "m", "messages": [{"role": "user", "content": "' + b"a," * 5000 + b'"}]}'
    assert parse_chat_body(text, ToolLists(), limits)["messages"][0]["content"] == "a," * 5000


@pytest.mark.parametrize("field", ["tools", "functions"])
def test_more_tools_than_allowed_is_openais_400(field: str) -> None:
    tools = [{"type": "function", "function": {"name": f"f{n}"}} for n in range(129)]
    raw = jsonutil.dumps({"model": "m", "messages": [], field: tools})
    with pytest.raises(InvalidRequest) as refused:
        parse_chat_body(raw, ToolLists())
    assert refused.value.code == "array_above_max_length"
    assert refused.value.param == field
    assert "maximum length 128, but got an array with length 129" in refused.value.message


def test_the_values_parsed_are_held_and_a_known_list_is_not() -> None:
    budget = BytesInFlight()
    raw = body_with(TOOLS)
    tool_lists = ToolLists()
    with budget.holding(10**9) as held:
        parse_chat_body(raw, tool_lists, held=held)
        first = held.taken
    with budget.holding(10**9) as held:
        parse_chat_body(raw, tool_lists, held=held)  # the tools list is known: not parsed
        assert 0 < held.taken < first
    assert budget.held == 0


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
