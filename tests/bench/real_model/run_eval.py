"""`tuned-proxy eval` against a real small model: llama.cpp's server with Qwen2.5-Coder-0.5B.

Not part of CI (it needs `setup.sh` first: about 560 MB of downloads and a several-minute
build). It starts llama-server on a free loopback port with this folder's chat template,
writes a run folder with an eval config whose upstream is that server (`server: llama.cpp`)
and the support agent's policies, then runs `tuned-proxy eval` on the held-out set and stops
the server.

The bias policy cannot reuse support-bias.yaml as is: its token 316 is " to" in OpenAI's
o200k tokenizer and something else in Qwen's. Here the bias goes to the token a call starts
with under this template (the `{"` of `{"name": …}`), asked of the server's /tokenize, and
keeps the temperature (0 for every variant) instead of dropping it. With `--bias-text` a
fifth variant, `ft-bias-text`, biases the same text by `logit_bias.text`, which the proxy
resolves through the same /tokenize; `tuned-proxy check --resolve` shows the id first.

`--api responses` replays the turns through the Responses API (bridged to chat: the
upstream is `kind: compatible`); `--api both` runs chat, then responses, and prints the two
side by side with how many turns got the same calls.

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
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import llama
import yaml

BIAS = 5  # the same nudge as support-bias.yaml's
BIAS_TEXT = '{"'  # what a call starts with under the chat template


def run_watched(command: list[str], server: subprocess.Popen[bytes] | None, log: Path) -> int:
    """Run the eval, stopping it as soon as the server dies: every request left would fail."""
    evaluation = subprocess.Popen(command, cwd=llama.REPO)
    try:
        while evaluation.poll() is None and (server is None or server.poll() is None):
            time.sleep(1)
    finally:
        llama.stop(evaluation)
    # Also when the eval got to its end first: its figures then count the dead server's failures.
    llama.check_alive(server, log, "during the run")
    return evaluation.returncode


def call_token(base: str) -> str:
    """The token a tool call starts with under the chat template."""
    tokens = llama.post(f"{base}/tokenize", {"content": '{"name": "lookup_order"'})["tokens"]
    return str(tokens[0])


def write_run_folder(run: Path, base: str, token: str) -> Path:
    """The eval config and its policies: support-full, -slim, -params as shipped, a bias
    policy for this model's tokenizer, and the same bias written as text."""
    run.mkdir(parents=True, exist_ok=True)
    for name in ("support-full", "support-slim", "support-params"):
        shutil.copy(llama.POLICIES / f"{name}.yaml", run / f"{name}.yaml")
    shutil.copy(llama.POLICIES / "support.tools.json", run / "support.tools.json")
    bias = yaml.safe_load((llama.POLICIES / "support-bias.yaml").read_text())
    bias["logit_bias"]["tokens"] = {token: BIAS}
    # Every variant runs at temperature 0 here; the shipped policy's `sampling: drop` would
    # remove it for this variant alone and measure temperature along with the bias.
    bias["logit_bias"]["sampling"] = "keep"
    (run / "support-bias-qwen.yaml").write_text(yaml.safe_dump(bias, sort_keys=False))
    by_text = {**bias, "logit_bias": {**bias["logit_bias"]}}
    del by_text["logit_bias"]["tokens"]
    by_text["logit_bias"]["text"] = {BIAS_TEXT: BIAS}
    (run / "support-bias-text.yaml").write_text(yaml.safe_dump(by_text, sort_keys=False))
    model = {"upstream": "llama", "model": llama.MODEL_NAME}
    config = {
        "policies_dir": ".",
        "upstreams": {
            "llama": {
                "kind": "compatible",
                "server": "llama.cpp",  # its tokenizer resolves logit_bias.text
                "base_url": f"{base}/v1",
                "timeout_s": 900,
                "idle_timeout_s": 900,
            }
        },
        "routes": {
            "support-agent": {
                "sticky": "header:x-user-id",  # eval pins each variant; check wants a key
                "variants": [
                    {"name": "ft-full", "policy": "support-full", **model},
                    {"name": "ft-slim", "policy": "support-slim", **model},
                    {"name": "ft-params", "policy": "support-params", **model},
                    {"name": "ft-bias", "policy": "support-bias-qwen", **model},
                    {"name": "ft-bias-text", "policy": "support-bias-text", **model},
                ],
            }
        },
    }
    path = run / "eval.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def eval_command(args: argparse.Namespace, config: Path, api: str, out: Path) -> list[str]:
    command = [
        sys.executable, "-m", "proxy.eval.cli", str(llama.HELDOUT),
        "-c", str(config), "--model", "support-agent", "--variants", args.variants,
        "--limit", str(args.limit), "--concurrency", "1", "--timeout", "900",
        "--temperature", "0", "--max-tokens", str(args.max_tokens),
        "--api", api, "--json", str(out),
    ]  # fmt: skip
    return command


