"""The SSE splitter is pure: literal byte strings in, whole events out, nothing rewritten."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


def _regex_events(stream: bytes) -> tuple[list[bytes], bytes]:
    """The reference: events end at the first blank line of any framing, left to right."""
    events, start = [], 0
    for match in re.finditer(rb"\r\n\r\n|\n\n|\r\r", stream):
        events.append(stream[start : match.end()])
        start = match.end()
    return events, stream[start:]


@given(
    st.lists(st.sampled_from([b"\n", b"\r", b"data: ", b"x", b"{}", b":"]), max_size=40), st.data()
)
def test_any_framing_and_any_reads_give_the_reference_events(
    pieces: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(pieces)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    splitter, events, start = EventSplitter(), [], 0
    for cut in [*cuts, len(stream)]:
        events += splitter.feed(stream[start:cut])
        start = cut
    expected_events, expected_pending = _regex_events(stream)
    if b"\r" not in stream:
        assert (events, splitter.pending) == (expected_events, expected_pending)
    else:  # a CR split from its LF across reads may end an event early, as SSE allows
        assert b"".join(events) + splitter.pending == stream
