"""The relay stage: hand the upstream's answer to the client.

JSON answers pass through as the upstream's bytes unless a legacy client needs them translated.
Streams are forwarded event by event as each event completes — never re-chunked or
re-serialised (but for legacy clients) — and a stream that breaks after it started ends with a
final `data: {"error": …}` event so the client never hangs on a half-written stream.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from proxy import jsonutil
from proxy.bridge import ResponseIds, StreamTranslator, chat_to_response, error_event_fields
from proxy.errors import SERVER_NAME, ProxyError, UpstreamFailure, UpstreamUnreachable
from proxy.forward import Sent
from proxy.observe import (
    AnswerNotObject,
    completion_object,
    note_chunk_data,
    note_response_event,
    observe_completion,
    observe_completion_json,
    observe_response_json,
)
from proxy.outgoing import Outgoing
from proxy.record import RequestRecord
from proxy.rewrite.legacy import chunk_to_legacy, response_to_legacy
from proxy.rewrite.result import Change, inserted_message
from proxy.sse import (
    DONE,
    EventSplitter,
    EventTooLarge,
    event_data,
    format_event,
    is_error_event,
)
from proxy.upstream import UpstreamResponse

MAX_ANSWER_BYTES = 64 * 1024 * 1024
MAX_ERROR_BYTES = 1024 * 1024
# An upstream that refuses the proxy's credential: the client cannot fix that, and OpenAI's
# 401 body quotes part of the key, so the client gets a 502 that quotes nothing.
UPSTREAM_AUTH_STATUSES = frozenset({401, 403})
MAX_LOGGED_CODE_CHARS = 64
# The usage-only chunk that `stream_options.include_usage` adds: no choices, a usage object.
_USAGE_CHUNK = re.compile(rb'"choices":\s*\[\s*\]')
_HAS_USAGE = re.compile(rb'"usage":\s*\{')
_MESSAGE_INDEX = re.compile(r"messages\[(\d+)\]")
# A Responses stream's error event, and where an event says its number.
_RESPONSES_ERROR = re.compile(rb'^\{\s*"type"\s*:\s*"error"')
_SEQUENCE = re.compile(rb'"sequence_number"\s*:\s*(\d+)')


def is_usage_chunk(data: bytes) -> bool:
    return _USAGE_CHUNK.search(data) is not None and _HAS_USAGE.search(data) is not None


async def relay(request: web.Request, sent: Sent, record: RequestRecord) -> web.StreamResponse:
    """Hand the answer of the attempt that answered to the client, in the form it came in (an
    error, a stream, a JSON answer); the upstream answer is closed whatever happens."""
    answer, outgoing = sent.answer, sent.outgoing
    headers = {
        **answer.headers,
        "x-request-id": record.request_id,
        "x-tuned-proxy-route": record.route or "",
        "x-tuned-proxy-variant": sent.target.name,
        "Server": SERVER_NAME,
    }
    try:
        if answer.status >= 400:
            return await relay_error(answer, headers, record)
        streamed = record.stream and answer.content_type.startswith("text/event-stream")
        if record.capture is not None:
            capture_from(sent, record, streamed)
        if outgoing.bridged_from is not None:
            return await relay_bridged(request, answer, headers, record, outgoing, streamed)
        if outgoing.api == "responses":
            if streamed:
                return await ResponsesStreamRelay(record).run(request, answer, headers)
            return await relay_json(answer, headers, record, observe=observe_response_json)
        if streamed:
            stream = StreamRelay(record, outgoing.legacy_functions, outgoing.strip_usage)
            return await stream.run(request, answer, headers)
        return await relay_json(answer, headers, record, outgoing.legacy_functions)
    finally:
        record.upstream_seconds += answer.wait_seconds
        await answer.close()


def capture_from(sent: Sent, record: RequestRecord, streamed: bool) -> None:
    """Point the request's capture at the attempt that answered, if its variant is captured
    (a fallback's or another variant's answer is not the model's being distilled)."""
    capture = record.capture
    assert capture is not None
    if sent.target.name not in capture.spec.variants:
        record.capture = None
        return
    capture.outgoing, capture.streamed = sent.outgoing, streamed


async def relay_error(
    answer: UpstreamResponse, headers: Mapping[str, str], record: RequestRecord
) -> web.Response:
    """An upstream 4xx/5xx, passed through with its body when that body is OpenAI-shaped."""
    # An upstream may quote the credential it was sent: the client must never see it.
    raw = answer.redact(await read_answer(answer, MAX_ERROR_BYTES, record))
    if answer.status in UPSTREAM_AUTH_STATUSES:
        message = (
            f"The upstream refused the proxy's credentials (HTTP {answer.status}); "
            "the proxy's operator must check its upstream API key."
        )
        blame_upstream(record, "auth", message)
        raise UpstreamUnreachable(message, code="upstream_auth_failed", reason="auth")
    try:
        parsed = jsonutil.loads(raw)
    except jsonutil.JSONDecodeError:
        parsed = None
    record.error = upstream_error_summary(answer.status, parsed)
    if record.attempts and record.attempts[-1].reason is not None:
        record.attempts[-1].error = record.error  # a counted failure: the log lists the attempt
    record.status = answer.status
    return web.Response(
        body=error_body_for_client(raw, parsed, answer.status, record.changes),
        status=answer.status,
        content_type="application/json",
        headers=headers,
    )


def error_body_for_client(raw: bytes, parsed: Any, status: int, changes: list[Change]) -> bytes:
    """An upstream error as the client gets it: as sent when it is OpenAI-shaped (its message
    numbers in the client's numbering), else wrapped in OpenAI's error object."""
    if not (isinstance(parsed, dict) and isinstance(parsed.get("error"), dict)):
        snippet = raw[:200].decode("utf-8", "replace")
        error = {
            "message": f"The upstream answered HTTP {status}: {snippet}",
            "type": "upstream_error",
            "param": None,
            "code": f"upstream_{status}",
        }
        return jsonutil.dumps({"error": error})
    inserted = inserted_message(changes)
    renumbered = None if inserted is None else in_client_numbering(parsed["error"], inserted)
    return raw if renumbered is None else jsonutil.dumps({**parsed, "error": renumbered})


def in_client_numbering(error: dict[str, Any], inserted: int) -> dict[str, Any] | None:
    """The upstream's error object with each `messages[N]` it names in the client's numbering,
    the rewrite having inserted a message at `inserted`; None when it names no message.

    The message the proxy inserted has no number of the client's: the text says whose it is.
    """
    param, message = error.get("param"), error.get("message")
    names = [text for text in (param, message) if isinstance(text, str)]
    if not any(_MESSAGE_INDEX.search(text) for text in names):
        return None
    inserted_named = False

    def renumber(match: re.Match[str]) -> str:
        nonlocal inserted_named
        index = int(match[1])
        if index == inserted:
            inserted_named = True
            return match[0]
        return f"messages[{index - 1 if index > inserted else index}]"

    renumbered = dict(error)
    if isinstance(param, str):
        renumbered["param"] = _MESSAGE_INDEX.sub(renumber, param)
    if isinstance(message, str):
        renumbered["message"] = _MESSAGE_INDEX.sub(renumber, message)
        if inserted_named:
            renumbered["message"] += (
                f" (messages[{inserted}] is the system prompt the proxy's policy inserted; "
                "later messages are numbered as you sent them)"
            )
    return renumbered


def upstream_error_summary(status: int, parsed: Any) -> str:
    """What the log line says about a relayed upstream error: its status and code, no text
    (an upstream's message may quote the request)."""
    error = parsed.get("error") if isinstance(parsed, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, str) and code and len(code) <= MAX_LOGGED_CODE_CHARS:
        return f"the upstream answered HTTP {status} ({code})"
    return f"the upstream answered HTTP {status}"


async def read_answer(answer: UpstreamResponse, limit: int, record: RequestRecord) -> bytes:
    """The whole answer body; a body that breaks, stalls or overflows is the upstream's failure."""
    try:
        return await answer.read(limit)
    except UpstreamFailure as exc:
        blame_upstream(record, exc.reason, exc.message)
        raise


def invalid_answer(record: RequestRecord, message: str) -> UpstreamUnreachable:
    """A whole answer the client cannot be given: the upstream's failure, to raise."""
    blame_upstream(record, "invalid_response", message)
    return UpstreamUnreachable(message, reason="invalid_response")


async def relay_json(
    answer: UpstreamResponse,
    headers: Mapping[str, str],
    record: RequestRecord,
    legacy: bool = False,
    observe: Callable[[RequestRecord, bytes], None] = observe_completion_json,
) -> web.Response:
    """A whole JSON answer, as the upstream wrote it (read by `observe`), or translated back
    to the legacy `function_call` shape."""
    raw = await read_answer(answer, MAX_ANSWER_BYTES, record)
    try:
        if legacy:  # the translation needs the whole answer
            parsed = completion_object(raw)
            observe_completion(record, parsed)
        else:
            observe(record, raw)
        if record.capture is not None:
            record.capture.keep(raw)
    except jsonutil.JSONDecodeError as exc:
        raise invalid_answer(record, "The upstream answered with a body that is not JSON.") from exc
    except AnswerNotObject:
        message = "The upstream answered with JSON that is not an object."
        raise invalid_answer(record, message) from None
    if legacy:
        raw = jsonutil.dumps(response_to_legacy(parsed))
    record.status = answer.status
    return web.Response(
        body=raw, status=answer.status, content_type="application/json", headers=headers
    )


class StreamRelay:
    """Forwards one SSE answer of chat completions to the client, event by event."""

    END_NAME = "[DONE]"  # what a whole stream ends with, as an error message names it

    def __init__(self, record: RequestRecord, legacy: bool, strip_usage: bool):
        self.record = record
        self.legacy = legacy
        self.strip_usage = strip_usage
        self.splitter = EventSplitter()
        self.saw_done = False
        self.saw_error = False
        self.saw_garbage = False
        self.redact: Callable[[bytes], bytes] = _unchanged  # the answer's, once it runs

    async def run(
        self, request: web.Request, answer: UpstreamResponse, headers: Mapping[str, str]
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=answer.status,
            headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
        )
        await response.prepare(request)
        self.record.status = answer.status
        self.redact = answer.redact
        try:
            await self._pump(answer, response)
        except ConnectionResetError:
            # The client went away: the handler closes the upstream answer right after this.
            # After the last event it had its whole answer (see `record_abandoned`).
            self.record.client_disconnected = not self.record.stream_delivered
            return response
        await response.write_eof()
        return response

    async def _pump(self, answer: UpstreamResponse, response: web.StreamResponse) -> None:
        try:
            async for data in answer.chunks:
                events = self.splitter.feed(data)
                if events:
                    await response.write(self._forward(events))
                    self.record.stream_delivered = self.saw_done
                if self.saw_garbage:
                    # The SDK cannot parse what follows: end the stream while it still can.
                    raise UpstreamUnreachable(
                        "The upstream sent a stream event that is not JSON.",
                        reason="invalid_response",
                    )
        except (ProxyError, EventTooLarge) as exc:
            await self._fail(response, exc)
            return
        if not self.saw_done and not self.saw_error:
            await self._fail(
                response,
                UpstreamUnreachable(
                    f"The upstream ended the stream before {self.END_NAME}.",
                    reason="broken_stream",
                ),
            )

    def _forward(self, events: list[bytes]) -> bytes:
        """The bytes to send for `events`, up to the first one that is not JSON (if any)."""
        self._note_first_byte()
        out: list[bytes] = []
        for event in events:
            data = event_data(event)
            if data is None:
                out.append(event)
                continue
            if data.startswith(DONE):
                self.saw_done = True
            elif is_error_event(data):
                event = self.redact(event)
                self._note_error_event()
            elif not looks_like_json_object(data):
                self.saw_garbage = True
                break
            else:
                note_chunk_data(self.record, data)
                if self.strip_usage and is_usage_chunk(data):
                    continue  # we asked for it; the client did not
                if self.legacy:
                    event = _legacy_event(event, data)
            out.append(event)
        return b"".join(out)

    def _note_error_event(self) -> None:
        """The upstream ended the stream with its own error event: relayed, and its fault."""
        self.saw_error = True
        self.record.error = "the upstream ended the stream with an error event"
        blame_upstream(self.record, "error_event", self.record.error)

    def _note_first_byte(self) -> None:
        if self.record.first_byte_seconds is None:
            self.record.first_byte_seconds = time.perf_counter() - self.record.started

    async def _fail(self, response: web.StreamResponse, exc: Exception) -> None:
        error = (
            exc
            if isinstance(exc, ProxyError)
            else UpstreamUnreachable(str(exc), reason="invalid_response")
        )
        self.record.error = error.message
        reason = error.reason if isinstance(error, UpstreamFailure) else "broken_stream"
        blame_upstream(self.record, reason, error.message)
        await response.write(self._error_event(error))

    def _error_event(self, error: ProxyError) -> bytes:
        """The stream's last event when it breaks: chat's `data: {"error": …}`."""
        return format_event(jsonutil.dumps(error.body()))


class ResponsesStreamRelay(StreamRelay):
    """Forwards one SSE answer of the Responses API, event by event (their `event:` lines
    included); it ends with its terminal event (`response.completed`, …), not `[DONE]`."""

    END_NAME = "its final event (response.completed)"

    def __init__(self, record: RequestRecord) -> None:
        super().__init__(record, legacy=False, strip_usage=False)
        self.last_sequence = b""  # the last event's data: a broken stream's error event follows it

    def _forward(self, events: list[bytes]) -> bytes:
        self._note_first_byte()
        out: list[bytes] = []
        for event in events:
            data = event_data(event)
            if data is None:
                out.append(event)
                continue
            if not looks_like_json_object(data):
                self.saw_garbage = True
                break
            if note_response_event(self.record, data):
                self.saw_done = True
            elif _RESPONSES_ERROR.search(data) is not None:
                event = self.redact(event)
                self._note_error_event()
            self.last_sequence = data
            out.append(event)
        return b"".join(out)

    def _error_event(self, error: ProxyError) -> bytes:
        """The Responses API's `error` event, numbered after the last event relayed."""
        found = _SEQUENCE.search(self.last_sequence)
        return responses_error_event(error, int(found[1]) + 1 if found is not None else 0)


async def relay_bridged(
    request: web.Request,
    answer: UpstreamResponse,
    headers: Mapping[str, str],
    record: RequestRecord,
    outgoing: Outgoing,
    streamed: bool,
) -> web.StreamResponse:
    """A chat answer to a Responses request that was bridged: translated back to a Response,
    or to its stream of events (`proxy.bridge`); counted as the chat answer it is."""
    assert outgoing.bridged_from is not None
    ids = ResponseIds.for_request(record.request_id, int(time.time()))
    if streamed:
        stream = BridgedStreamRelay(record, outgoing.bridged_from, ids)
        return await stream.run(request, answer, headers)
    raw = await read_answer(answer, MAX_ANSWER_BYTES, record)
    try:
        completion = completion_object(raw)
        observe_completion(record, completion)
        translated = chat_to_response(completion, outgoing.bridged_from, ids)
        if record.capture is not None:
            record.capture.keep(raw)
    except UpstreamUnreachable as exc:  # the translation says what the completion lacks
        raise invalid_answer(record, exc.message) from exc
    except (jsonutil.JSONDecodeError, AnswerNotObject) as exc:
        message = "The upstream answered with a body that is not a chat completion."
        raise invalid_answer(record, message) from exc
    record.status = answer.status
    return web.Response(
        body=jsonutil.dumps(translated),
        status=answer.status,
        content_type="application/json",
        headers=headers,
    )


class BridgedStreamRelay(StreamRelay):
    """A chat stream answering a bridged Responses request, relayed as the Responses events
    that say the same (`bridge.StreamTranslator`); its chunks are read as chat's are."""

    def __init__(self, record: RequestRecord, request: dict[str, Any], ids: ResponseIds):
        super().__init__(record, legacy=False, strip_usage=False)
        self.translator = StreamTranslator(request, ids)

    def _forward(self, events: list[bytes]) -> bytes:
        self._note_first_byte()
        out = [self.translator.start()]
        for event in events:
            data = event_data(event)
            if data is None:
                continue  # comments and fields of the chat stream have no Responses form
            if data.startswith(DONE):
                self.saw_done = True
                out.append(self.translator.done())
                continue
            try:
                chunk = jsonutil.loads(data)
            except jsonutil.JSONDecodeError:
                chunk = None
            if not isinstance(chunk, dict):
                self.saw_garbage = True
                break
            if "error" in chunk:  # its message reaches the client: never the upstream's key
                chunk = jsonutil.loads(self.redact(data))
            note_chunk_data(self.record, data)
            out.append(self.translator.feed(chunk))
            if self.translator.error is not None and not self.saw_error:
                self._note_error_event()  # the upstream's error event, said in Responses words
        return b"".join(out)

    def _error_event(self, error: ProxyError) -> bytes:
        return self.translator.fail(error)


def responses_error_event(error: ProxyError, sequence: int) -> bytes:
    """An `error` event of a Responses stream, numbered `sequence`."""
    event = {"type": "error", "sequence_number": sequence, **error_event_fields(error)}
    return b"event: error\ndata: " + jsonutil.dumps(event) + b"\n\n"


def _unchanged(data: bytes) -> bytes:
    return data


def looks_like_json_object(data: bytes) -> bool:
    """Whether an event's data is framed as a JSON object, as every chunk is.

    A framing test, not a parse (~0.1 µs against ~1 µs): it catches what a broken upstream
    sends in practice — HTML, plain text, a truncated line — without parsing every chunk.
    """
    if data[:1] == b"{" and data[-1:] == b"}":
        return True
    stripped = data.strip()
    return stripped[:1] == b"{" and stripped[-1:] == b"}"


def blame_upstream(record: RequestRecord, reason: str, error: str) -> None:
    """The answering attempt failed after it started (counted as that upstream's error, and
    listed with its reason in the request's log line)."""
    if record.attempts:
        record.attempts[-1].reason = reason
        record.attempts[-1].error = error


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
