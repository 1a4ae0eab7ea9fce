"""Logging set-up: structlog, one JSON object per line (or a console format for people)."""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import orjson
import structlog

LogFormat = Literal["json", "console"]


def _orjson_text(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _orjson_bytes(value: Any, **_: Any) -> bytes:
    return orjson.dumps(value, default=str)


def configure_logging(level: str = "info", fmt: LogFormat = "json") -> None:
    """Route structlog and the standard library's loggers (aiohttp's) to stderr in one format."""
    # orjson renders a log line in well under a µs (the standard json takes ~4 µs), and the
    # JSON lines go to stderr as bytes, one write each.
    text_renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(serializer=_orjson_text)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json":
        renderer: structlog.types.Processor = structlog.processors.JSONRenderer(
            serializer=_orjson_bytes
        )
        factory: Any = structlog.BytesLoggerFactory(file=sys.stderr.buffer)
    else:
        renderer, factory = text_renderer, structlog.WriteLoggerFactory(file=sys.stderr)
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                text_renderer,
            ],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))
    # aiohttp's own access log would duplicate our per-request line.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
