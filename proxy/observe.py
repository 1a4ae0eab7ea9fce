"""Read what an answer says (usage, finish reasons, tool calls) without changing a byte of it.

Stream chunks are only parsed when a byte-level test shows they carry something we count:
most chunks of a long answer are content deltas and are passed over unparsed.
"""

from __future__ import annotations

import re
from typing import Any

from proxy import jsonutil
from proxy.record import RequestRecord

# Chunks worth parsing: a finish reason, a usage block, or the first delta of a tool call —
# and every tool-call delta when arguments are checked.
_INTERESTING = re.compile(rb'"finish_reason":\s*"|"usage":\s*\{|"name"\s*:')
_TOOL_DELTA = re.compile(rb'"tool_calls"|"function_call"')
# Chunks kept for the record stage at most: a stream that reports in every chunk (an upstream
# sending usage with each) is read in batches instead of held whole.
MAX_NOTED_CHUNKS = 64


def observe_completion(record: RequestRecord, answer: dict[str, Any]) -> None:
    """Record what a non-streamed chat.completion reports."""
    _observe(record, answer, "message")


def note_chunk_data(record: RequestRecord, data: bytes) -> None:
    """Keep one stream chunk's `data` for the record stage if it reports anything we count.

    Parsing waits until the stream has ended (`observe_noted_chunks`): the client's events go
    out first, and only a byte-level test runs while it waits for them.
    """
    if _INTERESTING.search(data) or (
        record.argument_check is not None and _TOOL_DELTA.search(data)
    ):
        record.noted_chunks.append(data)
        if len(record.noted_chunks) >= MAX_NOTED_CHUNKS:
            observe_noted_chunks(record)  # a long stream of them: read as it goes


def observe_noted_chunks(record: RequestRecord) -> None:
    """Record what the kept stream chunks report, in the order they came."""
    for data in record.noted_chunks:
        try:
            chunk = jsonutil.loads(data)
        except jsonutil.JSONDecodeError:
            continue
        if isinstance(chunk, dict):
            _observe(record, chunk, "delta")
    record.noted_chunks.clear()


def _observe(record: RequestRecord, answer: dict[str, Any], part: str) -> None:
    """Usage, finish reasons and tool calls of an answer whose choices carry `part`
    (`message` in a completion, `delta` in a stream chunk)."""
    _observe_usage(record, answer.get("usage"))
    for choice in _choices(answer):
        reason = choice.get("finish_reason")
        if isinstance(reason, str):
            record.finish_reasons.append(reason)
        content = choice.get(part)
        if isinstance(content, dict):
            _observe_tool_calls(record, content.get("tool_calls"))
            _observe_function_call(record, content.get("function_call"))
            if record.argument_check is not None:
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
        if isinstance(name, str) and name and index not in record.streamed_calls:
            record.streamed_calls[index] = (name, [])
        if isinstance(arguments, str) and index in record.streamed_calls:
            record.streamed_calls[index][1].append(arguments)


def _choices(answer: dict[str, Any]) -> list[dict[str, Any]]:
    choices = answer.get("choices")
    return [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []


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
