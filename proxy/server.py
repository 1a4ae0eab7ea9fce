"""Running the proxy as a server: bind, serve, stop cleanly."""

from __future__ import annotations

import asyncio
import ipaddress
import signal
from pathlib import Path

import structlog
from aiohttp import web

from proxy.app import build_app
from proxy.config import Runtime
from proxy.reload import reload_config, watch_config
from proxy.state import STATE

logger = structlog.get_logger("tuned_proxy.server")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refuse_open_bind(runtime: Runtime, host: str, allow_unauthenticated: bool) -> str | None:
    """Why the proxy must not listen on `host`, or None if it may.

    Without client keys the proxy would relay anyone's traffic with the upstream's credential,
    so it only binds a loopback address unless the operator says otherwise.
    """
    if runtime.client_keys or allow_unauthenticated or is_loopback(host):
        return None
    env = runtime.config.client_keys_env
    hint = f"environment variable {env} is empty" if env else "the config sets no client_keys_env"
    return (
        f"refusing to listen on {host} without client keys ({hint}); set keys, bind a "
        "loopback address, or pass --allow-unauthenticated"
    )


async def start_site(
    app: web.Application, host: str, port: int, shutdown_timeout: float = 30.0
) -> web.AppRunner:
    # handler_cancellation: a client that disconnects cancels its handler at once, which
    # closes the upstream request instead of letting it run on for nobody.
    runner = web.AppRunner(
        app,
        handle_signals=False,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=shutdown_timeout,
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


async def serve(
    runtime: Runtime,
    host: str,
    port: int,
    *,
    config_path: Path,
    watch: bool = False,
    drain_timeout_s: float = 30.0,
) -> None:
    """Serve until SIGINT or SIGTERM; SIGHUP (and, with `watch`, a file change) reloads.

    Stopping: `/readyz` turns 503, the listener closes, in-flight requests and streams get up
    to `drain_timeout_s` to finish, then the process exits.
    """
    app = build_app(runtime)
    state = app[STATE]
    runner = await start_site(app, host, port, shutdown_timeout=drain_timeout_s)
    logger.info(
        "listening",
        host=host,
        port=bound_port(runner),
        config=runtime.path,
        routes=sorted(runtime.routes),
        watch=watch,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_config, state, config_path)
    watcher = asyncio.create_task(watch_config(state, config_path)) if watch else None
    try:
        await stop.wait()
    finally:
        state.draining = True
        logger.info("draining", in_flight_timeout_s=drain_timeout_s)
        if watcher is not None:
            watcher.cancel()
        await runner.cleanup()
        logger.info("stopped")
