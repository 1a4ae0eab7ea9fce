"""Reading what an answer reports: stream chunks are kept during the stream and read after,
and the typed read records what the dict walk records."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.observe import (
    _CHUNK,
    MAX_NOTED_CHUNKS,
    AnswerNotObject,
    _observe_chunk_dicts,
    _observe_typed,
    completion_object,
    note_chunk_data,
    observe_completion,
    observe_completion_json,
    observe_noted_chunks,
    observe_response,
)
from proxy.record import RequestRecord
from proxy.rewrite.policy import PASSTHROUGH


def chunk(**delta: object) -> bytes:
    return orjson.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})


def call_fragment(arguments: str, name: str | None = None) -> bytes:
    function = {"arguments": arguments, **({"name": name} if name else {})}
    return chunk(tool_calls=[{"index": 0, "function": function}])


def test_chunks_are_read_in_order_after_the_stream() -> None:
    record = RequestRecord(request_id="r", path="/")
    record.argument_check = (PASSTHROUGH, None)
    record.keeps_arguments = True
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


# Differential: the typed read and the dict walk record the same for any JSON text.

# Text with lone surrogates too: written as UTF-8 (`_json_text`), they make invalid UTF-8.
_TEXT = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=8)
# Anything JSON holds, integers beyond 64 bits included.
_ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)
_EXTRA_FIELDS = st.dictionaries(st.sampled_from(["id", "type", "role", "x"]), _ANY_JSON, max_size=2)


_ABSENT = object()


def _object(wrong: bool, **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """An object with `fields` (a field drawn as `_ABSENT` is left out) and extra fields;
    `wrong` also draws any other JSON in place of the object."""
    shaped = st.fixed_dictionaries(fields).map(
        lambda drawn: {k: v for k, v in drawn.items() if v is not _ABSENT}
    )
    with_extra = st.tuples(shaped, _EXTRA_FIELDS).map(lambda pair: {**pair[1], **pair[0]})
    return st.one_of(with_extra, with_extra, with_extra, _ANY_JSON) if wrong else with_extra


def _field(value: st.SearchStrategy[Any], wrong: bool) -> st.SearchStrategy[Any]:
    """A field of its kind, null or absent; `wrong` adds any other JSON."""
    return st.one_of(value, value, st.none(), st.just(_ABSENT), *([_ANY_JSON] if wrong else []))


def _list_of(item: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(item, max_size=3) | st.lists(item, min_size=1, max_size=3)


_NAME = st.sampled_from(["lookup_order", "issue_refund", ""]) | _TEXT
_INDEX = st.integers(0, 2) | st.sampled_from([2**63 - 1, 2**63, 2**64, -(2**63), -(2**63) - 1])
_USAGE = st.dictionaries(st.sampled_from(["prompt_tokens", "completion_tokens"]), _ANY_JSON)
_REASON = st.sampled_from(["stop", "tool_calls", ""])


def _answer(part: str, wrong: bool) -> st.SearchStrategy[Any]:
    """A chunk (`part` delta) or completion (`part` message) as the typed read expects it,
    or (`wrong`) with any JSON anywhere. Expected answers always have the objects and lists
    that lead to the values read (which may be null or absent), so that most reach them."""

    def leaf(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return _field(value, wrong)

    def node(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return _field(value, wrong) if wrong else value

    index = _INDEX | st.booleans() if wrong else _INDEX
    function = _object(wrong, name=leaf(_NAME), arguments=leaf(_TEXT))
    call = _object(wrong, index=leaf(index), function=node(function))
    content = _object(
        wrong,
        tool_calls=node(_list_of(call)),
        function_call=node(_object(wrong, name=leaf(_NAME))),
    )
    choice = _object(wrong, finish_reason=leaf(_REASON), **{part: node(content)})
    return _object(wrong, choices=node(_list_of(choice)), usage=leaf(_USAGE))


def _answers(part: str) -> st.SearchStrategy[Any]:
    return _answer(part, wrong=False) | _answer(part, wrong=True)


def _json_text(value: Any, ascii_only: bool) -> bytes:
    # The standard library writes integers beyond 64 bits (orjson refuses to).
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _outcome(record: RequestRecord, read: Callable[[], object]) -> str:
    try:
        read()
        error = None
    except Exception as exc:  # an error is part of the outcome: both ways must raise it
        error = type(exc).__name__
    fields = (
        error,
        record.finish_reasons,
        record.tool_calls,
        record.usage,
        record.call_arguments,
        record.streamed_calls,
        record.response_model,
    )
    return repr(fields)  # repr tells 1 from 1.0 and True, as a key or a value


def _checked_record(check_arguments: bool) -> RequestRecord:
    record = RequestRecord(request_id="r", path="/")
    if check_arguments:
        record.argument_check = (PASSTHROUGH, None)
        record.keeps_arguments = True
    return record


@settings(max_examples=400, deadline=None)
@given(
    chunks=st.lists(_answers("delta"), min_size=1, max_size=5),
    ascii_only=st.booleans(),
    check_arguments=st.booleans(),
)
def test_typed_chunk_reading_records_what_the_dict_walk_records(
    chunks: list[Any], ascii_only: bool, check_arguments: bool
) -> None:
    texts = [_json_text(value, ascii_only) for value in chunks]
    typed, general = _checked_record(check_arguments), _checked_record(check_arguments)
    typed.noted_chunks = list(texts)
    expected = _outcome(general, lambda: [_observe_chunk_dicts(general, t) for t in texts])
    assert _outcome(typed, lambda: observe_noted_chunks(typed)) == expected


@settings(max_examples=400, deadline=None)
@given(answer=_answers("message"), ascii_only=st.booleans(), check_arguments=st.booleans())
def test_typed_completion_reading_records_what_the_dict_walk_records(
    answer: Any, ascii_only: bool, check_arguments: bool
) -> None:
    text = _json_text(answer, ascii_only)
    typed, general = _checked_record(check_arguments), _checked_record(check_arguments)
    expected = _outcome(general, lambda: observe_completion(general, completion_object(text)))
    assert _outcome(typed, lambda: observe_completion_json(typed, text)) == expected


@pytest.mark.parametrize(
    "text",
    [
        b'{"choices": [{"delta": {"tool_calls": [{"function": {"name": "f"}}]}}], "x": "\xff"}',
        b'{"choices": [{"finish_reason": "\xed\xa0\x80"}]}',  # a lone surrogate in UTF-8
        b'{"x": ' + b"[" * 1010 + b"]" * 1010 + b', "choices": [{"finish_reason": "stop"}]}',
        b'{"usage": {"prompt_tokens": 123456789012345678901234567890}}',
        b'{"usage": {"prompt_tokens": 1}, "usage": null}',
        b'{"usage": {"prompt_tokens": 1, "prompt_tokens": 2}}',
        b'{"choices": [{"finish_reason": "stop"}], "choices": null}',
        b'{"choices": [{"delta": {"tool_calls": [{"index": [], "function": {"name": "f"}}]}}]}',
        b'{"choices": [{"delta": {"tool_calls": [{"index": 1.0, "function": {"name": "f"}}]}}]}',
        b'["not", "an", "object"]',
        b"not json",
    ],
)
def test_edge_texts_are_read_as_the_dict_walk_reads_them(text: bytes) -> None:
    typed, general = _checked_record(True), _checked_record(True)
    typed.noted_chunks = [text]
    expected = _outcome(general, lambda: _observe_chunk_dicts(general, text))
    assert _outcome(typed, lambda: observe_noted_chunks(typed)) == expected


def test_a_number_beyond_the_float_range_in_a_field_not_read_is_passed_over() -> None:
    """The one difference from the dict walk, by choice: orjson refuses `1e400` anywhere in
    the text, msgspec passes over a field it does not read (the client's SDK reads it too)."""
    record = _checked_record(True)
    record.noted_chunks = [b'{"x": 1e400, "choices": [{"finish_reason": "stop"}]}']
    observe_noted_chunks(record)
    assert record.finish_reasons == ["stop"]


def test_a_call_whose_index_is_a_list_is_passed_over() -> None:
    """Not a key the fragments can be joined by; the record stage must not fail on it."""
    record = _checked_record(True)
    record.noted_chunks = [
        b'{"choices": [{"delta": {"tool_calls": [{"index": [], "function": {"name": "f"}}]}}]}'
    ]
    observe_noted_chunks(record)
    assert record.streamed_calls == {}
    assert record.tool_calls == ["f"]  # its name still counts as a call


def test_a_well_formed_chunk_takes_the_typed_way() -> None:
    record = _checked_record(True)
    data = call_fragment("{", name="lookup_order")
    assert _observe_typed(record, _CHUNK, data, streamed=True)
    assert record.streamed_calls == {0: ("lookup_order", ["{"])}


def test_an_answer_that_is_not_a_json_object_is_refused_before_anything_is_recorded() -> None:
    record = _checked_record(True)
    with pytest.raises(orjson.JSONDecodeError):
        observe_completion_json(record, b'{"usage": {}')
    with pytest.raises(AnswerNotObject):
        observe_completion_json(record, b'[{"usage": {}}]')
    assert record.usage is None


@pytest.mark.parametrize(
    "text",
    [
        b'{"model": "ft-a", "choices": [{"finish_reason": "stop"}]}',
        b'{"model": 7, "choices": [{"finish_reason": "stop"}]}',  # read as dicts: no model
        b'{"model": "ft-a", "model": "ft-b", "choices": []}',
    ],
)
def test_the_answering_model_is_read_both_ways_alike(text: bytes) -> None:
    typed, general = _checked_record(False), _checked_record(False)
    typed.noted_chunks = [text]
    expected = _outcome(general, lambda: _observe_chunk_dicts(general, text))
    assert _outcome(typed, lambda: observe_noted_chunks(typed)) == expected


def test_the_answering_model_is_recorded_from_a_completion_a_chunk_and_a_response() -> None:
    completion, streamed, response = (_checked_record(False) for _ in range(3))
    observe_completion_json(completion, b'{"model": "ft-1", "choices": []}')
    streamed.noted_chunks = [b'{"model": "ft-2", "choices": [{"finish_reason": "stop"}]}']
    observe_noted_chunks(streamed)
    observe_response(response, {"model": "ft-3", "status": "completed", "output": []})
    models = [completion.response_model, streamed.response_model, response.response_model]
    assert models == ["ft-1", "ft-2", "ft-3"]
