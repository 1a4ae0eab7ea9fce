"""The Python floor of the benchmark: an aiohttp server that forwards every POST, with no logic.

It does what any aiohttp proxy has to do and nothing more: read the request body, post it to
the same path on one upstream over a pooled connection, and pass the answer back (a stream
chunk by chunk, as it arrives). No JSON parsing, no routing, no logging, no metrics. What
tuned-proxy costs above this is the cost of its own logic, not of aiohttp.

Usage: python tests/bench/forwarder.py --port PORT --upstream http://127.0.0.1:UPSTREAM_PORT
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)
TIMEOUT = aiohttp.ClientTimeout(total=300, connect=10, sock_read=60)


async def forward(request: web.Request) -> web.StreamResponse:
    session = request.app[SESSION]
    body = await request.read()
    headers = {
        "Content-Type": request.headers.get("Content-Type", "application/json"),
        "Accept": request.headers.get("Accept", "*/*"),
    }
    url = request.app[UPSTREAM] + request.path_qs
    async with session.post(url, data=body, headers=headers, timeout=TIMEOUT) as answer:
        content_type = answer.headers.get("Content-Type", "application/octet-stream")
        if not content_type.startswith("text/event-stream"):
            return web.Response(
                status=answer.status,
                body=await answer.read(),
                headers={"Content-Type": content_type},
            )
        response = web.StreamResponse(status=answer.status, headers={"Content-Type": content_type})
        await response.prepare(request)
        async for chunk in answer.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


def build_app(upstream: str) -> web.Application:
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app[UPSTREAM] = upstream.rstrip("/")

    async def session(app: web.Application) -> AsyncIterator[None]:
        # Unlimited pool, like tuned-proxy's: neither queues requests behind a connection cap.
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        app[SESSION] = aiohttp.ClientSession(connector=connector)
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session)
    app.router.add_post("/{path:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:8000")
    args = parser.parse_args()
    web.run_app(
        build_app(args.upstream),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
