"""Read what an answer says (usage, finish reasons, tool calls, the model that answered)
without changing a byte of it.

Stream chunks are only parsed when a byte-level test shows they carry something we count:
most chunks of a long answer are content deltas and are passed over unparsed.

What is parsed is decoded into structs that name only the fields read: msgspec passes over
the rest without building it. Text the structs do not fit (a field of another type: an index
given as a string, a choice that is not an object, ...) is read as before, parsed whole with
orjson and walked as dicts. Both ways record the same, but for one case: a number beyond
the float range (`1e400`) anywhere msgspec passes over it (a field not read, or a value a later
duplicate key replaces) makes orjson refuse the whole text, where the typed read goes on. So
such a JSON answer reaches the client (whose SDK reads it), except for a legacy client, whose
answer is parsed whole by orjson to be translated and is refused as before.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec

from proxy import jsonutil
from proxy.record import RequestRecord

# Chunks worth parsing: a finish reason, a usage block, or the first delta of a tool call —
# and every tool-call delta when arguments are checked.
_INTERESTING = re.compile(rb'"finish_reason":\s*"|"usage":\s*\{|"name"\s*:')
# Chunks kept for the record stage at most: a stream that reports in every chunk (an upstream
# sending usage with each) is read in batches instead of held whole.
MAX_NOTED_CHUNKS = 64


class AnswerNotObject(ValueError):
    """A non-streamed answer that is JSON but not an object."""


# The fields read, each None when absent or null unless said otherwise; a field of another
# type fails the decode, and the text is then read as dicts. gc=False: the structs live for
# one read and hold no cycle, so the collector need not track them.


class _Function(msgspec.Struct, gc=False):
    name: str | None = None
    arguments: str | None = None


# orjson reads an integer beyond 64 bits as a float, msgspec as an int: an index outside int64
# (the bounds msgspec can check) is read as dicts.
_Index = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class _ToolCall(msgspec.Struct, gc=False):
    index: _Index | None = 0  # as `call.get("index", 0)`: absent is 0, null is None
    function: _Function | None = None


class _FunctionCall(msgspec.Struct, gc=False):
    name: str | None = None


class _Content(msgspec.Struct, gc=False):
    tool_calls: list[_ToolCall] | None = None
    function_call: _FunctionCall | None = None


class _ChunkChoice(msgspec.Struct, gc=False):
    finish_reason: str | None = None
    content: _Content | None = msgspec.field(default=None, name="delta")


class _CompletionChoice(msgspec.Struct, gc=False):
    finish_reason: str | None = None
    content: _Content | None = msgspec.field(default=None, name="message")


_NULL = msgspec.Raw(b"null")  # an absent usage reads as null


class _Chunk(msgspec.Struct, gc=False):
    model: str | None = None
    choices: list[_ChunkChoice] | None = None
    # Kept as its JSON text and parsed by orjson: `record.usage` holds what orjson reads,
    # down to a big integer read as a float.
    usage: msgspec.Raw = _NULL


class _Completion(msgspec.Struct, gc=False):
    model: str | None = None
    choices: list[_CompletionChoice] | None = None
    usage: msgspec.Raw = _NULL


_CHUNK = msgspec.json.Decoder(_Chunk)
_COMPLETION = msgspec.json.Decoder(_Completion)


def observe_completion(record: RequestRecord, answer: dict[str, Any]) -> None:
    """Record what a non-streamed chat.completion, parsed whole, reports."""
    _observe(record, answer, "message")


def observe_completion_json(record: RequestRecord, raw: bytes) -> None:
    """Record what a non-streamed chat.completion reports, from its JSON text.

    Raises `jsonutil.JSONDecodeError` when `raw` is not JSON and `AnswerNotObject` when it is
    JSON but not an object, before recording anything.
    """
    if not _observe_typed(record, _COMPLETION, raw, streamed=False):
        observe_completion(record, completion_object(raw))


def completion_object(raw: bytes) -> dict[str, Any]:
    """A non-streamed answer parsed whole, for what needs all of it (a legacy translation).

    Raises as `observe_completion_json` does.
    """
    answer = jsonutil.loads(raw)
    if not isinstance(answer, dict):
        raise AnswerNotObject
    return answer


def note_chunk_data(record: RequestRecord, data: bytes) -> None:
    """Keep one stream chunk's `data` for the record stage if it reports anything we count.

    Parsing waits until the stream has ended (`observe_noted_chunks`): the client's events go
    out first, and only a byte-level test runs while it waits for them.
    """
    if record.capture is not None:
        record.capture.keep(data)  # a captured stream is put back together whole
    # The tool-call test first: a substring search, ~3× cheaper than the regex, and what
    # nearly every chunk of a tool call's stream passes when its arguments are checked.
    if (record.keeps_arguments and _is_tool_delta(data)) or _INTERESTING.search(data):
        record.noted_chunks.append(data)
        if len(record.noted_chunks) >= MAX_NOTED_CHUNKS:
            observe_noted_chunks(record)  # a long stream of them: read as it goes


def _is_tool_delta(data: bytes) -> bool:
    return b'"tool_calls"' in data or b'"function_call"' in data


def observe_noted_chunks(record: RequestRecord) -> None:
    """Record what the kept stream chunks report, in the order they came."""
    for data in record.noted_chunks:
        if not _observe_typed(record, _CHUNK, data, streamed=True):
            _observe_chunk_dicts(record, data)
    record.noted_chunks.clear()


def _observe_typed(
    record: RequestRecord, decoder: msgspec.json.Decoder[Any], data: bytes, streamed: bool
) -> bool:
    """`_observe` over `data` decoded into structs: the same record, in the same order.

    False, with nothing recorded, when `data` is to be read as dicts. Only text orjson would
    accept is read here: msgspec does not check the UTF-8 of what it passes over, and stops
    at a shallower depth than orjson (a RecursionError).
    """
    if not (data.isascii() or _is_utf8(data)):
        return False
    try:
        answer: _Chunk | _Completion = decoder.decode(data)
        usage = None if answer.usage == _NULL else jsonutil.loads(bytes(answer.usage))
    except (msgspec.DecodeError, jsonutil.JSONDecodeError, RecursionError):
        return False
    if answer.model:
        record.response_model = answer.model
    _observe_usage(record, usage)
    for choice in answer.choices or ():
        if choice.finish_reason is not None:
            record.finish_reasons.append(choice.finish_reason)
        if choice.content is not None:
            _observe_typed_content(record, choice.content, streamed)
    return True


def _observe_typed_content(record: RequestRecord, content: _Content, streamed: bool) -> None:
    # One pass over the calls for names and arguments: they go to different lists, each
    # filled in the order the dict walk fills it.
    for call in content.tool_calls or ():
        function = call.function
        if function is None:
            continue
        if function.name:
            record.tool_calls.append(function.name)
        if record.keeps_arguments:
            _keep_typed_arguments(record, call.index, function, streamed)
    if content.function_call is not None and content.function_call.name:
        record.tool_calls.append(content.function_call.name)


def _keep_typed_arguments(
    record: RequestRecord, index: int | None, function: _Function, streamed: bool
) -> None:
    """`_collect_arguments` for one decoded call."""
    name, arguments = function.name, function.arguments
    if not streamed:
        if name is not None and arguments is not None:
            record.call_arguments.append((name, arguments))
        return
    # An index is None when the upstream sent null, as in the dict walk (which keys by it).
    if name and index not in record.streamed_calls:
        record.streamed_calls[index] = (name, [])
    if arguments is not None and index in record.streamed_calls:
        record.streamed_calls[index][1].append(arguments)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _observe_chunk_dicts(record: RequestRecord, data: bytes) -> None:
    """Read one stream chunk as before: parsed whole by orjson, walked as dicts."""
    try:
        chunk = jsonutil.loads(data)
    except jsonutil.JSONDecodeError:
        return
    if isinstance(chunk, dict):
        _observe(record, chunk, "delta")


def _observe(record: RequestRecord, answer: dict[str, Any], part: str) -> None:
    """Usage, finish reasons and tool calls of an answer whose choices carry `part`
    (`message` in a completion, `delta` in a stream chunk)."""
    _observe_model(record, answer.get("model"))
    _observe_usage(record, answer.get("usage"))
    for choice in _choices(answer):
        reason = choice.get("finish_reason")
        if isinstance(reason, str):
            record.finish_reasons.append(reason)
        content = choice.get(part)
        if isinstance(content, dict):
            _observe_tool_calls(record, content.get("tool_calls"))
            _observe_function_call(record, content.get("function_call"))
            if record.keeps_arguments:
                _collect_arguments(record, content, streamed=part == "delta")


def _collect_arguments(record: RequestRecord, content: dict[str, Any], streamed: bool) -> None:
    """Keep each answered call's arguments for the check against the full schema."""
    calls = content.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        name, arguments = function.get("name"), function.get("arguments")
        if not streamed:
            if isinstance(name, str) and isinstance(arguments, str):
                record.call_arguments.append((name, arguments))
            continue
        index = call.get("index", 0)
        if isinstance(index, list | dict):
            continue  # not an index, and not a key the calls can be joined by
        if isinstance(name, str) and name and index not in record.streamed_calls:
            record.streamed_calls[index] = (name, [])
        if isinstance(arguments, str) and index in record.streamed_calls:
            record.streamed_calls[index][1].append(arguments)


