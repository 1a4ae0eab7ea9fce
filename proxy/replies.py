"""The proxy's own answers: an OpenAI error body for a `ProxyError`, the headers every answer
carries, and handing a whole answer over before the bookkeeping."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from proxy.errors import SERVER_NAME, ProxyError
from proxy.record import RequestRecord


def error_response(exc: ProxyError, request_id: str) -> web.Response:
    return web.json_response(
        exc.body(),
        status=exc.status,
        headers={**exc.headers(), "x-request-id": request_id, "Server": SERVER_NAME},
    )


async def hand_over(
    request: web.Request, response: web.StreamResponse, record: RequestRecord
) -> None:
    """Write a whole answer now, before the record stage: the client does not wait for the
    bookkeeping (aiohttp then finds it sent and only finishes the exchange). A stream was
    written as it came and is left as it is."""
    if response.prepared:
        return
    response.headers["x-request-id"] = record.request_id
    response.headers["Server"] = SERVER_NAME
    record.status = response.status
    record.ended = time.perf_counter()  # the client's download is not the proxy's time
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        record.client_disconnected = True  # aiohttp stops there too; the line still counts it
    except asyncio.CancelledError:
        record.client_disconnected = True
        raise
