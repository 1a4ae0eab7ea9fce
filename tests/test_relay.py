"""The stream relay's decisions, event by event, on literal SSE bytes (as test_sse.py does for
the splitter): what `StreamRelay._forward` sends on for a list of whole events, and what it
notes on the relay and on the request's record.

Each event is passed through as the upstream's bytes, except the usage chunk the proxy asked
for (dropped), a legacy client's tool-call chunks (translated) and an error event quoting the
proxy's key (redacted); the first event that is not a JSON object stops the stream there.
"""

from __future__ import annotations

import pytest

from proxy.record import Attempt, RequestRecord
from proxy.relay import StreamRelay, is_usage_chunk, looks_like_json_object
from proxy.upstream import UpstreamResponse

SECRET = b"sk-upstream-secret-q7Zx9T"
ERROR_EVENT_SAYS = "the upstream ended the stream with an error event"

CONTENT = (
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":'
    b'[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'
)
# Spaces, key order and UTF-8 as an upstream may write them: never re-serialised.
SPACED = b'data: {"choices": [{"delta": {"content": "caf\xc3\xa9"}, "index": 0}], "id": "c1"}\n\n'
STOP = b'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
USAGE_DATA = b'{"id":"c1","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2}}'
USAGE = b"data: " + USAGE_DATA + b"\n\n"
DONE = b"data: [DONE]\n\n"
ERROR = (
    b'data: {"error":{"message":"The server is overloaded.","type":"server_error",'
    b'"param":null,"code":"overloaded"}}\n\n'
)
TOOL_CALL = (
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","tool_calls":'
    b'[{"index":0,"id":"call_1","type":"function","function":{"name":"lookup_order",'
    b'"arguments":""}}]},"finish_reason":null}]}\n\n'
)
TOOL_CALL_DONE = (
    b'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\n'
)
# The same two chunks as a legacy (`functions`) client gets them.
LEGACY_CALL = (
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","function_call":'
    b'{"name":"lookup_order","arguments":""}},"finish_reason":null}]}\n\n'
)
LEGACY_CALL_DONE = (
    b'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"function_call"}]}\n\n'
)


def relay(legacy: bool = False, strip_usage: bool = False, secret: bytes = b"") -> StreamRelay:
    """A relay for a streamed request whose one attempt is answering; with `secret`, it redacts
    as it does once `run` hands it the upstream answer (whose `redact` knows the key)."""
    record = RequestRecord(
        request_id="req_relay",
        path="/v1/chat/completions",
        stream=True,
        attempts=[Attempt(target="v", upstream="fake")],
    )
    stream = StreamRelay(record, legacy, strip_usage)
    if secret:
        stream.redact = UpstreamResponse(200, {}, "text/event-stream", secret).redact
    return stream


def flags(stream: StreamRelay) -> tuple[bool, bool, bool]:
    return stream.saw_done, stream.saw_error, stream.saw_garbage


# ----------------------------------------------------------------------------- passed through


def test_chunks_pass_through_byte_for_byte() -> None:
    stream = relay()
    assert stream._forward([CONTENT, SPACED, STOP]) == CONTENT + SPACED + STOP
    assert flags(stream) == (False, False, False)
    assert stream.record.error is None
    assert stream.record.attempts[-1].reason is None


def test_an_event_in_crlf_framing_passes_as_it_came() -> None:
    event = b'data: {"id":"c1","choices":[]}\r\n\r\n'
    stream = relay()
    assert stream._forward([event]) == event
    assert flags(stream) == (False, False, False)


@pytest.mark.parametrize(
    "event",
    [b": keepalive\n\n", b":\n\n", b"event: ping\n\n", b"id: 7\n\n", b"retry: 1000\n\n"],
    ids=["comment", "empty-comment", "event-line", "id-line", "retry-line"],
)
def test_an_event_without_data_passes_untouched(event: bytes) -> None:
    stream = relay(legacy=True, strip_usage=True)
    assert stream._forward([CONTENT, event, STOP]) == CONTENT + event + STOP
    assert flags(stream) == (False, False, False)


