"""The parse stage: read the client's body once, bounded, and check the fields the proxy reads.

The body is split into its top-level fields first (msgspec, without building their values), so
that the `tools` list, which an application sends the same on every request and which is most
of a request's bytes, is parsed once per distinct text (`ToolLists`) instead of on every request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError

from proxy import jsonutil
from proxy.admission import Holding
from proxy.cache import BYTES_PER_JSON_ELEMENT, BoundedCache, weigh_json_text
from proxy.errors import BodyTooLarge, InvalidRequest, RequestTimeout, nested_too_deeply

# The body's top level as field name -> the field's JSON text (validated, not decoded).
_TOP_LEVEL = msgspec.json.Decoder(dict[str, msgspec.Raw])


async def read_body(request: web.Request, max_bytes: int, timeout_s: float, held: Holding) -> bytes:
    """The whole body, refused early when too large, bounded in time (slow senders), its
    bytes taken from `held` as they arrive."""
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise BodyTooLarge(f"The request body is larger than {max_bytes} bytes.")
    try:
        if request.content.is_eof():
            raw = await request.read()  # already all here: no timer to arm and cancel
            held.take(len(raw))
            return raw
        if request.headers.get("Expect", "").lower() == "100-continue":
            await invite_body(request)
        async with asyncio.timeout(timeout_s):
            return await _read_held(request, max_bytes, held)
    except web.HTTPRequestEntityTooLarge as exc:
        raise BodyTooLarge(f"The request body is larger than {max_bytes} bytes.") from exc
    except TimeoutError as exc:
        raise RequestTimeout(f"The request body did not arrive within {timeout_s:g} s.") from exc
    except web.RequestPayloadError as exc:
        raise unreadable_body(exc) from exc


async def _read_held(request: web.Request, max_bytes: int, held: Holding) -> bytes:
    """A body that is still arriving, read as it comes: each piece counted against the body
    limit and held in flight before the next is read."""
    pieces = []
    size = 0
    while piece := await request.content.readany():
        size += len(piece)
        if size > max_bytes:
            raise BodyTooLarge(f"The request body is larger than {max_bytes} bytes.")
        held.take(len(piece))
        pieces.append(piece)
    return b"".join(pieces)


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


def _list_weight(text: bytes, shared: jsonutil.JsonList) -> int:
    """A cached list's memory: the client's text (the key), the list's own text and values,
    and what stages derive from it (a schema map, schemas' bytes: at most its text again)."""
    return 2 * len(text) + weigh_json_text(shared.json)


class ToolLists:
    """Recent requests' `tools` lists by their JSON text, each parsed once and shared.

    A shared list is a `JsonList`: it cannot be changed, it carries its serialised text, and
    the rewrite memoizes its outcome per policy against that text. At most `max_lists` lists
    weighing at most `max_bytes` in all are kept (their estimated memory, not their text),
    the least lately used leaving first.
    """

    def __init__(self, max_lists: int = 256, max_bytes: int = 32 * 1024 * 1024) -> None:
        self._lists: BoundedCache[bytes, jsonutil.JsonList] = BoundedCache(
            _list_weight, max_lists, max_bytes
        )
        # The last list found: an application sends the same list on every request, and
        # comparing 12 KB of text is ~100× cheaper than hashing it for the look-up.
        self._last: tuple[bytes, jsonutil.JsonList] = (b"", jsonutil.JsonList((), b"[]"))

    def __len__(self) -> int:
        return len(self._lists)

    @property
    def weight(self) -> int:
        """What the kept lists weigh now (estimated bytes)."""
        return self._lists.weight

    def known(self, text: bytes) -> jsonutil.JsonList | None:
        """The shared list of `text` when it was parsed lately, else None."""
        last_text, last_list = self._last
        if text == last_text:
            return last_list
        known = self._lists.get(text)
        if known is not None:
            self._last = (text, known)
        return known

    def parse(self, text: bytes) -> Any:
        """The value of `text`: the shared list when it is a list, else a fresh value."""
        known = self.known(text)
        if known is not None:
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
        if self._lists.put(text, shared):  # what the cache refuses, the shortcut does too
            self._last = (text, shared)
        return shared


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """What one request body may make the parse stage do (`server.*` in the config)."""

    max_json_elements: int = 100_000
    max_tools: int = 128


DEFAULT_LIMITS = BodyLimits()
# A field shorter than this is weighed at its worst rather than counted (`parsed_weight`).
_COUNTED_FROM_BYTES = 128


def parse_chat_body(
    raw: bytes,
    tool_lists: ToolLists | None = None,
    limits: BodyLimits = DEFAULT_LIMITS,
    held: Holding | None = None,
) -> dict[str, Any]:
    """A chat-completions body (`parse_body` checking chat's fields)."""
    return parse_body(raw, tool_lists, limits, held, check_fields)


def parse_responses_body(
    raw: bytes,
    tool_lists: ToolLists | None = None,
    limits: BodyLimits = DEFAULT_LIMITS,
    held: Holding | None = None,
) -> dict[str, Any]:
    """A Responses API body (`parse_body` checking its fields)."""
    return parse_body(raw, tool_lists, limits, held, check_responses_fields)


def parse_body(
    raw: bytes,
    tool_lists: ToolLists | None,
    limits: BodyLimits,
    held: Holding | None,
    check: Callable[[dict[str, Any], BodyLimits], None],
) -> dict[str, Any]:
    """The body as a dict; a 400 naming the field for anything the proxy cannot route.

    With `tool_lists`, the `tools` value is the shared `JsonList` for its text (not parsed
    again). A large body's values are counted against `limits.max_json_elements` before
    anything walks it, and each field's estimated memory is taken from `held` before it is
    parsed (a known tools list is built already).
    """
    if not raw:
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    # A text holds at most one value per two bytes: only a larger body can be over the cap.
    if len(raw) > 2 * limits.max_json_elements:
        count_elements(raw, limits.max_json_elements)
    body = _decode_fields(_split_fields(raw), tool_lists, held)
    check(body, limits)
    return body


def parsed_weight(text: bytes) -> int:
    """The memory `text` may take once parsed: its bytes and its values."""
    return len(text) + BYTES_PER_JSON_ELEMENT * jsonutil.elements_at_most(text)


def parsed_weight_of_short(size: int) -> int:
    """`parsed_weight` of short texts of `size` bytes in all, taken at its worst (a value per
    two bytes) rather than counted: counting them costs more than it would tell."""
    return size * (1 + BYTES_PER_JSON_ELEMENT // 2)


def count_elements(text: bytes, limit: int) -> int:
    """How many JSON values `text` holds, at most; a 400 when more than `limit`.

    The bound at C speed first; only where it is over the limit, the slower count that
    punctuation inside strings does not fool (a long text full of commas is one value).
    """
    total = jsonutil.elements_at_most(text)
    if total > limit:
        total = jsonutil.elements(text)
    if total > limit:
        raise InvalidRequest(
            f"The request body holds about {total} JSON values; at most {limit} are accepted.",
            code="too_many_json_values",
        )
    return total


def check_fields(body: dict[str, Any], limits: BodyLimits) -> None:
    """The fields the proxy reads to route and to stream: a 400 naming the one that is wrong."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("Invalid type for 'stream': expected a boolean.", param="stream")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise InvalidRequest(
            "Missing or invalid 'messages': expected an array of messages.", param="messages"
        )
    for name in ("tools", "functions"):
        check_length(name, body.get(name), limits.max_tools)
    check_stream_options(body.get("stream_options"))


def check_responses_fields(body: dict[str, Any], limits: BodyLimits) -> None:
    """The Responses API fields the proxy reads: `input` (a string or items), `stream`."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("Invalid type for 'stream': expected a boolean.", param="stream")
    given = body.get("input")
    if given is not None and not isinstance(given, str | list):
        raise InvalidRequest(
            "Invalid type for 'input': expected a string or an array of input items.",
            param="input",
        )
    check_length("tools", body.get("tools"), limits.max_tools)


def check_length(name: str, value: Any, limit: int) -> None:
    """OpenAI's own cap on tools (128), with its error: every tool is work for every stage."""
    if isinstance(value, list) and len(value) > limit:
        raise InvalidRequest(
            f"Invalid '{name}': array too long. Expected an array with maximum length "
            f"{limit}, but got an array with length {len(value)} instead.",
            param=name,
            code="array_above_max_length",
        )


def _split_fields(raw: bytes) -> dict[str, msgspec.Raw]:
    """The body's top-level fields as their JSON texts (validated JSON, not decoded)."""
    try:
        return _TOP_LEVEL.decode(raw)
    except msgspec.ValidationError as exc:  # valid JSON, not an object
        raise InvalidRequest("The request body must be a JSON object.") from exc
    except RecursionError as exc:  # msgspec walks nested values on the interpreter's stack
        raise nested_too_deeply() from exc
    # msgspec leaves a key's UTF-8 to Python, which raises UnicodeDecodeError.
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request ({exc}).", code="invalid_json"
        ) from exc


def _decode_fields(
    fields: dict[str, msgspec.Raw], tool_lists: ToolLists | None, held: Holding | None
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    small = 0  # the short fields' weight, taken at once at the end
    try:
        for name, raw_text in fields.items():
            text = bytes(raw_text)
            if name == "tools" and tool_lists is not None:
                known = tool_lists.known(text)
                if known is not None:
                    body[name] = known
                    continue
                _hold(held, parsed_weight(text))
                body[name] = tool_lists.parse(text)
                continue
            if len(text) <= _COUNTED_FROM_BYTES:
                small += len(text)
            else:
                _hold(held, parsed_weight(text))
            body[name] = jsonutil.loads(text)
    except jsonutil.JSONDecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request ({exc}).", code="invalid_json"
        ) from exc
    _hold(held, parsed_weight_of_short(small))
    return body


def _hold(held: Holding | None, size: int) -> None:
    if held is not None:
        held.take(size)


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