RATES = (
    ("tool_call", "makes a tool call %"),
    ("function", "right function(s) %"),
    ("args_json", "arguments parse %"),
    ("args_schema", "arguments fit the schema %"),
    ("args_exact", "arguments exact %"),
    ("no_call", "no call when none is needed %"),
    ("failed", "failed requests %"),
)


def side_by_side(chat: dict[str, Any], responses: dict[str, Any]) -> str:
    """Each variant's rates through chat and through the Responses API, and the turns whose
    answers were the same (the same calls with the same arguments, or both failed)."""
    header = ["", *(f"{v['name']} {api}" for v in chat["variants"] for api in ("chat", "resp"))]
    rows: list[list[object]] = []
    pairs = list(zip(chat["variants"], responses["variants"], strict=True))
    for key, label in RATES:
        row: list[object] = [label]
        for one, other in pairs:
            row += [_rate(one["rates"][key]), _rate(other["rates"][key])]
        rows.append(row)
    for key, label in (("prompt_tokens", "prompt tokens / request"),):
        row = [label]
        for one, other in pairs:
            row += [f"{one[key]['mean']:.0f}", f"{other[key]['mean']:.0f}"]
        rows.append(row)
    same: list[object] = ["same answer in both APIs"]
    answers = {(r["case"], r["variant"]): r for r in responses["results"]}
    for variant in chat["variants"]:
        mine = [r for r in chat["results"] if r["variant"] == variant["name"]]
        agree = sum(1 for r in mine if _same(r, answers.get((r["case"], r["variant"]))))
        same += [f"{agree}/{len(mine)}", ""]
    rows.append(same)
    return llama.table(header, rows)


def _rate(rate: dict[str, Any]) -> str:
    return f"{100 * rate['rate']:.1f} ({rate['count']}/{rate['total']})"


def _same(one: dict[str, Any], other: dict[str, Any] | None) -> bool:
    if other is None:
        return False
    if one["error"] or other["error"]:
        return bool(one["error"]) and bool(other["error"])
    return bool(one["answered"] == other["answered"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=30, help="held-out examples (default: 30)")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--run", type=Path, default=llama.CACHE / "run", help="run folder")
    parser.add_argument(
        "--variants",
        default="ft-full,ft-slim,ft-params,ft-bias",
        help="the variants to compare, the first the baseline (default: the four policies; "
        "ft-bias-text is the bias by text)",
    )
    parser.add_argument(
        "--api", choices=["chat", "responses", "both"], default="chat",
        help="replay through chat completions, the Responses API (bridged), or both",
    )  # fmt: skip
    llama.add_server_arguments(parser)
    args = parser.parse_args()
    llama.exit_on_sigterm()
    args.run.mkdir(parents=True, exist_ok=True)
    log = args.run / "llama-server.log"
    with llama.llama_server(args, args.run) as (base, server):
        try:
            token = call_token(base)
        except OSError:
            llama.check_alive(server, log, "at its first request")
            raise
        config = write_run_folder(args.run, base, token)
        print(f"llama-server on {base}; tool-call token {token}; run folder {args.run}")
        if "ft-bias-text" in args.variants.split(","):
            check = [sys.executable, "-m", "proxy", "check", "-c", str(config), "--resolve"]
            print("$ " + " ".join(check), flush=True)
            subprocess.run(check, cwd=llama.REPO, check=False)
        apis = ["chat", "responses"] if args.api == "both" else [args.api]
        reports = {}
        for api in apis:
            out = args.run / ("report.json" if len(apis) == 1 else f"report-{api}.json")
            command = eval_command(args, config, api, out)
            print("$ " + " ".join(command), flush=True)
            code = run_watched(command, server, log)
            if code != 0:
                return code
            reports[api] = json.loads(out.read_text())
    if len(reports) == 2:
        print("\nThe same turns through chat completions and the Responses API (bridged):")
        print(side_by_side(reports["chat"], reports["responses"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
