"""Logging set-up: structlog, one JSON object per line (or a console format for people)."""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

import orjson
import structlog
from structlog.types import EventDict

LogFormat = Literal["json", "console"]

# JSON lines at info level and below wait in memory, then go out together in one write: at most
# this long after the first of them, or as soon as this many bytes wait (Envoy buffers its
# access log the same way; 64 KiB is what a Linux pipe holds). A line at warning or above goes
# out at once, after those waiting. A process killed by SIGKILL loses what waits.
FLUSH_INTERVAL_S = 0.1
FLUSH_BYTES = 64 * 1024

# A log call may pass its fields as one dict under this key (see `spread_fields`); a leading
# underscore, as structlog's own keys meant for a processor (`_record`, `_from_structlog`).
FIELDS = "_fields"


def _orjson_text(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def spread_fields(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """Make a `_fields` dict the line's own keys, first, as keyword arguments would be.

    structlog copies keyword arguments three times on their way to the processors (over 1 µs
    for the request line's 15 fields); a dict passed as one argument is not copied. The dict
    itself becomes the event dict; bound context and `event` follow its keys.
    """
    fields: EventDict | None = event_dict.pop(FIELDS, None)
    if fields is None:
        return event_dict
    for key, value in event_dict.items():
        fields.setdefault(key, value)
    return fields


def format_exc_info_if_any(logger: Any, name: str, event_dict: EventDict) -> EventDict:
    """structlog's `format_exc_info`, not called for the lines (nearly all) without `exc_info`."""
    if "exc_info" not in event_dict:
        return event_dict
    return structlog.processors.format_exc_info(logger, name, event_dict)


def render_json(_: Any, __: str, event_dict: EventDict) -> bytes:
    """One JSON object; what structlog's `JSONRenderer` with orjson gives, without its layers."""
    return orjson.dumps(event_dict, default=str)


class UtcIsoTimestamp:
    """`TimeStamper(fmt="iso", utc=True)`'s exact text ("2026-01-02T03:04:05.678901Z", no
    fraction when it is 0), with the date and time of day formatted once per second."""

    __slots__ = ("_second",)

    def __init__(self) -> None:
        # One tuple, replaced whole: a thread never sees one second's number with another's text.
        self._second: tuple[int, str] = (-1, "")

    def __call__(self, _: Any, __: str, event_dict: EventDict) -> EventDict:
        # Floored to the microsecond, as `datetime.now()` does.
        seconds, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
        second, text = self._second
        if second != seconds:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            self._second = (seconds, text)
        micro = nanoseconds // 1000
        event_dict["timestamp"] = f"{text}.{micro:06d}Z" if micro else f"{text}Z"
        return event_dict


class BufferedBytesLogger:
    """structlog's `BytesLogger`, buffered: see `FLUSH_INTERVAL_S`.

    The interval's timer runs on the event loop of the thread that logs, armed when the buffer
    stops being empty; a line logged where no loop runs is written at once.
    """

    def __init__(
        self,
        file: BinaryIO,
        interval_s: float = FLUSH_INTERVAL_S,
        max_bytes: int = FLUSH_BYTES,
    ) -> None:
        self._file = file
        self._interval_s = interval_s
        self._max_bytes = max_bytes
        self._pending = bytearray()
        self._timer: asyncio.TimerHandle | None = None
        # Re-entrant: a collection inside the lock can run a finalizer that logs (asyncio's
        # "Task was destroyed"), and the standard library's handler flushes through here.
        self._lock = threading.RLock()

    def msg(self, line: bytes) -> None:
        """A line that may wait."""
        with self._lock:
            was_empty = not self._pending
            self._pending += line
            self._pending += b"\n"
            if len(self._pending) >= self._max_bytes:
                self._write_pending()
            elif was_empty:
                self._arm_timer()

    def urgent(self, line: bytes) -> None:
        """A line that goes out now, after those waiting."""
        with self._lock:
            self._pending += line
            self._pending += b"\n"
            self._write_pending()

    log = debug = info = msg
    warn = warning = err = error = critical = exception = fatal = failure = urgent

    def flush(self) -> None:
        with self._lock:
            self._write_pending()

    def _arm_timer(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop here to run a timer: nothing would write them later
            self._write_pending()
            return
        self._timer = loop.call_later(self._interval_s, self.flush)

    def _write_pending(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            # Taken out before the write: a failing write must not leave them to be written again.
            pending, self._pending = self._pending, bytearray()
            self._file.write(pending)
            self._file.flush()


class DirectInfoLines:
    """Info lines that skip structlog's pipeline, rendered as it renders them: the caller's
    fields in their order, then `event`, `level` and `timestamp`, as one orjson object.

    For the line every request writes: the pipeline's layers (the bound logger, the level
    filter, merging the context variables, five processors) cost about 8 µs a line, this
    about 2. The fields must hold all the line says: bound context variables are not merged.
    Made by `configure_logging` only where JSON lines at info level are written.
    """

    __slots__ = ("_buffered", "_timestamp")

    def __init__(self, buffered: BufferedBytesLogger, timestamp: UtcIsoTimestamp) -> None:
        self._buffered = buffered
        self._timestamp = timestamp

    def info(self, event: str, fields: EventDict) -> None:
        """Write `fields` (which becomes the line: the caller gives it up) as an info line."""
        fields["event"] = event
        fields["level"] = "info"
        self._buffered.msg(orjson.dumps(self._timestamp(None, "info", fields), default=str))


@dataclass(frozen=True)
class LoggingSetup:
    """What `configure_logging` set up: what writes the lines still waiting (it also runs at
    exit), and where the request line may skip structlog's pipeline (None where it may not:
    console format, or a level above info). The app holds the latter (`ProxyState`)."""

    flush: Callable[[], None]
    request_lines: DirectInfoLines | None


class _AfterBufferedLines(logging.StreamHandler):  # type: ignore[type-arg]
    """The standard library's handler, writing its record after the structlog lines that still
    wait, so that the output keeps the order things were logged in."""

    def __init__(self, buffered: BufferedBytesLogger) -> None:
        super().__init__(sys.stderr)
        self._buffered = buffered

    def emit(self, record: logging.LogRecord) -> None:
        self._buffered.flush()
        super().emit(record)


def _formatted(
    handler: logging.StreamHandler,  # type: ignore[type-arg]
    shared: list[structlog.types.Processor],
    renderer: structlog.types.Processor,
) -> logging.Handler:
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
            foreign_pre_chain=shared,
        )
    )
    return handler


def shared_processors(timestamp: UtcIsoTimestamp) -> list[structlog.types.Processor]:
    """What every line gets, structlog's and the standard library's alike."""
    return [structlog.contextvars.merge_contextvars, structlog.processors.add_log_level, timestamp]


def line_processors(
    shared: list[structlog.types.Processor], renderer: structlog.types.Processor
) -> list[structlog.types.Processor]:
    """structlog's whole pipeline (`DirectInfoLines` renders info lines as it does)."""
    return [spread_fields, *shared, format_exc_info_if_any, renderer]


def configure_logging(level: str = "info", fmt: LogFormat = "json") -> LoggingSetup:
    """Route structlog and the standard library's loggers (aiohttp's) to stderr in one format."""
    numeric = logging.getLevelNamesMapping()[level.upper()]
    timestamp = UtcIsoTimestamp()
    shared = shared_processors(timestamp)
    request_lines = None
    if fmt == "json":
        # orjson renders a log line in well under a µs (the standard json takes ~4 µs); the
        # lines go to stderr as bytes, many in one write.
        buffered = BufferedBytesLogger(sys.stderr.buffer)
        atexit.register(buffered.flush)
        renderer: structlog.types.Processor = render_json
        factory: Callable[..., Any] = lambda *_: buffered  # noqa: E731  (one buffer for all)
        handler = _formatted(
            _AfterBufferedLines(buffered),
            shared,
            structlog.processors.JSONRenderer(serializer=_orjson_text),
        )
        flush: Callable[[], None] = buffered.flush
        if numeric <= logging.INFO:
            request_lines = DirectInfoLines(buffered, timestamp)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        factory = structlog.WriteLoggerFactory(file=sys.stderr)
        handler = _formatted(logging.StreamHandler(sys.stderr), shared, renderer)
        flush = sys.stderr.flush
    structlog.configure(
        processors=line_processors(shared, renderer),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))
    # aiohttp's own access log would duplicate our per-request line.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return LoggingSetup(flush, request_lines)
