"""Requests to a running proxy as a client sends them: `exchange` through aiohttp, any bytes
through a socket (`raw_exchange`, `request_head`), and the `data:` events of a stream."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict

from tests.support.keys import CLIENT_KEY

CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
MESSAGES = [{"role": "user", "content": "Hello"}]
GOOD = {"model": "chat", "messages": MESSAGES}  # what the route `chat` of any config serves


@dataclass(frozen=True)
class Outcome:
    status: int
    headers: CIMultiDict[str]
    body: bytes


async def exchange(
    url: str, body: dict[str, Any], request_id: str | None = None, path: str = CHAT
) -> Outcome:
    """One request to `path` on a connection of its own, read to the end and closed."""
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    if request_id is not None:
        headers["x-request-id"] = request_id
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}{path}", json=body, headers=headers) as response,
    ):
        return Outcome(response.status, response.headers.copy(), await response.read())


def data_events(raw: bytes) -> list[bytes]:
    """The payloads of a stream's `data: ` events (LF framing, as the proxy writes it)."""
    return [event[6:] for event in raw.split(b"\n\n") if event.startswith(b"data: ")]


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, Any]:
        assert self.headers["content-type"].startswith("application/json")
        error: dict[str, Any] = json.loads(self.body)["error"]
        assert set(error) == {"message", "type", "param", "code"}
        return error


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return RawResponse(int(status_line.split()[1]), headers, body)


def request_head(
    path: str = CHAT,
    headers: dict[str, str] | None = None,
    length: int | None = None,
    host: str = "proxy",
) -> bytes:
    """A POST's request line and headers, with the client's key (and a JSON body's length)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Authorization: Bearer {CLIENT_KEY}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if length is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def raw_exchange(url: str, payload: bytes) -> RawResponse:
    """Send bytes as they are (whatever HTTP they make) and read one answer."""
    address = urlsplit(url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        writer.write(payload)
        await writer.drain()
        async with asyncio.timeout(10):
            return await read_response(reader)
    finally:
        writer.close()
        await writer.wait_closed()


def json_request(body: Any, headers: dict[str, str] | None = None) -> bytes:
    """A whole request carrying `body` as JSON, for `raw_exchange`."""
    raw = json.dumps(body).encode()
    return request_head(headers=headers, length=len(raw)) + raw