def test_an_event_line_beside_the_data_is_kept_with_it() -> None:
    event = b'event: message\nid: 3\ndata: {"id":"c1","choices":[]}\n\n'
    stream = relay()
    assert stream._forward([event]) == event
    assert flags(stream) == (False, False, False)


def test_done_is_seen_and_passed() -> None:
    stream = relay()
    assert stream._forward([STOP, DONE]) == STOP + DONE
    assert flags(stream) == (True, False, False)
    assert stream.record.error is None


def test_the_first_forward_takes_the_time_to_first_byte_once() -> None:
    stream = relay()
    assert stream.record.first_byte_seconds is None
    stream._forward([CONTENT])
    first = stream.record.first_byte_seconds
    assert first is not None
    stream._forward([STOP])
    assert stream.record.first_byte_seconds == first


def test_chunks_that_report_something_are_noted_for_the_record_stage() -> None:
    """Content alone is not noted; a finish reason, usage or a function name is, as sent."""
    stream = relay()
    stream._forward([CONTENT, TOOL_CALL, STOP, USAGE, DONE])
    assert stream.record.noted_chunks == [
        TOOL_CALL[6:-2],
        STOP[6:-2],
        USAGE_DATA,
    ]


# ----------------------------------------------------------------------------- error events


def test_an_error_event_is_passed_and_blamed_on_the_upstream() -> None:
    stream = relay()
    assert stream._forward([CONTENT, ERROR]) == CONTENT + ERROR
    assert flags(stream) == (False, True, False)
    assert stream.record.error == ERROR_EVENT_SAYS
    attempt = stream.record.attempts[-1]
    assert (attempt.reason, attempt.error) == ("error_event", ERROR_EVENT_SAYS)


def test_an_error_event_quoting_the_key_is_redacted() -> None:
    event = b'data: {"error":{"message":"key ' + SECRET + b' is over quota","code":"quota"}}\n\n'
    stream = relay(secret=SECRET)
    assert stream._forward([event]) == (
        b'data: {"error":{"message":"key [REDACTED] is over quota","code":"quota"}}\n\n'
    )
    assert flags(stream) == (False, True, False)


def test_an_error_event_is_neither_translated_nor_stripped() -> None:
    stream = relay(legacy=True, strip_usage=True)
    assert stream._forward([ERROR]) == ERROR
    assert stream.saw_error


@pytest.mark.parametrize(
    "event",
    [
        b'data: { "error": {"message": "key SECRET"}}\n\n',
        b'data: {"object": "error", "error": {"message": "key SECRET"}}\n\n',
        b'data: {\ndata:   "error": {"message": "key SECRET"}\ndata: }\n\n',
    ],
    ids=["spaced", "not-first", "pretty"],
)
def test_an_error_event_in_any_spacing_or_key_order_is_redacted(event: bytes) -> None:
    stream = relay(secret=SECRET)
    assert SECRET not in stream._forward([event.replace(b"SECRET", SECRET)])
    assert stream.saw_error


def test_an_error_word_in_a_content_chunk_is_not_an_error_event() -> None:
    chunk = b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"error"}}]}\n\n'
    stream = relay()
    assert stream._forward([chunk]) == chunk
    assert not stream.saw_error


# ----------------------------------------------------------------------------- garbage


@pytest.mark.parametrize(
    "event",
    [
        b"data: <html><body>502 Bad Gateway</body></html>\n\n",
        b"data: upstream connect error\n\n",
        b'data: {"id":"c1","choices":[{"delta":\n\n',
        b"data: [1, 2]\n\n",
        b'data: "a string"\n\n',
        b"data: null\n\n",
        b"data: \n\n",
    ],
    ids=["html", "text", "truncated", "array", "string", "null", "empty"],
)
def test_data_that_is_not_a_json_object_stops_the_stream_there(event: bytes) -> None:
    """What came before it is sent; it and what follows it in the same read are not."""
    stream = relay()
    assert stream._forward([CONTENT, event, STOP, DONE]) == CONTENT
    assert flags(stream) == (False, False, True)
    assert stream.record.noted_chunks == []  # STOP, after the garbage, was never looked at


