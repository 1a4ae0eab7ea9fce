"""What the real-model scripts share: llama-server started and watched, `tuned-proxy serve`
started on a config, the held-out user turns, and plain-text tables.

`run_eval.py`, `run_responses.py` and `run_levers.py` import it (they run as scripts, so this
folder is on `sys.path`). Every process started here is stopped by the caller's `finally`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
POLICIES = REPO / "policies"
HELDOUT = POLICIES / "support.heldout.jsonl"
CACHE = Path(os.environ.get("REAL_MODEL_CACHE", Path.home() / ".cache" / "tuned-proxy-real-model"))
SERVER = CACHE / "llama-server"
MODEL = CACHE / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
MODEL_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    binary: Path, port: int, threads: int, context: int, log: Path
) -> subprocess.Popen[bytes]:
    command = [
        str(binary),
        "-m", str(MODEL),
        "--host", "127.0.0.1", "--port", str(port),
        "-t", str(threads), "-c", str(context), "-np", "1",
        "--no-webui", "--offline", "--jinja",
        "--chat-template-file", str(HERE / "chat_template.jinja"),
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def post(url: str, body: dict[str, Any], timeout: float = 120) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def exit_status(returncode: int) -> str:
    """Popen's returncode in words: negative means killed by that signal."""
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = "unknown signal"
    return f"killed by signal {-returncode} ({name}, returncode {returncode})"


def check_alive(server: subprocess.Popen[bytes] | None, log: Path, when: str) -> None:
    """Stop here, saying why, when the server is gone: its log is the only trace of the cause."""
    if server is None or server.poll() is None:
        return
    message = f"llama-server died {when}: {exit_status(server.returncode)}; its log: {log}"
    if server.returncode in (-signal.SIGSEGV, -signal.SIGILL):
        # The crash setup.sh's portable build avoids (AMX CPUs), or a binary built elsewhere.
        message += "\n  a native build (REAL_MODEL_NATIVE=1) can do this: rerun setup.sh without it"
    raise SystemExit(message)


def wait_until_ready(
    base: str, server: subprocess.Popen[bytes] | None, log: Path, timeout_s: float = 180
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        check_alive(server, log, "before it was ready")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"llama-server did not become ready in {timeout_s:.0f} s; its log: {log}")


def stop(process: subprocess.Popen[Any] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def add_server_arguments(parser: Any) -> None:
    """The options every script takes to start (or reuse) llama-server."""
    parser.add_argument("--threads", type=int, default=1, help="llama-server threads (default 1)")
    parser.add_argument("--context", type=int, default=8192, help="llama-server context size")
    parser.add_argument(
        "--server", type=Path, default=SERVER, help=f"llama-server binary (default: {SERVER})"
    )
    parser.add_argument(
        "--llama-url",
        metavar="URL",
        help="use a llama-server already running there (e.g. http://127.0.0.1:8088) instead "
        "of starting one; it must run this folder's chat template",
    )


def exit_on_sigterm() -> None:
    """SIGTERM ends the script through its `finally` blocks, so the servers it started stop
    too (a script started in the background by a shell ignores SIGINT)."""
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))


@contextmanager
def llama_server(args: Any, run: Path) -> Iterator[tuple[str, subprocess.Popen[bytes] | None]]:
    """llama-server's base URL (no `/v1`) and its process (None when `--llama-url` was given),
    ready to answer; stopped on the way out."""
    log = run / "llama-server.log"
    if args.llama_url:
        base = args.llama_url.rstrip("/")
        wait_until_ready(base, None, log, timeout_s=10)
        yield base, None
        return
    missing = [str(path) for path in (args.server, MODEL) if not path.exists()]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: run tests/bench/real_model/setup.sh")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(args.server, port, args.threads, args.context, log)
    try:
        wait_until_ready(base, server, log)
        yield base, server
    finally:
        stop(server)


@contextmanager
def proxy_serve(config: Path, run: Path) -> Iterator[str]:
    """`tuned-proxy serve -c CONFIG` on a free loopback port, as an operator runs it; its base
    URL once `/readyz` answers. Its JSON request log goes to RUN/proxy.log."""
    port = free_port()
    log = run / "proxy.log"
    command = [sys.executable, "-m", "proxy", "serve", "-c", str(config), "--port", str(port)]
    process = subprocess.Popen(command, cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                ended = exit_status(process.returncode)
                raise SystemExit(f"tuned-proxy serve ended: {ended}; its log: {log}")
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    message = f"tuned-proxy serve did not get ready; its log: {log}"
                    raise SystemExit(message) from None
            time.sleep(0.3)
        yield base
    finally:
        stop(process)


def sdk_client(proxy: str) -> Any:
    """An `openai` client for the proxy: no retries (a failure is a result), long timeout."""
    import openai

    return openai.OpenAI(base_url=f"{proxy}/v1", api_key="unused", max_retries=0, timeout=900)


def metric_values(base: str, name: str) -> dict[str, float]:
    """The samples of one metric on the proxy's /metrics, by their label text."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line[len(name) :].rpartition(" ")
            values[labels] = float(value)
    return values


def user_tool_turns(limit: int) -> list[Any]:
    """The first `limit` held-out turns where the user spoke last and the example's answer
    calls a tool: the turns where an application would name the function to call."""
    from proxy.eval.cases import read_cases

    cases = read_cases(HELDOUT).cases
    turns = [
        case
        for case in cases
        if case.kind == "tool_call" and case.request["messages"][-1].get("role") == "user"
    ]
    return turns[:limit]


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table, first column left-aligned, the others right-aligned."""
    cells = [[str(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: list[str]) -> str:
        first = row[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))])

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def percent(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.0f} %)" if whole else "0/0"
