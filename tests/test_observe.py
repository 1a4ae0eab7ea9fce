"""Reading what an answer reports: stream chunks are kept during the stream and read after."""

from __future__ import annotations

import orjson

from proxy.observe import MAX_NOTED_CHUNKS, note_chunk_data, observe_noted_chunks
from proxy.policy import PASSTHROUGH
from proxy.record import RequestRecord


def chunk(**delta: object) -> bytes:
    return orjson.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})


def call_fragment(arguments: str, name: str | None = None) -> bytes:
    function = {"arguments": arguments, **({"name": name} if name else {})}
    return chunk(tool_calls=[{"index": 0, "function": function}])


def test_chunks_are_read_in_order_after_the_stream() -> None:
    record = RequestRecord(request_id="r", path="/")
    record.argument_check = (PASSTHROUGH, None)
    for data in (
        chunk(content="plain text, nothing counted"),
        call_fragment("", name="lookup_order"),
        call_fragment('{"order_id":'),
        call_fragment(' "A7"}'),
        b'{"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}',
        b'{"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}',
    ):
        note_chunk_data(record, data)
    assert len(record.noted_chunks) == 5  # the text chunk reports nothing: not kept
    assert record.tool_calls == []  # nothing read yet
    observe_noted_chunks(record)
    assert record.noted_chunks == []
    assert record.tool_calls == ["lookup_order"]
    assert record.answered_arguments() == [("lookup_order", '{"order_id": "A7"}')]
    assert record.finish_reasons == ["tool_calls"]
    assert record.usage == {"prompt_tokens": 5, "completion_tokens": 2}


def test_a_stream_that_reports_in_every_chunk_is_read_in_batches() -> None:
    record = RequestRecord(request_id="r", path="/")
    total = MAX_NOTED_CHUNKS * 3 + 5
    for count in range(total):
        note_chunk_data(record, b'{"choices": [], "usage": {"completion_tokens": %d}}' % count)
        assert len(record.noted_chunks) < MAX_NOTED_CHUNKS
    observe_noted_chunks(record)
    assert record.usage == {"completion_tokens": total - 1}  # the last one, as read in order
