"""The upstream of the streams benchmark: a minimal asyncio HTTP/1.1 server that streams slowly.

nginx answers a stream in one write; this server keeps a thousand streams open for tens of
seconds, the way a model generating an answer does, at almost no CPU cost of its own.

    POST /trickle/v1/chat/completions  a role chunk at once, then a content chunk every
                                       INTERVAL seconds, EVENTS of them, then the finish
                                       chunk, the usage chunk and [DONE]
    POST /ttfb/v1/chat/completions     the role chunk at once and the rest a moment later, so
                                       a client can time the first event on its own

Keep-alive and chunked transfer encoding; nothing else of HTTP (it only ever talks to the
benchmark's own proxies).

Usage: python tests/bench/trickle_upstream.py --port P [--events N] [--interval S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import dataclass
from typing import Any

# Between the first event and the rest of a /ttfb stream: long enough that the first event
# travels alone through the proxy, short enough to take many samples.
TTFB_REST_DELAY_S = 0.002
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
)
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
MAX_BODY_BYTES = 4 * 1024 * 1024


def sse_event(payload: dict[str, Any] | str) -> bytes:
    """One SSE event as one HTTP chunk."""
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    event = f"data: {data}\n\n".encode()
    return b"%x\r\n%s\r\n" % (len(event), event)


def completion_chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-trickle",
        "object": "chat.completion.chunk",
        "created": 1767225600,
        "model": "support-ft-trickle",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def stream_events(words: int) -> tuple[bytes, list[bytes], bytes]:
    """(first event, `words` content events, closing events) of one answer."""
    first = sse_event(completion_chunk({"role": "assistant", "content": ""}))
    content = [sse_event(completion_chunk({"content": f" word{index}"})) for index in range(words)]
    usage = {"prompt_tokens": 2874, "completion_tokens": words, "total_tokens": 2874 + words}
    closing = b"".join(
        [
            sse_event(completion_chunk({}, finish_reason="stop")),
            sse_event({**completion_chunk({}), "choices": [], "usage": usage}),
            sse_event("[DONE]"),
            b"0\r\n\r\n",
        ]
    )
    return first, content, closing


@dataclass(frozen=True)
class Plan:
    events: int
    interval_s: float

    async def trickle(self, writer: asyncio.StreamWriter) -> None:
        first, content, closing = stream_events(self.events)
        writer.write(STREAM_HEAD + first)
        await writer.drain()
        for event in content:
            await asyncio.sleep(self.interval_s)
            writer.write(event)
            await writer.drain()
        writer.write(closing)
        await writer.drain()

    async def first_then_rest(self, writer: asyncio.StreamWriter) -> None:
        first, content, closing = stream_events(8)
        writer.write(STREAM_HEAD + first)
        await writer.drain()
        await asyncio.sleep(TTFB_REST_DELAY_S)
        writer.write(b"".join(content) + closing)
        await writer.drain()


def read_head(head: bytes) -> tuple[str, int, bool]:
    """(path, content length, keep-alive) of a request head."""
    lines = head.decode("latin-1").split("\r\n")
    path = lines[0].split(" ")[1]
    headers = dict(
        (name.strip().lower(), value.strip())
        for name, _, value in (line.partition(":") for line in lines[1:] if line)
    )
    length = int(headers.get("content-length", "0"))
    if length > MAX_BODY_BYTES or "chunked" in headers.get("transfer-encoding", ""):
        raise ValueError("only bodies with a Content-Length of at most 4 MiB are read")
    return path, length, headers.get("connection", "").lower() != "close"


async def serve_connection(
    plan: Plan, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        keep_alive = True
        while keep_alive:
            path, length, keep_alive = read_head(await reader.readuntil(b"\r\n\r\n"))
            await reader.readexactly(length)
            if path.startswith("/trickle/"):
                await plan.trickle(writer)
            elif path.startswith("/ttfb/"):
                await plan.first_then_rest(writer)
            else:
                writer.write(NOT_FOUND)
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the client closed its connection: between requests that is how keep-alive ends
    finally:
        writer.close()


async def serve(port: int, plan: Plan) -> None:
    server = await asyncio.start_server(
        lambda reader, writer: serve_connection(plan, reader, writer),
        "127.0.0.1",
        port,
        backlog=4096,
        limit=MAX_BODY_BYTES,
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--events", type=int, default=30, help="content chunks per stream")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between chunks")
    args = parser.parse_args()
    asyncio.run(serve(args.port, Plan(args.events, args.interval)))


if __name__ == "__main__":
    main()
