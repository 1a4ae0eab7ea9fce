"""The log output: structlog's lines as before, buffered into few writes, in the order logged."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import logging
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import structlog
import yaml

from proxy.logs import (
    BufferedBytesLogger,
    DirectInfoLines,
    UtcIsoTimestamp,
    line_processors,
    render_json,
    shared_processors,
    spread_fields,
)
from proxy.logs import _AfterBufferedLines as AfterBufferedLines
from tests.support.configs import mock_config
from tests.support.processes import serving
from tests.support.waiting import eventually


class CountedWrites(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes | bytearray) -> int:  # type: ignore[override]
        self.writes += 1
        return super().write(data)


def test_a_line_logged_where_no_event_loop_runs_is_written_at_once() -> None:
    out = CountedWrites()
    BufferedBytesLogger(out).info(b'{"event":"x"}')
    assert out.getvalue() == b'{"event":"x"}\n'


async def test_info_lines_wait_then_go_out_together_in_one_write() -> None:
    out = CountedWrites()
    logger = BufferedBytesLogger(out, interval_s=0.01)
    for number in (b"1", b"2", b"3"):
        logger.info(number)
    assert out.getvalue() == b""
    await eventually(lambda: out.getvalue() == b"1\n2\n3\n", "the waiting lines written")
    assert out.writes == 1


async def test_lines_go_out_as_soon_as_the_buffer_is_full() -> None:
    out = CountedWrites()
    logger = BufferedBytesLogger(out, interval_s=3600, max_bytes=10)
    logger.info(b"1234")
    logger.info(b"5678")
    assert (out.getvalue(), out.writes) == (b"1234\n5678\n", 1)
    logger.info(b"9")
    logger.flush()
    assert (out.getvalue(), out.writes) == (b"1234\n5678\n9\n", 2)


async def test_a_warning_goes_out_at_once_after_the_lines_waiting() -> None:
    out = CountedWrites()
    logger = BufferedBytesLogger(out, interval_s=3600)
    logger.info(b"first")
    logger.warning(b"second")
    logger.error(b"third")
    assert (out.getvalue(), out.writes) == (b"first\nsecond\nthird\n", 2)


async def test_a_standard_library_record_follows_the_lines_waiting() -> None:
    out = CountedWrites()
    logger = BufferedBytesLogger(out, interval_s=3600)
    handler = AfterBufferedLines(logger)
    text = io.StringIO()
    handler.setStream(text)
    logger.info(b"structlog")
    handler.emit(logging.makeLogRecord({"msg": "stdlib", "levelno": logging.WARNING}))
    assert (out.getvalue(), text.getvalue()) == (b"structlog\n", "stdlib\n")


@pytest.mark.parametrize(
    "nanoseconds",
    [1_795_000_000_123_456_789, 1_795_000_000_000_000_999, 1_795_000_001_000_001_000, 0],
)
def test_the_timestamp_is_timestampers_text(
    nanoseconds: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    stamp = UtcIsoTimestamp()
    stamp(None, "info", {})  # another second first: the cached one must be replaced
    monkeypatch.setattr(time, "time_ns", lambda: nanoseconds)
    # What structlog's TimeStamper(fmt="iso", utc=True) makes of the same instant.
    instant = datetime.datetime.fromtimestamp(nanoseconds // 10**9, tz=datetime.UTC)
    instant = instant.replace(microsecond=nanoseconds // 1000 % 10**6)
    assert stamp(None, "info", {})["timestamp"] == instant.isoformat().replace("+00:00", "Z")


def test_fields_passed_as_one_dict_make_the_same_line_as_keywords() -> None:
    spread = structlog.wrap_logger(
        structlog.ReturnLogger(), processors=[spread_fields, render_json]
    ).bind()
    keywords = structlog.wrap_logger(structlog.ReturnLogger(), processors=[render_json]).bind()
    fields = {"request_id": "r1", "status": 200, "tokens": {"prompt_tokens": 3}}
    assert spread.info("request", _fields=dict(fields)) == keywords.info("request", **fields)
    bound = json.loads(spread.bind(route="x", status=0).info("request", _fields=dict(fields)))
    assert bound == {**fields, "route": "x", "event": "request"}


@pytest.mark.slow
async def test_the_lines_waiting_are_written_when_the_proxy_stops(tmp_path: Path) -> None:
    path = tmp_path / "tuned-proxy.yaml"
    path.write_text(yaml.safe_dump(mock_config("model-one")))
    async with serving(path) as server, aiohttp.ClientSession() as session:
        for _ in range(5):
            await server.answered_model(session)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.stderr is not None
        async with asyncio.timeout(20):
            rest = await server.proc.stderr.read()
            assert await server.proc.wait() == 0
    lines = server.lines + [json.loads(raw) for raw in rest.splitlines()]
    assert [line["event"] for line in lines].count("request") == 5
    assert lines[-1]["event"] == "stopped"


def test_a_direct_info_line_is_the_line_the_pipeline_writes() -> None:
    timestamp = UtcIsoTimestamp()
    pipeline = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=line_processors(shared_processors(timestamp), render_json),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    fields = {"request_id": "r-1", "status": 200, "tokens": {"prompt_tokens": 3}, "odd": Path("p")}
    out = io.BytesIO()
    DirectInfoLines(BufferedBytesLogger(out), timestamp).info("request", dict(fields))
    direct = json.loads(out.getvalue())
    through_pipeline = json.loads(pipeline.info("request", _fields=dict(fields)))
    assert list(direct) == list(through_pipeline) == [*fields, "event", "level", "timestamp"]
    assert {**direct, "timestamp": "-"} == {**through_pipeline, "timestamp": "-"}
    assert (direct["event"], direct["level"], direct["odd"]) == ("request", "info", "p")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", direct["timestamp"])


def request_line_written(level: str, fmt: str) -> str:
    """What a process configured with this level and format writes for one request's line."""
    script = (
        "from proxy.logs import configure_logging; "
        "from proxy.record import RequestRecord, log_request; "
        f"setup = configure_logging({level!r}, {fmt!r}); "
        "log_request(RequestRecord(request_id='req-direct', path='/v1/chat/completions'), "
        "setup.request_lines)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stderr


def test_the_request_line_follows_the_configured_level_and_format() -> None:
    line = json.loads(request_line_written("info", "json"))
    assert (line["event"], line["level"], line["request_id"]) == ("request", "info", "req-direct")
    assert request_line_written("warning", "json") == ""
    console = request_line_written("debug", "console")
    assert "request_id=req-direct" in console
    assert not console.lstrip().startswith("{")
