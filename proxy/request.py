"""The parse stage: read the client's body once, bounded, and check the fields the proxy reads."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from proxy import jsonutil
from proxy.errors import BodyTooLarge, InvalidRequest, RequestTimeout


async def read_body(request: web.Request, max_bytes: int, timeout_s: float) -> bytes:
    """The whole body, refused early when too large and bounded in time (slow senders)."""
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise BodyTooLarge(f"The request body is larger than {max_bytes} bytes.")
    try:
        if request.content.is_eof():
            return await request.read()  # already all here: no timer to arm and cancel
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise BodyTooLarge(f"The request body is larger than {max_bytes} bytes.") from exc
    except TimeoutError as exc:
        raise RequestTimeout(f"The request body did not arrive within {timeout_s:g} s.") from exc


def parse_chat_body(raw: bytes) -> dict[str, Any]:
    """The body as a dict; a 400 naming the field for anything the proxy cannot route."""
    if not raw:
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    try:
        body = jsonutil.loads(raw)
    except jsonutil.JSONDecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request ({exc}).", code="invalid_json"
        ) from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
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