def test_garbage_first_sends_nothing() -> None:
    stream = relay()
    assert stream._forward([b"data: oops\n\n", CONTENT]) == b""
    assert stream.saw_garbage


# ----------------------------------------------------------------------------- the usage chunk


def test_the_usage_chunk_the_proxy_asked_for_is_stripped_but_counted() -> None:
    stream = relay(strip_usage=True)
    assert stream._forward([STOP, USAGE, DONE]) == STOP + DONE
    assert flags(stream) == (True, False, False)
    assert USAGE_DATA in stream.record.noted_chunks  # the record stage still reads its tokens


def test_the_usage_chunk_the_client_asked_for_passes() -> None:
    stream = relay(strip_usage=False)
    assert stream._forward([STOP, USAGE, DONE]) == STOP + USAGE + DONE


def test_usage_beside_choices_is_not_the_usage_chunk() -> None:
    """Some upstreams put usage on every chunk: those carry the answer and are never dropped."""
    event = (
        b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"}}],'
        b'"usage":{"prompt_tokens":9,"completion_tokens":1}}\n\n'
    )
    stream = relay(strip_usage=True)
    assert stream._forward([event]) == event


# ----------------------------------------------------------------------------- legacy clients


def test_a_tool_call_chunk_is_translated_for_a_legacy_client() -> None:
    stream = relay(legacy=True)
    assert stream._forward([TOOL_CALL, TOOL_CALL_DONE]) == LEGACY_CALL + LEGACY_CALL_DONE
    assert flags(stream) == (False, False, False)
    # The record stage reads the upstream's own chunk, not the translation.
    assert stream.record.noted_chunks == [TOOL_CALL[6:-2], TOOL_CALL_DONE[6:-2]]


def test_a_chunk_without_tool_calls_passes_as_sent_to_a_legacy_client() -> None:
    stream = relay(legacy=True)
    assert stream._forward([SPACED, STOP, DONE]) == SPACED + STOP + DONE


def test_tool_call_chunks_pass_as_sent_to_a_modern_client() -> None:
    stream = relay(legacy=False)
    assert stream._forward([TOOL_CALL, TOOL_CALL_DONE]) == TOOL_CALL + TOOL_CALL_DONE


def test_a_legacy_client_asking_no_usage_gets_neither_usage_nor_tool_calls() -> None:
    stream = relay(legacy=True, strip_usage=True)
    out = stream._forward([TOOL_CALL, TOOL_CALL_DONE, USAGE, DONE])
    assert out == LEGACY_CALL + LEGACY_CALL_DONE + DONE


# ----------------------------------------------------------------------------- the byte tests


@pytest.mark.parametrize(
    ("data", "framed"),
    [
        (b"{}", True),
        (b'{"id":"c1"}', True),
        (b' {"id": "c1"} ', True),
        (b'\t{"id":"c1"}\r', True),
        (b"{not json at all}", True),  # a framing test, not a parse
        (b"", False),
        (b" ", False),
        (b"{", False),
        (b"}", False),
        (b'{"id":"c1"', False),
        (b"[{}]", False),
        (b"null", False),
        (b'"{}"', False),
        (b"<html>{}</html>", False),
    ],
)
def test_looks_like_json_object(data: bytes, framed: bool) -> None:
    assert looks_like_json_object(data) is framed


@pytest.mark.parametrize(
    ("data", "usage_only"),
    [
        (USAGE_DATA, True),
        (b'{"choices": [ ], "usage": {"total_tokens": 3}}', True),
        (b'{"usage":{"total_tokens":3},"choices":[]}', True),
        (b'{"choices":[],"usage":{}}', True),
        (b'{"choices":[{"index":0}],"usage":{"total_tokens":3}}', False),
        (b'{"choices":[]}', False),
        (b'{"choices":[],"usage":null}', False),
        (b'{"usage":{"total_tokens":3}}', False),
        (b'{"choices":[{"delta":{}}]}', False),
    ],
)
def test_is_usage_chunk(data: bytes, usage_only: bool) -> None:
    assert is_usage_chunk(data) is usage_only
