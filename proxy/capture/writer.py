"""The capture writer: a bounded queue and one task, off the request path.

The record stage hands over a request's capture (`submit`) in O(1); the task works out the
student's tools (the rewrite's memos belong to the event loop's thread), then builds each
example (`proxy.capture.example`) and appends the lines in a worker thread, so neither a large
example nor a slow disk holds the event loop. What cannot wait is dropped, never queued
without bound: past `max_queued` captures or `max_queued_bytes` of memory a new one is dropped
(counted). A disk that refuses a write (full, unwritable) fails that line only (counted, logged
at most once a minute); the next line tries again.

Files are `<UTC time>-<route>-<host>-<n>.jsonl` in the capture's folder (`n` tells apart
those opened in one second, so that name order is time order), created owner-only, and
closed past `max_file_mb` (the next line opens a new one). Each line goes out in one write
and a short write is cut back, so a file holds complete lines only, but for the one being
written when the process died. `close` (SIGTERM) writes what is queued, within a deadline;
`reconfigure` (a reload) closes the files, so the next line follows the new config.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import re
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from proxy.capture.example import StudentTools, Uncapturable, example_line, student_tools
from proxy.capture.pending import PendingCapture, opted_out
from proxy.config import Capture, ServerConfig
from proxy.record import RequestRecord
from proxy.training.rules import Context

logger = structlog.get_logger("tuned_proxy.capture")
Outcome = Callable[[str, str], None]  # (route, outcome)
MAX_BATCH = 256  # captures built and written per pass
LOG_EVERY_S = 60.0
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
# A capture of a request that the pipeline did not answer in full is no example.
_OK = 200


@dataclass
class CaptureFile:
    """One open capture file: complete lines only, closed past its size."""

    path: Path
    fd: int
    size: int = 0

    def append(self, line: bytes) -> None:
        written = os.write(self.fd, line)
        if written != len(line):  # a full disk writes part of it: take the part back
            os.ftruncate(self.fd, self.size)
            raise OSError(errno.ENOSPC, "no space left for a whole line", str(self.path))
        self.size += written

    def close(self) -> None:
        os.close(self.fd)


class CaptureWriter:
    """The proxy's one capture writer (`begin` per request, `submit` at its record stage)."""

    def __init__(
        self,
        count: Outcome,
        max_queued: int = 1024,
        max_queued_bytes: int = 64 * 1024 * 1024,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.count = count
        self.totals: Counter[str] = Counter()  # for the summary when it closes
        self.max_queued = max_queued
        self.max_queued_bytes = max_queued_bytes
        self.rng = rng
        self.queue: deque[PendingCapture] = deque()
        self.queued_bytes = 0
        self.host = _UNSAFE_NAME.sub("-", socket.gethostname())[:64] or "host"
        self.files: dict[tuple[Path, str], CaptureFile] = {}
        self.context = Context()  # the training rules' compiled schemas, shared
        self.task: asyncio.Task[None] | None = None
        self.wakeup = asyncio.Event()
        self.closing = False
        # Set when close runs out of time: the worker thread stops before its next line (it
        # cannot be cancelled), and the files are closed only once it has.
        self.abandoned = False
        self.reopen_files = False
        self.last_logged: dict[str, float] = {}

    # ------------------------------------------------------------------ the request's side

    def begin(
        self,
        spec: Capture,
        headers: Mapping[str, str],
        body: dict[str, Any],
        client_api: str,
        request_bytes: int,
    ) -> PendingCapture | None:
        """The request's capture when it is sampled; an opt-out is counted as skipped."""
        if self.rng() >= spec.sample:
            return None
        if opted_out(headers):
            self.on_outcome(spec.route, "skipped")
            return None
        return PendingCapture(spec, body, client_api, request_bytes)

    def submit(self, record: RequestRecord) -> None:
        """Queue the request's capture for writing (the record stage, once the answer is out)."""
        pending = record.capture
        if pending is None:
            return
        record.capture = None
        route = pending.spec.route
        if pending.outgoing is None or record.status != _OK or record.error is not None:
            self.on_outcome(route, "skipped")  # an error answer, or none
            return
        if record.client_disconnected or pending.too_large:
            self.on_outcome(route, "skipped")
            return
        held = pending.held_bytes
        full = len(self.queue) >= self.max_queued
        if self.closing or full or self.queued_bytes + held > self.max_queued_bytes:
            self.on_outcome(route, "dropped")
            self._log_once("dropped", "capture queue full: captures dropped", route=route)
            return
        self.queue.append(pending)
        self.queued_bytes += held
        self.wakeup.set()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self._run(), name="capture-writer")

    def reconfigure(self, server: ServerConfig) -> None:
        """A reload: its queue limits apply now, and the files are closed before the next
        line, so that its folders and sizes do."""
        self.max_queued, self.max_queued_bytes = server.capture_queue, server.capture_queue_bytes
        self.reopen_files = True

    async def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued (within `timeout_s`; the rest is dropped), close the files."""
        self.closing = True
        self.wakeup.set()
        if self.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.task), timeout_s)
            except TimeoutError:
                self.abandoned = True
                await asyncio.gather(self.task, return_exceptions=True)
        while self.queue:
            self.on_outcome(self.queue.popleft().spec.route, "dropped")
        self.queued_bytes = 0
        self._close_files()
        if self.totals:
            logger.info("capture closed", **{f"{k}_total": n for k, n in self.totals.items()})

    def on_outcome(self, route: str, outcome: str) -> None:
        self.totals[outcome] += 1
        self.count(route, outcome)

    # ------------------------------------------------------------------ the writer's side

    async def _run(self) -> None:
        while not self.abandoned:
            if not self.queue:
                if self.closing:
                    return
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            prepared = self._prepare(self._take_batch())
            if self.reopen_files:
                self.reopen_files = False
                self._close_files()
            for route, outcome in await asyncio.to_thread(self._write, prepared):
                self.on_outcome(route, outcome)

    def _take_batch(self) -> list[PendingCapture]:
        batch: list[PendingCapture] = []
        while self.queue and len(batch) < MAX_BATCH:
            pending = self.queue.popleft()
            self.queued_bytes -= pending.held_bytes
            batch.append(pending)
        return batch

    def _prepare(self, batch: list[PendingCapture]) -> list[tuple[PendingCapture, StudentTools]]:
        """Each capture with its student's tools (on the loop's thread), or its `skipped`."""
        prepared = []
        for pending in batch:
            try:
                prepared.append((pending, student_tools(pending)))
            except Uncapturable as exc:
                self._skipped(pending, exc)
            except Exception as exc:  # a capture must never stop the writer
                self._skipped(pending, unexpected(exc))
        return prepared

    def _skipped(self, pending: PendingCapture, why: Uncapturable) -> None:
        self.on_outcome(pending.spec.route, "skipped")
        self._log_skip(pending.spec.route, why)

    def _log_skip(self, route: str, why: Uncapturable) -> None:
        self._log_once(
            f"skipped:{why.reason}",
            "capture skipped an exchange",
            level="info",
            route=route,
            reason=why.reason,
            detail=why.detail,
        )

    def _write(self, prepared: list[tuple[PendingCapture, StudentTools]]) -> list[tuple[str, str]]:
        """Build each example and append its line to its capture's file (in a worker thread):
        the outcomes, counted back on the loop's thread."""
        outcomes = []
        for index, (pending, student) in enumerate(prepared):
            if self.abandoned:
                outcomes += [(left.spec.route, "dropped") for left, _ in prepared[index:]]
                break
            spec = pending.spec
            try:
                line = example_line(pending, self.context, student)
            except Exception as exc:  # a capture must never stop the writer
                why = exc if isinstance(exc, Uncapturable) else unexpected(exc)
                outcomes.append((spec.route, "skipped"))
                self._log_skip(spec.route, why)
                continue
            try:
                self._file_for(spec, len(line)).append(line)
            except OSError as exc:
                self._close_file((spec.dir, spec.route))
                outcomes.append((spec.route, "failed"))
                self._log_once(
                    "failed",
                    "capture could not write; the request was served",
                    route=spec.route,
                    dir=str(spec.dir),
                    error=f"{type(exc).__name__}: {exc.strerror or exc}",
                )
            else:
                outcomes.append((spec.route, "written"))
        return outcomes

    def _file_for(self, spec: Capture, size: int) -> CaptureFile:
        key = (spec.dir, spec.route)
        current = self.files.get(key)
        if current is not None and current.size and current.size + size > spec.max_file_bytes:
            current.close()
            current = None
        if current is None:
            current = self.files[key] = self._open(spec)
        return current

    def _open(self, spec: Capture) -> CaptureFile:
        spec.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        base = f"{stamp}-{_UNSAFE_NAME.sub('-', spec.route)[:64]}-{self.host}"
        for attempt in range(1000):  # a fixed width, so that name order stays time order
            path = spec.dir / f"{base}-{attempt:03d}.jsonl"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            except FileExistsError:
                continue
            return CaptureFile(path, fd)
        raise OSError(errno.EEXIST, "no free capture file name", str(spec.dir))

    def _close_file(self, key: tuple[Path, str]) -> None:
        current = self.files.pop(key, None)
        if current is None:
            return
        # Closing a file that failed a write can fail the same way: nothing more to do.
        with contextlib.suppress(OSError):
            current.close()

    def _close_files(self) -> None:
        for key in list(self.files):
            self._close_file(key)

    def _log_once(self, key: str, event: str, level: str = "warning", **fields: Any) -> None:
        """Log `event` at most once a minute per `key`: a full disk fails every line."""
        now = time.monotonic()
        if now - self.last_logged.get(key, -LOG_EVERY_S) >= LOG_EVERY_S:
            self.last_logged[key] = now
            getattr(logger, level)(event, **fields)


def unexpected(exc: Exception) -> Uncapturable:
    """An exchange the example builder failed on for a reason it does not name: skipped, its
    error type said (never its text, which may quote the exchange)."""
    return Uncapturable("internal", f"{type(exc).__name__} while building the example")
