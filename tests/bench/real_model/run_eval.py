"""`tuned-proxy eval` against a real small model: llama.cpp's server with Qwen2.5-Coder-0.5B.

Not part of CI (it needs `setup.sh` first: about 560 MB of downloads and a several-minute
build). It starts llama-server on a free loopback port with this folder's chat template,
writes a run folder with an eval config whose upstream is that server and the support
agent's four policies, then runs `tuned-proxy eval` on the held-out set and stops the server.

The bias policy cannot reuse support-bias.yaml as is: its token 316 is " to" in OpenAI's
o200k tokenizer and something else in Qwen's. Here the bias goes to the token a call starts
with under this template (the `{"` of `{"name": …}`), asked of the server's /tokenize, and
keeps the temperature (0 for every variant) instead of dropping it.

If the server dies (before it is ready or during the run), the script says so with its exit
status or signal and the path of its log, stops the eval and exits non-zero: a dead server
would otherwise fail every remaining request, one by one.

Usage (from the repository root):
    tests/bench/real_model/setup.sh
    .venv/bin/python tests/bench/real_model/run_eval.py [--limit 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
POLICIES = REPO / "policies"
CACHE = Path(os.environ.get("REAL_MODEL_CACHE", Path.home() / ".cache" / "tuned-proxy-real-model"))
SERVER = CACHE / "llama-server"
MODEL = CACHE / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
MODEL_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m"
BIAS = 5  # the same nudge as support-bias.yaml's


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


def check_alive(server: subprocess.Popen[bytes], log: Path, when: str) -> None:
    """Stop here, saying why, when the server is gone: its log is the only trace of the cause."""
    if server.poll() is None:
        return
    message = f"llama-server died {when}: {exit_status(server.returncode)}; its log: {log}"
    if server.returncode in (-signal.SIGSEGV, -signal.SIGILL):
        # The crash setup.sh's portable build avoids (AMX CPUs), or a binary built elsewhere.
        message += "\n  a native build (REAL_MODEL_NATIVE=1) can do this: rerun setup.sh without it"
    raise SystemExit(message)


def wait_until_ready(
    base: str, server: subprocess.Popen[bytes], log: Path, timeout_s: float = 180
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


def run_watched(command: list[str], server: subprocess.Popen[bytes], log: Path) -> int:
    """Run the eval, stopping it as soon as the server dies: every request left would fail."""
    evaluation = subprocess.Popen(command, cwd=REPO)
    try:
        while evaluation.poll() is None and server.poll() is None:
            time.sleep(1)
    finally:
        stop(evaluation)
    # Also when the eval got to its end first: its figures then count the dead server's failures.
    check_alive(server, log, "during the run")
    return evaluation.returncode


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def call_token(base: str) -> str:
    """The token a tool call starts with under the chat template."""
    tokens = post(f"{base}/tokenize", {"content": '{"name": "lookup_order"'})["tokens"]
    return str(tokens[0])


def write_run_folder(run: Path, port: int, token: str) -> Path:
    """The eval config and its policies: support-full, -slim, -params as shipped, and a bias
    policy for this model's tokenizer."""
    run.mkdir(parents=True, exist_ok=True)
    for name in ("support-full", "support-slim", "support-params"):
        shutil.copy(POLICIES / f"{name}.yaml", run / f"{name}.yaml")
    shutil.copy(POLICIES / "support.tools.json", run / "support.tools.json")
    bias = yaml.safe_load((POLICIES / "support-bias.yaml").read_text())
    bias["logit_bias"]["tokens"] = {token: BIAS}
    # Every variant runs at temperature 0 here; the shipped policy's `sampling: drop` would
    # remove it for this variant alone and measure temperature along with the bias.
    bias["logit_bias"]["sampling"] = "keep"
    (run / "support-bias-qwen.yaml").write_text(yaml.safe_dump(bias, sort_keys=False))
    model = {"upstream": "llama", "model": MODEL_NAME}
    config = {
        "policies_dir": ".",
        "upstreams": {
            "llama": {
                "kind": "compatible",
                "base_url": f"http://127.0.0.1:{port}/v1",
                "timeout_s": 900,
                "idle_timeout_s": 900,
            }
        },
        "routes": {
            "support-agent": {
                "variants": [
                    {"name": "ft-full", "policy": "support-full", **model},
                    {"name": "ft-slim", "policy": "support-slim", **model},
                    {"name": "ft-params", "policy": "support-params", **model},
                    {"name": "ft-bias", "policy": "support-bias-qwen", **model},
                ]
            }
        },
    }
    path = run / "eval.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=30, help="held-out examples (default: 30)")
    parser.add_argument("--threads", type=int, default=1, help="llama-server threads")
    parser.add_argument("--context", type=int, default=8192, help="llama-server context size")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--run", type=Path, default=CACHE / "run", help="run folder")
    parser.add_argument(
        "--server", type=Path, default=SERVER, help=f"llama-server binary (default: {SERVER})"
    )
    args = parser.parse_args()
    missing = [str(path) for path in (args.server, MODEL) if not path.exists()]
    if missing:
        print(f"missing {', '.join(missing)}: run tests/bench/real_model/setup.sh", file=sys.stderr)
        return 1
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args.run.mkdir(parents=True, exist_ok=True)
    log = args.run / "llama-server.log"
    server = start_server(args.server, port, args.threads, args.context, log)
    try:
        wait_until_ready(base, server, log)
        try:
            token = call_token(base)
        except OSError:
            check_alive(server, log, "at its first request")
            raise
        config = write_run_folder(args.run, port, token)
        print(f"llama-server on {base}; tool-call token {token}; run folder {args.run}")
        command = [
            sys.executable, "-m", "proxy.eval.cli", str(POLICIES / "support.heldout.jsonl"),
            "-c", str(config), "--model", "support-agent",
            "--limit", str(args.limit), "--concurrency", "1", "--timeout", "900",
            "--temperature", "0", "--max-tokens", str(args.max_tokens),
            "--json", str(args.run / "report.json"),
        ]  # fmt: skip
        print("$ " + " ".join(command), flush=True)
        return run_watched(command, server, log)
    finally:
        stop(server)


if __name__ == "__main__":
    sys.exit(main())
