"""The parse stage: read the client's body once, bounded, and check the fields the proxy reads.

The body is split into its top-level fields first (msgspec, without building their values), so
that the `tools` list, which an application sends the same on every request and which is most
of a request's bytes, is parsed once per distinct text (`ToolLists`) instead of on every request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError

from proxy import jsonutil
from proxy.cache import BoundedCache
from proxy.errors import BodyTooLarge, InvalidRequest, RequestTimeout, nested_too_deeply

# The body's top level as field name -> the field's JSON text (validated, not decoded).
_TOP_LEVEL = msgspec.json.Decoder(dict[str, msgspec.Raw])


async def read_body(request: web.Request, max_bytes: int, timeout_s: float) -> bytes:
    """The whole body, refused early when too large and bounded in time (slow senders)."""
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise BodyTooLarge(f"The request body is larger than {max_bytes} bytes.")
    try:
        if request.content.is_eof():
            return await request.read()  # already all here: no timer to arm and cancel
        if request.headers.get("Expect", "").lower() == "100-continue":
            await invite_body(request)
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise BodyTooLarge(f"The request body is larger than {max_bytes} bytes.") from exc
    except TimeoutError as exc:
        raise RequestTimeout(f"The request body did not arrive within {timeout_s:g} s.") from exc
    except web.RequestPayloadError as exc:
        raise unreadable_body(exc) from exc


async def invite_body(request: web.Request) -> None:
    """Answer `Expect: 100-continue` now that the request passed the checks before its body
    (aiohttp would have answered it before them: see `app.check_expectation`)."""
    if request.version >= (1, 1):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp does: the answer itself has not started


def unreadable_body(exc: web.RequestPayloadError) -> InvalidRequest:
    """A body aiohttp could not read: not in its declared encoding, or badly framed."""
    if isinstance(exc.__cause__, ContentEncodingError):
        return InvalidRequest(
            "The request body is not in the encoding its Content-Encoding header declares.",
            code="invalid_encoding",
        )
    return InvalidRequest(
        "The request body could not be read (its length or chunked framing is wrong).",
        code="invalid_body",
    )


class ToolLists:
    """Recent requests' `tools` lists by their JSON text, each parsed once and shared.

    A shared list is a `JsonList`: it cannot be changed, it carries its serialised text, and
    the rewrite memoizes its outcome per policy against that text. At most `max_lists` lists
    of at most `max_bytes` of text in all are kept, the oldest leaving first.
    """

    def __init__(self, max_lists: int = 256, max_bytes: int = 8 * 1024 * 1024) -> None:
        self._lists: BoundedCache[bytes, jsonutil.JsonList] = BoundedCache(
            len, max_lists, max_bytes
        )
        # The last list found: an application sends the same list on every request, and
        # comparing 12 KB of text is ~100× cheaper than hashing it for the look-up.
        self._last: tuple[bytes, jsonutil.JsonList] = (b"", jsonutil.JsonList((), b"[]"))

    def __len__(self) -> int:
        return len(self._lists)

    def parse(self, text: bytes) -> Any:
        """The value of `text`: the shared list when it is a list, else a fresh value."""
        last_text, last_list = self._last
        if text == last_text:
            return last_list
        known = self._lists.get(text)
        if known is not None:
            self._last = (text, known)
            return known
        value = jsonutil.loads(text)
        if not isinstance(value, list):
            return value
        # Its text as the proxy serialises it, not the client's: what reaches the upstream is
        # what the proxy read (a duplicate key, say, is gone), as for any other field.
        try:
            shared = jsonutil.JsonList(value, jsonutil.dumps(value))
        except TypeError as exc:  # orjson writes 254 levels of the ~1000 it reads
            raise nested_too_deeply() from exc
        if len(text) <= self._lists.max_bytes:  # what the cache refuses, the shortcut does too
            self._lists.put(text, shared)
            self._last = (text, shared)
        return shared


def parse_chat_body(raw: bytes, tool_lists: ToolLists | None = None) -> dict[str, Any]:
    """The body as a dict; a 400 naming the field for anything the proxy cannot route.

    With `tool_lists`, the `tools` value is the shared `JsonList` for its text.
    """
    if not raw:
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    body = _decode_fields(raw, tool_lists.parse if tool_lists is not None else jsonutil.loads)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("Invalid type for 'stream': expected a boolean.", param="stream")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise InvalidRequest(
            "Missing or invalid 'messages': expected an array of messages.", param="messages"
        )
    check_stream_options(body.get("stream_options"))
    return body


def _decode_fields(raw: bytes, parse_tools: Callable[[bytes], Any]) -> dict[str, Any]:
    try:
        fields = _TOP_LEVEL.decode(raw)
        return {
            name: parse_tools(bytes(text)) if name == "tools" else jsonutil.loads(bytes(text))
            for name, text in fields.items()
        }
    except msgspec.ValidationError as exc:  # valid JSON, not an object
        raise InvalidRequest("The request body must be a JSON object.") from exc
    except RecursionError as exc:  # msgspec walks nested values on the interpreter's stack
        raise nested_too_deeply() from exc
    # msgspec leaves a key's UTF-8 to Python, which raises UnicodeDecodeError.
    except (msgspec.DecodeError, jsonutil.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request ({exc}).", code="invalid_json"
        ) from exc


def check_stream_options(options: Any) -> None:
    """The proxy adds `include_usage` to this object, so its shape is the proxy's business."""
    if options is None:
        return
    if not isinstance(options, dict):
        raise InvalidRequest(
            "Invalid type for 'stream_options': expected an object.", param="stream_options"
        )
    include_usage = options.get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise InvalidRequest(
            "Invalid type for 'stream_options.include_usage': expected a boolean.",
            param="stream_options.include_usage",
        )


def requested_model(body: dict[str, Any], from_path: str | None) -> str:
    """The route name: the deployment in an Azure path, else the body's `model`."""
    if from_path:
        return from_path
    model = body.get("model")
    if model is None or model == "":
        raise InvalidRequest("Missing required parameter: 'model'.", param="model")
    if not isinstance(model, str):
        raise InvalidRequest("Invalid type for 'model': expected a string.", param="model")
    return model
