"""The bridge's stream translation: `chat.completion.chunk`s → the Responses stream events
that say the same, as SSE bytes (see the package docstring).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy import jsonutil
from proxy.bridge.answer import (
    INCOMPLETE_REASONS,
    ResponseIds,
    call_item,
    given,
    message_item,
    refusal_content,
    response_object,
    response_usage,
    text_content,
)
from proxy.bridge.types import Body
from proxy.errors import ProxyError, UpstreamUnreachable


@dataclass
class _OpenMessage:
    """The message item being streamed: its finished content parts (written once, as JSON
    fragments) and the one open part's kind and text so far."""

    item_id: str
    output_index: int
    parts: list[orjson.Fragment] = field(default_factory=list)
    kind: str | None = None  # "output_text" or "refusal"
    fragments: list[str] = field(default_factory=list)


@dataclass
class _OpenCall:
    item_id: str
    output_index: int
    chat_index: Any
    call_id: str
    name: str
    fragments: list[str] = field(default_factory=list)


class StreamTranslator:
    """Turns one chat stream into the Responses events that say the same, as SSE bytes.

    Call `start()` for the opening events (or let the first `feed` write them), `feed(chunk)`
    for each parsed chat chunk, then `done()` at `[DONE]`, or `fail(error)` when the upstream
    stream broke. Each returns the bytes to send (possibly none). After the terminal event
    (`response.completed`, `response.incomplete` or `error`) every call returns nothing.

    Text and arguments are kept as the fragments that came and joined once, when their item
    closes; each finished item is written to JSON once and reused by the events that repeat it.
    """

    def __init__(self, request: Body, ids: ResponseIds) -> None:
        self._request = request
        self._ids = ids
        self._model = request.get("model")
        # Written once: the lifecycle events repeat the request's tools.
        self._tools = orjson.Fragment(jsonutil.dumps(given(request, "tools", [])))
        self._sequence = 0
        self._started = False
        self._open: _OpenMessage | _OpenCall | None = None
        self._output: list[orjson.Fragment] = []
        self._calls_seen: set[Any] = set()
        self._finish_reason: Any = None
        self._usage: Body | None = None
        self.finished = False
        # What ended the stream in an `error` event, for the caller's records.
        self.error: ProxyError | None = None

    def start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        opening = orjson.Fragment(jsonutil.dumps(self._response("in_progress", None)))
        return self._event("response.created", {"response": opening}) + self._event(
            "response.in_progress", {"response": opening}
        )

    def feed(self, chunk: Body) -> bytes:
        if self.finished:
            return b""
        out = [self.start()]
        if chunk.get("error") is not None:
            out.append(self._upstream_error(chunk["error"]))
            return b"".join(out)
        if isinstance(chunk.get("model"), str):
            self._model = chunk["model"]
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._choice(choice, out)
        return b"".join(out)

    def done(self) -> bytes:
        """`[DONE]`: close the open item and write the whole Response."""
        if self.finished:
            return b""
        out = [self.start()]
        reason = INCOMPLETE_REASONS.get(self._finish_reason)
        status = "completed" if reason is None else "incomplete"
        self._close(out, status)  # the item being written when it stopped, if it did
        response = self._response(status, response_usage(self._usage), reason)
        out.append(self._event(f"response.{status}", {"response": response}))
        self.finished = True
        return b"".join(out)

    def fail(self, error: ProxyError) -> bytes:
        """The upstream stream broke: an `error` event, and no Response."""
        if self.finished:
            return b""
        return self.start() + self._error(error)

    def _choice(self, choice: Body, out: list[bytes]) -> None:
        delta = choice.get("delta") or {}
        for kind, key in (("output_text", "content"), ("refusal", "refusal")):
            if isinstance(delta.get(key), str) and delta[key]:
                self._text_delta(kind, delta[key], out)
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                self._call_delta(call, out)
                if self.finished:
                    return
        if choice.get("finish_reason") is not None:
            self._finish_reason = choice["finish_reason"]

    # Text (and refusals): one message item, one content part per kind in a row.

    def _text_delta(self, kind: str, delta: str, out: list[bytes]) -> None:
        message = self._open
        if not isinstance(message, _OpenMessage):
            self._close(out, "completed")
            message = self._open_message(out)
        if message.kind != kind:
            self._close_part(message, out)
            self._open_part(message, kind, out)
        message.fragments.append(delta)
        fields = {**_located(message), "delta": delta, **_LOGPROBS[kind]}
        out.append(self._event(_DELTA_EVENT[kind], fields))

    def _open_message(self, out: list[bytes]) -> _OpenMessage:
        message = _OpenMessage(self._ids.message(len(self._output)), len(self._output))
        item = message_item(message.item_id, "in_progress", [])
        out.append(self._item_event("response.output_item.added", message.output_index, item))
        self._open = message
        return message

    def _open_part(self, message: _OpenMessage, kind: str, out: list[bytes]) -> None:
        message.kind = kind
        part = text_content("") if kind == "output_text" else refusal_content("")
        out.append(self._event("response.content_part.added", {**_located(message), "part": part}))

    def _close_part(self, message: _OpenMessage, out: list[bytes]) -> None:
        if message.kind is None:
            return
        kind, located = message.kind, _located(message)
        text = orjson.Fragment(jsonutil.dumps("".join(message.fragments)))
        key, content = (
            ("text", text_content) if kind == "output_text" else ("refusal", refusal_content)
        )
        out.append(self._event(_DONE_EVENT[kind], {**located, key: text, **_LOGPROBS[kind]}))
        part = orjson.Fragment(jsonutil.dumps(content(text)))
        out.append(self._event("response.content_part.done", {**located, "part": part}))
        message.parts.append(part)
        message.kind, message.fragments = None, []

    # Tool calls: one function_call item per chat call index, in the order they come.

    def _call_delta(self, delta: Body, out: list[bytes]) -> None:
        call = self._call_for(delta, out)
        if call is None:
            return
        function = delta.get("function") or {}
        if not call.name and isinstance(function.get("name"), str):
            call.name = function["name"]  # a server that names the call after its first delta
        fragment = function.get("arguments")
        if isinstance(fragment, str) and fragment:
            call.fragments.append(fragment)
            fields = {"item_id": call.item_id, "output_index": call.output_index, "delta": fragment}
            out.append(self._event("response.function_call_arguments.delta", fields))

    def _call_for(self, delta: Body, out: list[bytes]) -> _OpenCall | None:
        """The open call `delta` continues (same index, no other id), else a new one; None
        when it goes back to a call already closed (the stream then ends in an error)."""
        index, current = delta.get("index"), self._open
        if (
            isinstance(current, _OpenCall)
            and current.chat_index == index
            and delta.get("id") in (None, current.call_id)
        ):
            return current
        if index in self._calls_seen:
            # Every known server streams its calls one after the other; an item once done
            # cannot take more arguments, so a stream that goes back cannot be followed.
            message = f"The upstream streamed tool call {index} again after a later call began."
            out.append(self._error(UpstreamUnreachable(message, reason="invalid_response")))
            return None
        return self._open_call(delta, out)

    def _open_call(self, delta: Body, out: list[bytes]) -> _OpenCall:
        self._close(out, "completed")
        output_index = len(self._output)
        name = (delta.get("function") or {}).get("name")
        call = _OpenCall(
            self._ids.function_call(output_index),
            output_index,
            delta.get("index"),
            delta.get("id") or self._ids.call(output_index),
            name if isinstance(name, str) else "",
        )
        self._calls_seen.add(call.chat_index)
        item = call_item(call.item_id, "in_progress", call.call_id, call.name, "")
        out.append(self._item_event("response.output_item.added", output_index, item))
        self._open = call
        return call

    # Items end one at a time: when the next begins, or at [DONE].

    def _close(self, out: list[bytes], status: str) -> None:
        current, self._open = self._open, None
        if isinstance(current, _OpenMessage):
            self._close_part(current, out)
            item = message_item(current.item_id, status, current.parts)
        elif isinstance(current, _OpenCall):
            arguments = orjson.Fragment(jsonutil.dumps("".join(current.fragments)))
            located = {"item_id": current.item_id, "output_index": current.output_index}
            out.append(
                self._event(
                    "response.function_call_arguments.done", {**located, "arguments": arguments}
                )
            )
            item = call_item(current.item_id, status, current.call_id, current.name, arguments)
        else:
            return
        written = orjson.Fragment(jsonutil.dumps(item))
        self._output.append(written)
        out.append(self._item_event("response.output_item.done", current.output_index, written))

    def _item_event(self, kind: str, output_index: int, item: Any) -> bytes:
        return self._event(kind, {"output_index": output_index, "item": item})

    def _response(self, status: str, usage: Body | None, reason: str | None = None) -> Body:
        return response_object(
            self._request,
            self._ids,
            status=status,
            output=self._output,
            usage=usage,
            model=self._model,
            incomplete_reason=reason,
            tools=self._tools,
        )

    def _upstream_error(self, error: Any) -> bytes:
        """An upstream `{"error": …}` chunk, told in its own words (its code, else its type)."""
        error = error if isinstance(error, dict) else {}
        message, param = error.get("message"), error.get("param")
        code = error.get("code") if isinstance(error.get("code"), str) else error.get("type")
        failure = UpstreamUnreachable(
            message if isinstance(message, str) else "The upstream reported an error.",
            reason="error_event",
            code=code if isinstance(code, str) else None,
        )
        failure.param = param if isinstance(param, str) else None
        return self._error(failure)

    def _error(self, error: ProxyError) -> bytes:
        self.finished = True
        self.error = error
        return self._event("error", error_event_fields(error))

    def _event(self, kind: str, fields: Body) -> bytes:
        payload = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + jsonutil.dumps(payload) + b"\n\n"


def error_event_fields(error: ProxyError) -> Body:
    """An `error` event's fields but its type and number: those of the SDK's
    `ResponseErrorEvent`, and the error object under `error` too, which is what makes the SDK
    raise `APIError` (and what OpenAI's own stream sends)."""
    body = error.body()["error"]
    return {"code": body["code"], "message": body["message"], "param": body["param"], "error": body}


def _located(message: _OpenMessage) -> Body:
    """Where a content event happens: the open part of `message`."""
    return {
        "item_id": message.item_id,
        "output_index": message.output_index,
        "content_index": len(message.parts),
    }


# The types require `logprobs` on text deltas and their done event; the bridge asks for none.
_LOGPROBS: dict[Any, Body] = {"output_text": {"logprobs": []}, "refusal": {}}
_DELTA_EVENT = {"output_text": "response.output_text.delta", "refusal": "response.refusal.delta"}
_DONE_EVENT = {"output_text": "response.output_text.done", "refusal": "response.refusal.done"}
