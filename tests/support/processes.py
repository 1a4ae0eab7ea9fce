"""The proxy as a real process (`python -m proxy serve`): started on a config file, its JSON
log lines read, its open descriptors counted."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.support.configs import Route, fault_matrix_config
from tests.support.http import CHAT, GOOD, MESSAGES
from tests.support.keys import CLIENT_KEY, key_env
from tests.support.servers import Blackhole, ThreadedUpstream
from tests.support.waiting import eventually

# ----------------------------------------------------------------------------- with a log reader


@dataclass
class LiveProxy:
    """`python -m proxy serve` in a subprocess; a thread collects its JSON log lines."""

    proc: subprocess.Popen[bytes]
    url: str = ""
    lines: list[dict[str, Any]] = field(default_factory=list)
    reader: threading.Thread | None = None

    @classmethod
    def start(cls, config_path: Path, env: dict[str, str]) -> LiveProxy:
        command = [sys.executable, "-m", "proxy", "serve", "-c", str(config_path), "--port", "0"]
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, env=env)
        live = cls(proc)
        live.reader = threading.Thread(target=live._collect, daemon=True)
        live.reader.start()
        listening = live.wait_line(lambda line: line.get("event") == "listening")
        live.url = f"http://127.0.0.1:{listening['port']}"
        return live

    def _collect(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            try:
                self.lines.append(json.loads(raw))
            except json.JSONDecodeError:
                self.lines.append({"event": "not json", "text": raw.decode(errors="replace")})

    def wait_line(self, wanted: Any, timeout_s: float = 20.0) -> dict[str, Any]:
        """The first log line `wanted` accepts (polled, from a sync fixture)."""
        for _ in range(int(timeout_s / 0.01)):
            found = next((line for line in self.lines if wanted(line)), None)
            if found is not None:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        raise AssertionError(f"no such log line; the process said: {self.lines[-5:]}")

    async def request_line(self, request_id: str) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next(
                (
                    line
                    for line in self.lines
                    if line.get("event") == "request" and line.get("request_id") == request_id
                ),
                None,
            )

        await eventually(lambda: find() is not None, f"a log line for {request_id}")
        line = find()
        assert line is not None
        return line

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kilobytes = next(line.split()[1] for line in status.splitlines() if line[:6] == "VmRSS:")
        return int(kilobytes) * 1024

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        if self.reader is not None:
            self.reader.join(10)  # it ends at the pipe's end of file
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@dataclass
class Live:
    proxy: LiveProxy
    upstream: ThreadedUpstream
    resting_fds: int = 0


def process_env() -> dict[str, str]:
    """This process's environment with the test keys in the variables the configs name."""
    return {**os.environ, **key_env()}


@contextmanager
def live_process(folder: Path, more_routes: Mapping[str, Route] | None = None) -> Iterator[Live]:
    """A proxy process on the fault matrix config (with `more_routes`), the fake upstream on a
    thread, and a blackhole."""
    upstream = ThreadedUpstream()
    hole = Blackhole()
    config = fault_matrix_config(upstream.url, hole.port, more_routes)
    path = folder / "tuned-proxy.yaml"
    path.write_text(yaml.safe_dump(config))
    proxy = LiveProxy.start(path, process_env())
    try:
        yield Live(proxy, upstream, resting_fds=resting_fds(proxy, upstream))
    finally:
        proxy.stop()
        hole.close()
        upstream.stop()


def resting_fds(proxy: LiveProxy, upstream: ThreadedUpstream) -> int:
    """The process's descriptors at rest after a first request: the fewest seen over 0.3 s.

    Synchronous (urllib): a module-scoped fixture runs outside every test's event loop.
    """
    request = urllib.request.Request(
        f"{proxy.url}{CHAT}",
        data=json.dumps(GOOD).encode(),
        headers={"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    counts = []
    for _ in range(30):
        counts.append(proxy.fd_count())
        time.sleep(0.01)
    assert upstream.open_connections == 0
    return min(counts)


async def back_at_rest(live: Live) -> None:
    """No connection to the upstream is left, and no descriptor more than at rest."""
    await eventually(
        lambda: live.upstream.open_connections == 0, "no connection to the upstream is left"
    )
    await eventually(
        lambda: live.proxy.fd_count() <= live.resting_fds,
        f"the process is back to {live.resting_fds} open descriptors",
    )


# ----------------------------------------------------------------------------- read in the loop


@dataclass
class Process:
    proc: asyncio.subprocess.Process
    url: str
    lines: list[dict[str, Any]]

    async def answered_model(self, session: aiohttp.ClientSession) -> str:
        async with session.post(
            f"{self.url}{CHAT}", json={"model": "chat", "messages": MESSAGES}
        ) as response:
            assert response.status == 200
            return str((await response.json())["model"])


async def read_until(
    proc: asyncio.subprocess.Process, lines: list[dict[str, Any]], event: str
) -> dict[str, Any]:
    """Read log lines into `lines` up to the first whose event is `event`, and return it."""
    assert proc.stderr is not None
    async with asyncio.timeout(20):
        while True:
            raw = await proc.stderr.readline()
            if not raw:
                raise AssertionError(f"process ended before {event!r}: {lines}")
            line: dict[str, Any] = json.loads(raw)
            lines.append(line)
            if line.get("event") == event:
                return line


@asynccontextmanager
async def serving(config_path: Path, *flags: str) -> AsyncIterator[Process]:
    """`python -m proxy serve` on `config_path` with `flags`, until it says it listens."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "serve",
        "-c",
        str(config_path),
        "--port",
        "0",
        *flags,
        stderr=asyncio.subprocess.PIPE,
    )
    lines: list[dict[str, Any]] = []
    try:
        listening = await read_until(proc, lines, "listening")
        yield Process(proc, f"http://127.0.0.1:{listening['port']}", lines)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
