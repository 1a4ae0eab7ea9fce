"""Typed keys of the app and the request, and the state they hold (no module globals)."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from proxy.admission import BytesInFlight
from proxy.arguments import ArgumentChecker
from proxy.auth import Listener
from proxy.capture.writer import CaptureWriter
from proxy.config import Runtime, TracingConfig
from proxy.errors import Overloaded
from proxy.logs import DirectInfoLines
from proxy.metrics import Metrics
from proxy.record import RequestRecord
from proxy.request import ToolLists
from proxy.shadow import ShadowSender
from proxy.text_bias import TextBiasResolver
from proxy.upstream import Upstreams

if TYPE_CHECKING:
    from proxy.tracing import Tracing


@dataclass
class ProxyState:
    """What the app serves with. `runtime` is replaced whole on reload, never edited."""

    runtime: Runtime
    upstreams: Upstreams
    shadows: ShadowSender
    metrics: Metrics
    text_bias: TextBiasResolver
    capture: CaptureWriter
    arguments: ArgumentChecker = field(default_factory=ArgumentChecker)
    # Shared across reloads: a list's text means the same under any config.
    tool_lists: ToolLists = field(default_factory=ToolLists)
    bytes_in_flight: BytesInFlight = field(default_factory=BytesInFlight)
    # Where `serve` listens, so that a reload is held to the rules start applied; None when the
    # app is not served by `serve` (tests, eval).
    listener: Listener | None = None
    # Where the request log line skips structlog's pipeline (`logs.LoggingSetup`); None: it
    # goes through structlog (an app not served by `serve`, or a console or quiet log).
    request_lines: DirectInfoLines | None = None
    # The tracing in use (None: off, which the request path checks and nothing more), and
    # the providers reloads replaced, each shut down by its task once its requests are done.
    tracing: Tracing | None = None
    retiring: dict[asyncio.Task[None], Tracing] = field(default_factory=dict)
    draining: bool = False
    in_flight: int = 0
    # Request ids: a random per-process prefix and a counter — unique without a syscall
    # per request (uuid4 reads the OS's random source every time).
    id_prefix: str = field(default_factory=lambda: secrets.token_hex(8))
    id_counter: Iterator[int] = field(default_factory=itertools.count)

    def serve(self, runtime: Runtime) -> None:
        """Serve `runtime` from the next request on, with everything that follows a config:
        its text biases resolved, the capture writer's limits, tracing. At start and on reload
        alike, so that a reload can never skip what start does."""
        self.runtime = runtime
        self.text_bias.start(runtime, self.replace_runtime)
        self.capture.reconfigure(runtime.config.server)
        self.use_tracing(runtime.config.tracing)

    def replace_runtime(self, old: Runtime, new: Runtime) -> bool:
        """Serve `new` in place of `old`, if `old` still serves (a resolution done in the
        background must not undo a reload that came meanwhile)."""
        if self.runtime is not old:
            return False
        self.runtime = new
        return True

    def new_request_id(self) -> str:
        return f"req_{self.id_prefix}{next(self.id_counter):08x}"

    def admit(self) -> None:
        """Count a chat request in flight (the caller counts it out when it ends), or refuse it
        at once: no queue grows behind a cap."""
        if self.draining:
            raise Overloaded(
                "The proxy is shutting down; retry on another replica.", code="draining"
            )
        if self.in_flight >= self.runtime.config.server.max_in_flight:
            raise Overloaded(
                "Too many requests in flight on this proxy; retry shortly.",
                code="too_many_requests_in_flight",
            )
        self.in_flight += 1

    def count_reload(self, result: str) -> None:
        self.metrics.observe_reload(result)

    def use_tracing(self, config: TracingConfig) -> None:
        """Trace as `config` says from the next request on (at start-up and on reload). A
        provider it replaces is shut down in the background once its requests are done."""
        current = self.tracing
        wanted = config if config.enabled else None
        if (current.config if current is not None else None) == wanted:
            return
        # Imported here: the OpenTelemetry SDK is loaded only by a config that traces.
        from proxy.tracing import Tracing, retire

        self.tracing = Tracing(config, self.metrics.count_dropped_spans) if config.enabled else None
        if current is not None:
            task = asyncio.create_task(retire(current))
            self.retiring[task] = current
            task.add_done_callback(self.retiring.pop)

    async def close_tracing(self) -> None:
        """Flush every provider's spans, each within its bounded time (the app's end)."""
        if self.tracing is None and not self.retiring:
            return
        from proxy.tracing import close_tracing

        closing = [*self.retiring.values(), *([self.tracing] if self.tracing else [])]
        for task in list(self.retiring):
            task.cancel()
        self.tracing = None
        await asyncio.gather(*(close_tracing(tracing) for tracing in closing))


STATE: web.AppKey[ProxyState] = web.AppKey("state", ProxyState)
RECORD: web.RequestKey[RequestRecord] = web.RequestKey("record", RequestRecord)
