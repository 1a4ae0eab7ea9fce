"""Running the proxy as a server: bind, serve, stop cleanly."""

from __future__ import annotations

import asyncio
import gc
import signal
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, ContentEncodingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from proxy import jsonutil
from proxy.app import build_app, build_metrics_app
from proxy.auth import Listener, unauthenticated_warning
from proxy.config import Runtime, ServerConfig
from proxy.errors import (
    SERVER_NAME,
    HeadersTooLarge,
    InternalError,
    InvalidRequest,
    ProxyError,
    UriTooLong,
)
from proxy.logs import DirectInfoLines
from proxy.recording import record_unparsed
from proxy.reload import reload_config, watch_config
from proxy.state import STATE

logger = structlog.get_logger("tuned_proxy.server")
# A client connection that sends no request for this long is closed, whether it never sent
# one, sends its headers byte by byte, or idles between requests (nginx's keepalive_timeout;
# aiohttp's own default is an hour). The config's default, for runners started without one.
CLIENT_IDLE_TIMEOUT_S = ServerConfig().client_idle_timeout_s


def unparsed_request_error(status: int, exc: BaseException | None) -> ProxyError:
    """The OpenAI error for a request aiohttp's parser refused (or a failure outside the app)."""
    if isinstance(exc, LineTooLong) and is_request_line(exc):
        return UriTooLong("The request line (the URL) is too long.")
    too_large = isinstance(exc, LineTooLong) or (
        isinstance(exc, BadHttpMessage) and "Too many headers" in exc.message
    )
    if too_large:
        return HeadersTooLarge("The request line or a header is too long, or there are too many.")
    if isinstance(exc, ContentEncodingError):
        return InvalidRequest(
            "The request's Content-Encoding is not one the proxy decodes (gzip, deflate).",
            code="invalid_encoding",
        )
    if status == 400:
        return InvalidRequest(
            "The request is not valid HTTP (a malformed request line or header).",
            code="invalid_http_request",
        )
    return InternalError("Internal error in the proxy.")


def is_request_line(exc: LineTooLong) -> bool:
    """Whether the line aiohttp found too long is the request line rather than a header.

    Its exception does not say; where it was raised does: its C parser's URL callback.
    """
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    return any(frame.name.endswith("cb_on_url") for frame in frames)


