"""The relay stage: hand the upstream's answer to the client.

JSON answers pass through as the upstream's bytes unless a legacy client needs them translated.
Streams are forwarded event by event as each event completes — never re-chunked or
re-serialised (but for legacy clients) — and a stream that breaks after it started ends with a
final `data: {"error": …}` event so the client never hangs on a half-written stream.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from proxy import jsonutil
from proxy.errors import ProxyError, UpstreamUnreachable
from proxy.observe import observe_chunk_data, observe_completion
from proxy.record import RequestRecord
from proxy.rewrite.legacy import chunk_to_legacy, response_to_legacy
from proxy.sse import DONE, EventSplitter, EventTooLarge, event_data, format_event
from proxy.upstream import UpstreamResponse

MAX_ANSWER_BYTES = 64 * 1024 * 1024
MAX_ERROR_BYTES = 1024 * 1024
# The usage-only chunk that `stream_options.include_usage` adds: no choices, a usage object.
_USAGE_CHUNK = re.compile(rb'"choices":\s*\[\s*\]')
_HAS_USAGE = re.compile(rb'"usage":\s*\{')


def ask_for_stream_usage(body: dict[str, Any]) -> bool:
    """Make a stream report its usage so it can be counted.

    Returns True when the client did not ask for it: its usage chunk is removed again.
    `body` is the rewritten copy (its top level is ours to change, nested objects are not).
    """
    if body.get("stream") is not True:
        return False
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return False
    body["stream_options"] = {
        **(options if isinstance(options, dict) else {}),
        "include_usage": True,
    }
    return True


def is_usage_chunk(data: bytes) -> bool:
    return _USAGE_CHUNK.search(data) is not None and _HAS_USAGE.search(data) is not None


async def relay_error(
    answer: UpstreamResponse, headers: Mapping[str, str], record: RequestRecord
) -> web.Response:
    """An upstream 4xx/5xx, passed through with its body when that body is OpenAI-shaped."""
    raw = await answer.read(MAX_ERROR_BYTES)
    try:
        parsed = jsonutil.loads(raw)
    except jsonutil.JSONDecodeError:
        parsed = None
    if not (isinstance(parsed, dict) and isinstance(parsed.get("error"), dict)):
        snippet = raw[:200].decode("utf-8", "replace")
        raw = jsonutil.dumps(
            {
                "error": {
                    "message": f"The upstream answered HTTP {answer.status}: {snippet}",
                    "type": "upstream_error",
                    "param": None,
                    "code": f"upstream_{answer.status}",
                }
            }
        )
    record.status = answer.status
    return web.Response(
        body=raw, status=answer.status, content_type="application/json", headers=headers
    )


async def relay_json(
    answer: UpstreamResponse, headers: Mapping[str, str], record: RequestRecord, legacy: bool
) -> web.Response:
    raw = await answer.read(MAX_ANSWER_BYTES)
    try:
        parsed = jsonutil.loads(raw)
    except jsonutil.JSONDecodeError as exc:
        blame_upstream(record, "invalid_response")
        raise UpstreamUnreachable("The upstream answered with a body that is not JSON.") from exc
    if not isinstance(parsed, dict):
        blame_upstream(record, "invalid_response")
        raise UpstreamUnreachable("The upstream answered with JSON that is not an object.")
    observe_completion(record, parsed)
    if legacy:
        raw = jsonutil.dumps(response_to_legacy(parsed))
    record.status = answer.status
    return web.Response(
        body=raw, status=answer.status, content_type="application/json", headers=headers
    )


class StreamRelay:
    """Forwards one SSE answer to the client, event by event."""

    def __init__(self, record: RequestRecord, legacy: bool, strip_usage: bool):
        self.record = record
        self.legacy = legacy
        self.strip_usage = strip_usage
        self.splitter = EventSplitter()
        self.saw_done = False
        self.saw_error = False

    async def run(
        self, request: web.Request, answer: UpstreamResponse, headers: Mapping[str, str]
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=answer.status,
            headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
        )
        await response.prepare(request)
        self.record.status = answer.status
        try:
            await self._pump(answer, response)
        except ConnectionResetError:
            # The client went away: the handler closes the upstream answer right after this.
            self.record.client_disconnected = True
            return response
        await response.write_eof()
        return response

    async def _pump(self, answer: UpstreamResponse, response: web.StreamResponse) -> None:
        try:
            async for data in answer.chunks:
                events = self.splitter.feed(data)
                if events:
                    await response.write(self._forward(events))
        except (ProxyError, EventTooLarge) as exc:
            await self._fail(response, exc)
            return
        if not self.saw_done and not self.saw_error:
            await self._fail(
                response, UpstreamUnreachable("The upstream ended the stream before [DONE].")
            )

    def _forward(self, events: list[bytes]) -> bytes:
        if self.record.first_byte_seconds is None:
            self.record.first_byte_seconds = time.perf_counter() - self.record.started
        out: list[bytes] = []
        for event in events:
            data = event_data(event)
            if data is None:
                out.append(event)
                continue
            if data.startswith(DONE):
                self.saw_done = True
            elif data.startswith(b'{"error"'):
                self.saw_error = True
            else:
                observe_chunk_data(self.record, data)
                if self.strip_usage and is_usage_chunk(data):
                    continue  # we asked for it; the client did not
                if self.legacy:
                    event = _legacy_event(event, data)
            out.append(event)
        return b"".join(out)

    async def _fail(self, response: web.StreamResponse, exc: Exception) -> None:
        error = exc if isinstance(exc, ProxyError) else UpstreamUnreachable(str(exc))
        self.record.error = error.message
        blame_upstream(self.record, "timeout" if error.status == 504 else "broken_stream")
        await response.write(format_event(jsonutil.dumps(error.body())))


def blame_upstream(record: RequestRecord, reason: str) -> None:
    """The answering attempt failed after it started (counted as that upstream's error)."""
    if record.attempts:
        record.attempts[-1].reason = reason


def _legacy_event(event: bytes, data: bytes) -> bytes:
    """A chunk in the legacy `function_call` shape; the original bytes when nothing changes."""
    try:
        chunk = jsonutil.loads(data)
    except jsonutil.JSONDecodeError:
        return event
    if not isinstance(chunk, dict):
        return event
    translated = chunk_to_legacy(chunk)
    return event if translated is chunk else format_event(jsonutil.dumps(translated))