def _choices(answer: dict[str, Any]) -> list[dict[str, Any]]:
    choices = answer.get("choices")
    return [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []


def _observe_model(record: RequestRecord, model: Any) -> None:
    if isinstance(model, str) and model:
        record.response_model = model


def _observe_usage(record: RequestRecord, usage: Any) -> None:
    if isinstance(usage, dict):
        record.usage = usage


def _observe_tool_calls(record: RequestRecord, calls: Any) -> None:
    if not isinstance(calls, list):
        return
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            record.tool_calls.append(name)


def _observe_function_call(record: RequestRecord, call: Any) -> None:
    name = call.get("name") if isinstance(call, dict) else None
    if isinstance(name, str) and name:
        record.tool_calls.append(name)


# ----------------------------------------------------------------------------- Responses API

# Events whose `response` is the whole answer: the only ones read (the rest pass unread).
_TERMINAL_EVENT = re.compile(rb'"type"\s*:\s*"response\.(?:completed|incomplete|failed)"')
_INCOMPLETE_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}


def observe_response_json(record: RequestRecord, raw: bytes) -> None:
    """Record what a non-streamed Response reports; raises as `observe_completion_json`."""
    observe_response(record, completion_object(raw))


def note_response_event(record: RequestRecord, data: bytes) -> bool:
    """Keep a Responses stream event for the record stage if it ends the answer (it carries
    the whole Response); True when it does."""
    if _TERMINAL_EVENT.search(data) is None:
        return False
    record.noted_chunks.append(data)
    if record.capture is not None:
        record.capture.keep(data)
    return True