class _OpenAIErrorProtocol(RequestHandler):
    """aiohttp's connection handler, answering what its parser refuses in OpenAI's error format
    (aiohttp's own answer is a text/plain 400 that quotes the offending bytes)."""

    def __init__(self, manager: _OpenAIErrorServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._record_unparsed = manager.record_unparsed

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp does: too late for another answer
            raise ConnectionError("the response has started; no error can be sent")
        error = unparsed_request_error(status, exc)
        if error.status >= 500 and exc is not None:
            # A handler's exception that no middleware answered (the mock upstream has none):
            # the answer says nothing of it, the log must.
            logger.error("unhandled error", exc_info=exc)
        request_id = self._record_unparsed(error)
        response = web.Response(
            body=jsonutil.dumps(error.body()),
            status=error.status,
            content_type="application/json",
            headers={"x-request-id": request_id, "Server": SERVER_NAME},
        )
        response.force_close()
        return response


class _OpenAIErrorServer(web.Server):
    """aiohttp's low-level server, built like the app's, making `_OpenAIErrorProtocol`s.

    aiohttp has no public hook for how its parser's refusals are answered: the handler class
    is fixed in `Server.__call__`, so this subclass copies the app's server and overrides it.
    """

    def __init__(self, plain: web.Server, record_unparsed: Callable[[ProxyError], str]) -> None:
        super().__init__(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **plain._kwargs,
        )
        self.record_unparsed = record_unparsed

    def __call__(self) -> RequestHandler:
        return _OpenAIErrorProtocol(self, loop=self._loop, **self._kwargs)


class ProxyRunner(web.AppRunner):
    """The app's runner; unparsable requests get OpenAI errors and are counted and logged."""

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        app = self.app
        return _OpenAIErrorServer(plain, lambda error: record_unparsed(app, error))


async def start_site(
    app: web.Application,
    host: str,
    port: int,
    shutdown_timeout: float = 30.0,
    idle_timeout_s: float = CLIENT_IDLE_TIMEOUT_S,
) -> web.AppRunner:
    # handler_cancellation: a client that disconnects cancels its handler at once, which
    # closes the upstream request instead of letting it run on for nobody.
    runner = ProxyRunner(
        app,
        handle_signals=False,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=shutdown_timeout,
        keepalive_timeout=idle_timeout_s,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port a site actually listens on (useful with port 0)."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the server is not listening on a TCP port")


EventLoopFactory = Callable[[], asyncio.AbstractEventLoop]


def event_loop_factory(choice: str) -> EventLoopFactory:
    """What makes the event loop `serve` runs on, by the config's `server.event_loop`.

    `auto` takes uvloop where it is installed (a dependency everywhere but Windows) and
    asyncio's own loop otherwise; `uvloop` without uvloop installed is a start-up error.
    """
    if choice == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise RuntimeError(
                "server.event_loop is uvloop, but uvloop is not installed (pip install uvloop)"
            ) from None
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def tune_gc() -> None:
    """Make the garbage collector cheap for a request/response server.

    Freezing what exists after start-up (config, policies, libraries) takes those objects out
    of every collection. Generation 0 keeps CPython's threshold: its pauses grow with it, and
    a threshold of 50,000 paused the server for 20-30 ms every couple of thousand requests
    (p99 at c=1 of 25 ms against 0.5 ms at 700, at the same CPU per request). The older
    generations are collected less often than by default, since young garbage is acyclic and
    reference counting frees it at once.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(700, 20, 100)


@dataclass(frozen=True)
class MetricsListener:
    """Where `/metrics` is served on a listener of its own (`server.metrics_port`)."""

    host: str
    port: int


async def serve(
    runtime: Runtime,
    listener: Listener,
    port: int,
    *,
    config_path: Path,
    metrics: MetricsListener | None = None,
    request_lines: DirectInfoLines | None = None,
    watch: bool = False,
    drain_timeout_s: float = 30.0,
) -> None:
    """Serve until SIGINT or SIGTERM; SIGHUP (and, with `watch`, a file change) reloads.

    Stopping: `/readyz` turns 503, the listener closes, in-flight requests and streams get up
    to `drain_timeout_s` to finish, then the process exits.
    """
    app = build_app(runtime, metrics_route=metrics is None)
    state = app[STATE]
    state.listener = listener
    state.request_lines = request_lines
    settings = runtime.config.server
    runner = await start_site(
        app,
        listener.host,
        port,
        shutdown_timeout=drain_timeout_s,
        idle_timeout_s=settings.client_idle_timeout_s,
    )
    metrics_runner = await start_metrics_site(app, metrics)
    tune_gc()
    loop = asyncio.get_running_loop()
    # The signals are ours before the "listening" line: a supervisor may act on that line.
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_config, state, config_path)
    logger.info(
        "listening",
        host=listener.host,
        port=bound_port(runner),
        metrics_port=bound_port(metrics_runner) if metrics_runner else None,
        event_loop="uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio",
        config=runtime.path,
        routes=sorted(runtime.routes),
        watch=watch,
    )
    warning = unauthenticated_warning(runtime)
    if warning is not None:
        logger.warning(warning)
    watcher = asyncio.create_task(watch_config(state, config_path)) if watch else None
    try:
        await stop.wait()
    finally:
        state.draining = True
        logger.info("draining", in_flight_timeout_s=drain_timeout_s)
        if watcher is not None:
            watcher.cancel()
        await runner.cleanup()
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        logger.info("stopped")


async def start_metrics_site(
    app: web.Application, metrics: MetricsListener | None
) -> web.AppRunner | None:
    """The metrics listener, when there is one (else None)."""
    if metrics is None:
        return None
    return await start_site(build_metrics_app(app[STATE]), metrics.host, metrics.port)
