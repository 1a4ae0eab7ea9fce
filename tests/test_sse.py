"""The SSE splitter is pure: literal byte strings in, whole events out, nothing rewritten."""

from __future__ import annotations

import pytest

from proxy.sse import EventSplitter, EventTooLarge, event_data, format_event


def test_whole_events_pass_through_byte_for_byte() -> None:
    stream = b'data: {"a":1}\n\ndata: {"b":2}\n\n'
    assert EventSplitter().feed(stream) == [b'data: {"a":1}\n\n', b'data: {"b":2}\n\n']


def test_event_split_across_reads_is_held_until_complete() -> None:
    splitter = EventSplitter()
    assert splitter.feed(b'data: {"a"') == []
    assert splitter.pending == b'data: {"a"'
    assert splitter.feed(b":1}\n") == []
    assert splitter.feed(b"\ndata: [DO") == [b'data: {"a":1}\n\n']
    assert splitter.feed(b"NE]\n\n") == [b"data: [DONE]\n\n"]
    assert splitter.pending == b""


def test_crlf_and_cr_line_endings() -> None:
    assert EventSplitter().feed(b"data: x\r\n\r\ndata: y\r\r") == [
        b"data: x\r\n\r\n",
        b"data: y\r\r",
    ]


def test_every_split_point_gives_the_same_events() -> None:
    stream = b': keepalive\n\ndata: {"x":"a\\nb"}\n\nevent: e\ndata: 1\ndata: 2\n\ndata: [DONE]\n\n'
    expected = EventSplitter().feed(stream)
    for cut in range(len(stream)):
        splitter = EventSplitter()
        assert splitter.feed(stream[:cut]) + splitter.feed(stream[cut:]) == expected


def test_event_data_joins_lines_and_skips_comments_and_fields() -> None:
    assert event_data(b'data: {"a":1}\n\n') == b'{"a":1}'
    assert event_data(b"data:nospace\n\n") == b"nospace"
    assert event_data(b"event: e\nid: 7\ndata: 1\ndata: 2\n\n") == b"1\n2"
    assert event_data(b": keepalive\n\n") is None


def test_format_event_is_openai_framing() -> None:
    assert format_event(b'{"error":{}}') == b'data: {"error":{}}\n\n'


def test_an_endless_event_is_refused() -> None:
    splitter = EventSplitter(max_event_bytes=10)
    with pytest.raises(EventTooLarge):
        splitter.feed(b"data: " + b"x" * 20)