def observe_response_events(record: RequestRecord) -> None:
    """Record what the kept terminal events report (`note_response_event`)."""
    for data in record.noted_chunks:
        try:
            event = jsonutil.loads(data)
        except jsonutil.JSONDecodeError:
            continue
        if isinstance(event, dict) and isinstance(event.get("response"), dict):
            observe_response(record, event["response"])
    record.noted_chunks.clear()


def observe_response(record: RequestRecord, response: dict[str, Any]) -> None:
    """Usage, finish and function calls of a Response, in the words chat's are counted in:
    the same metrics read both APIs."""
    _observe_model(record, response.get("model"))
    usage = response.get("usage")
    if isinstance(usage, dict):
        record.usage = usage_as_chat(usage)
    calls = [item for item in _output_items(response) if item.get("type") == "function_call"]
    for call in calls:
        name, arguments = call.get("name"), call.get("arguments")
        if isinstance(name, str) and name:
            record.tool_calls.append(name)
            if record.keeps_arguments and isinstance(arguments, str):
                record.call_arguments.append((name, arguments))
    finish = _finish_reason(response, bool(calls))
    if finish is not None:
        record.finish_reasons.append(finish)


def usage_as_chat(usage: dict[str, Any]) -> dict[str, Any]:
    """A Responses `usage` under chat's names (`input_tokens` is `prompt_tokens`, ...)."""
    details = usage.get("input_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return {
        "prompt_tokens": usage.get("input_tokens"),
        "completion_tokens": usage.get("output_tokens"),
        "total_tokens": usage.get("total_tokens"),
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def _output_items(response: dict[str, Any]) -> list[dict[str, Any]]:
    output = response.get("output")
    return [item for item in output if isinstance(item, dict)] if isinstance(output, list) else []


def _finish_reason(response: dict[str, Any], called: bool) -> str | None:
    """Chat's finish reason for a Response's status: `tool_calls` or `stop` when completed,
    `length` or `content_filter` when incomplete for that reason."""
    status = response.get("status")
    if status == "completed":
        return "tool_calls" if called else "stop"
    if status == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        return _INCOMPLETE_REASONS.get(reason, "other") if isinstance(reason, str) else "other"
    return status if isinstance(status, str) else None
