"""The distillation loop once on a real small model: capture, merge, check, eval, agreement.

Not part of CI (it needs `setup.sh` first). Every step is the real command in a process of its
own, against llama.cpp's server with Qwen2.5-Coder-0.5B as the "teacher":

1. capture: `tuned-proxy serve` with a route whose variant `teacher` (support-full) is the
   llama-server and whose `capture` writes the student's examples (support-slim's tools, an
   email pattern redacted). The held-out turns go through it with the `openai` SDK, the tools
   as the application sends them, every other one streamed, at temperature 0. The capture
   counts are read from `/metrics` once the writer has settled; then SIGTERM flushes the files;
2. `tuned-proxy training merge` with a held-out split, `training check` on the training part,
   `policy init` of a student policy from it and `tuned-proxy check` of a config serving it;
3. `tuned-proxy eval` of the split through two policies (support-full: the teacher as it was
   captured; support-slim: the student's definitions) on the same server;
4. a shadow run: the route served by support-full with a comparing shadow (support-slim on
   the same server) over the same turns; `tuned_proxy_shadow_agreement_total` from `/metrics`.

The run folder (default `~/.cache/tuned-proxy-real-model/run-distill`) gets the configs, the
policies, the captured files, the merged files, each command's output, the proxies' and the
server's logs and `report.json`; what a previous run left there is removed first.

Usage (from the repository root):
    tests/bench/real_model/setup.sh
    .venv/bin/python tests/bench/real_model/run_distill.py [--limit 24] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonschema
import openai
import yaml
from llama import (
    CACHE,
    HELDOUT,
    MODEL_NAME,
    POLICIES,
    REPO,
    add_server_arguments,
    check_alive,
    exit_on_sigterm,
    exit_status,
    free_port,
    llama_server,
    stop,
)
from prometheus_client.parser import text_string_to_metric_families

from proxy.eval.cases import EvalCase, read_cases
from proxy.training.rules import MIN_EXAMPLES

ROUTE = "support-agent"
SHIPPED = ("support-full", "support-slim", "support-params")
EMAIL = r"[\w.+-]+@[\w-]+\.[\w.]+"
REDACTED = "[REDACTED]"
CAPTURE_OUTCOMES = ("written", "skipped", "dropped", "failed")
AGREEMENT_OUTCOMES = ("same_calls", "same_functions", "different", "no_calls", "error")
COUNTERS = {
    "tuned_proxy_capture_examples_total": "capture",
    "tuned_proxy_shadow_agreement_total": "agreement",
    "tuned_proxy_shadow_requests_total": "shadow",
}
PROXY_READY_S = 30
SETTLE_S = 900  # the last shadow copy may wait behind a served request on a one-slot server


def tuned_proxy() -> list[str]:
    """The `tuned-proxy` command of this interpreter's environment."""
    script = Path(sys.executable).parent / "tuned-proxy"
    return [str(script)] if script.exists() else [sys.executable, "-m", "proxy"]


# ----------------------------------------------------------------------------- the run folder


def prepare_run_folder(run: Path) -> None:
    """A clean run folder with the shipped policies copied into RUN/policies."""
    run.mkdir(parents=True, exist_ok=True)
    for stale in ("captured", "policies"):
        shutil.rmtree(run / stale, ignore_errors=True)
    for stale_file in [*run.glob("*.jsonl"), *run.glob("*.out"), run / "eval-report.json"]:
        stale_file.unlink(missing_ok=True)
    policies = run / "policies"
    policies.mkdir()
    for name in SHIPPED:
        shutil.copy(POLICIES / f"{name}.yaml", policies / f"{name}.yaml")
    shutil.copy(POLICIES / "support.tools.json", policies / "support.tools.json")


def target(name: str, policy: str) -> dict[str, Any]:
    return {"name": name, "upstream": "llama", "model": MODEL_NAME, "policy": policy}


def write_config(run: Path, name: str, llama_base: str, route: dict[str, Any]) -> Path:
    upstream = {
        "kind": "compatible",
        "server": "llama.cpp",
        "base_url": f"{llama_base}/v1",
        "timeout_s": 900,
        "idle_timeout_s": 900,
    }
    config = {
        "policies_dir": "policies",
        "upstreams": {"llama": upstream},
        "routes": {ROUTE: route},
    }
    path = run / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def capture_route(run: Path, student: str) -> dict[str, Any]:
    capture = {"dir": str(run / "captured"), "policy": student, "sample": 1.0, "redact": [EMAIL]}
    return {"variants": [target("teacher", "support-full")], "capture": capture}


def shadow_route(served: str, shadow: str) -> dict[str, Any]:
    shadow_target = {**target("shadow", shadow), "sample": 1.0, "compare": "tool_calls"}
    return {"variants": [target("served", served)], "shadow": shadow_target}


def variants_route(variants: dict[str, str]) -> dict[str, Any]:
    return {"variants": [target(name, policy) for name, policy in variants.items()]}


# ----------------------------------------------------------------------------- processes


class Commands:
    """Runs the loop's commands in turn, printing each and its output, keeping both."""

    def __init__(self, run: Path) -> None:
        self.run = run
        self.log: list[dict[str, Any]] = []

    def __call__(self, name: str, *args: str) -> tuple[int, str]:
        print("\n$ " + " ".join(["tuned-proxy", *args]), flush=True)
        started = time.monotonic()
        done = subprocess.run(
            [*tuned_proxy(), *args], cwd=REPO, capture_output=True, text=True, check=False
        )
        output = done.stdout + done.stderr
        print(output.rstrip(), flush=True)
        (self.run / f"{name}.out").write_text(output)
        self.log.append(
            {"step": name, "command": ["tuned-proxy", *args], "exit": done.returncode,
             "seconds": round(time.monotonic() - started, 1)}
        )  # fmt: skip
        return done.returncode, output


@contextmanager
def serving(config: Path, log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`tuned-proxy serve` as a process of its own on a free port (stopped if still running)."""
    port = free_port()
    command = [*tuned_proxy(), "serve", "-c", str(config), "--port", str(port)]
    command += ["--log-level", "info", "--log-format", "json"]
    proxy = subprocess.Popen(command, cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + PROXY_READY_S
        while not ready(base):
            if proxy.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"tuned-proxy did not start ({proxy.poll()}); its log: {log}")
            time.sleep(0.2)
        yield base, proxy
    finally:
        stop(proxy)


def ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def sigterm(proxy: subprocess.Popen[bytes]) -> int:
    """Stop the proxy as an orchestrator does (the capture writes what is queued): its exit."""
    proxy.send_signal(signal.SIGTERM)
    return proxy.wait(120)


def scrape(base: str) -> dict[str, Counter[str]]:
    """The route's capture, agreement and shadow counters in `/metrics`, by outcome."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        text = response.read().decode()
    counts: dict[str, Counter[str]] = {kind: Counter() for kind in COUNTERS.values()}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            kind = COUNTERS.get(sample.name)
            if kind is not None and sample.labels.get("route") == ROUTE:
                counts[kind][sample.labels["outcome"]] += int(sample.value)
    return counts


def settle(
    base: str, kind: str, expected: int, proxy: subprocess.Popen[bytes]
) -> dict[str, Counter[str]]:
    """The counters once `expected` outcomes of `kind` are in: the capture writer and the
    shadow copies finish after the client's answer."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        counts = scrape(base)
        if sum(counts[kind].values()) >= expected or time.monotonic() > deadline:
            return counts
        if proxy.poll() is not None:
            raise SystemExit(f"tuned-proxy exited: {exit_status(proxy.returncode)}")
        time.sleep(0.5)


# ----------------------------------------------------------------------------- the turns


def held_out_turns(limit: int) -> list[EvalCase]:
    """The first `limit` turns of the held-out file: each a conversation up to an assistant
    turn, with the tools as the application sends them (eval's reading of the file)."""
    return read_cases(HELDOUT).cases[:limit]


def send_turns(
    base: str, turns: list[EvalCase], max_tokens: int, server: subprocess.Popen[bytes], log: Path
) -> list[dict[str, Any]]:
    """Each turn through the proxy with the `openai` SDK, one at a time, every other one
    streamed: what the client got."""
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=900)
    answers = []
    try:
        for index, case in enumerate(turns):
            check_alive(server, log, "during the run")
            streamed = index % 2 == 1
            started = time.monotonic()
            answer = ask(client, case, streamed, max_tokens)
            answer.update(
                turn=case.id,
                streamed=streamed,
                seconds=round(time.monotonic() - started, 1),
                expected=[call.name for call in case.expected],
            )
            answers.append(answer)
            print(
                f"  {index + 1:>3}/{len(turns)} {case.id:<9} {'stream' if streamed else 'json  '} "
                f"{answer['seconds']:>6.1f} s  {describe(answer)}",
                flush=True,
            )
    finally:
        client.close()
    return answers


def ask(client: openai.OpenAI, case: EvalCase, streamed: bool, max_tokens: int) -> dict[str, Any]:
    request = {"model": ROUTE, "temperature": 0, "max_tokens": max_tokens, **case.request}
    try:
        if streamed:
            return streamed_answer(client.chat.completions.create(stream=True, **request))
        completion = client.chat.completions.create(**request)
    except openai.APIStatusError as exc:
        return {"error": f"HTTP {exc.status_code}: {exc.message}"}
    except openai.APIError as exc:  # a stream's error event
        return {"error": f"stream error event: {exc.message}"}
    choice = completion.choices[0]
    calls = [(c.function.name, c.function.arguments) for c in choice.message.tool_calls or ()]
    return {"calls": calls, "text": choice.message.content or "", "finish": choice.finish_reason}


def streamed_answer(stream: openai.Stream[Any]) -> dict[str, Any]:
    text: list[str] = []
    calls: dict[int, tuple[str, str]] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            text.append(choice.delta.content or "")
            for call in choice.delta.tool_calls or ():
                name, arguments = calls.get(call.index, ("", ""))
                if call.function is not None:
                    name = name or call.function.name or ""
                    arguments += call.function.arguments or ""
                calls[call.index] = (name, arguments)
    return {"calls": [calls[i] for i in sorted(calls)], "text": "".join(text), "finish": finish}


def describe(answer: dict[str, Any]) -> str:
    if "error" in answer:
        return str(answer["error"])[:120]
    if answer["calls"]:
        return "calls " + ", ".join(name for name, _ in answer["calls"])
    return f"text ({answer['finish']}): {answer['text'][:60]!r}"


# ----------------------------------------------------------------------------- logs and files


def log_events(log: Path, event: str) -> list[dict[str, Any]]:
    """The proxy's JSON log lines whose event is `event`."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == event:
            found.append(entry)
    return found


def disconnected_but_answered(log: Path) -> int:
    """Requests logged `client_disconnected` although their answer had no error: the client
    went away before the answer's end (a client that closes once it has read `[DONE]`, as the
    sync SDK does, is no disconnection)."""
    return sum(
        1
        for entry in log_events(log, "request")
        if entry.get("client_disconnected") and not entry.get("error")
    )


def jsonl_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def captured_examples(run: Path) -> list[dict[str, Any]]:
    return [e for path in sorted((run / "captured").glob("*.jsonl")) for e in jsonl_lines(path)]


def merge_figures(output: str) -> dict[str, int]:
    patterns = {
        "files read": r"read (\d+) files?",
        "examples read": r": (\d+) examples",
        "duplicates dropped": r"duplicates dropped: (\d+)",
        "truncated last lines skipped": r"truncated last lines skipped: (\d+)",
        "training examples written": r"wrote .* \((\d+) examples\)",
        "held-out examples written": r"held out .* \((\d+) examples\)",
    }
    figures = {}
    for key, pattern in patterns.items():
        found = re.search(pattern, output)
        if found:
            figures[key] = int(found.group(1))
    return figures


def check_figures(output: str) -> dict[str, str]:
    """The summary of `training check` (the lines after the findings), as key: value."""
    figures = {}
    for line in output.splitlines():
        found = re.match(r"\s*(\d+) errors?, (\d+) warnings?", line)
        if found:
            figures["errors"], figures["warnings"] = found.group(1), found.group(2)
        elif line.startswith("  ") and ":" in line:
            key, _, value = line.strip().partition(":")
            figures[key] = value.strip()
        elif line.endswith("chat examples"):
            figures["examples"] = line.rsplit(": ", 1)[-1]
    return figures


# ----------------------------------------------------------------------------- what was not written


def final_answer(answer: dict[str, Any]) -> tuple[Any, ...]:
    """A client's answer as the capture writes its last message: redacted, calls or text."""
    email = re.compile(EMAIL)
    if answer["calls"]:
        return tuple((name, email.sub(REDACTED, arguments)) for name, arguments in answer["calls"])
    return ("text", email.sub(REDACTED, answer["text"]))


def captured_answer(example: dict[str, Any]) -> tuple[Any, ...]:
    message = example["messages"][-1]
    calls = message.get("tool_calls") or ()
    if calls:
        return tuple((c["function"]["name"], c["function"]["arguments"]) for c in calls)
    return ("text", message.get("content", ""))


def not_written(answers: list[dict[str, Any]], run: Path) -> list[tuple[str, str, str]]:
    """The turns the client got an answer for that no captured line holds, with what the full
    training schema says of their calls' arguments (the reason the check would give)."""
    written = Counter(captured_answer(example) for example in captured_examples(run))
    schemas = {
        tool["function"]["name"]: tool["function"].get("parameters", {})
        for tool in json.loads((POLICIES / "support.tools.json").read_text())
    }
    missing = []
    for answer in answers:
        if "error" in answer:
            continue
        key = final_answer(answer)
        if written[key]:
            written[key] -= 1
            continue
        for name, arguments in answer["calls"] or [("(text)", "")]:
            missing.append((answer["turn"], name, schema_verdict(schemas.get(name), arguments)))
    return missing


def schema_verdict(schema: dict[str, Any] | None, arguments: str) -> str:
    if schema is None:
        return "not a function of the training tools"
    try:
        jsonschema.validate(json.loads(arguments), schema)
    except ValueError:
        return "arguments are not JSON"
    except jsonschema.ValidationError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "(top)"
        return f"{where}: {exc.message}"[:110]
    return "fits the schema"


# ----------------------------------------------------------------------------- the steps


def capture_step(
    args: argparse.Namespace, run: Path, llama_base: str, turns: list[EvalCase], server: Any
) -> dict[str, Any]:
    config = write_config(run, "capture", llama_base, capture_route(run, args.student_policy))
    log = run / "proxy-capture.log"
    print(f"\n== capture: {len(turns)} turns through the teacher (support-full) ==", flush=True)
    started = time.monotonic()
    with serving(config, log) as (base, proxy):
        answers = send_turns(base, turns, args.max_tokens, server, args.log)
        sent_s = time.monotonic() - started
        counts = settle(base, "capture", len(turns), proxy)["capture"]
        status = sigterm(proxy)
    closed = log_events(log, "capture closed")
    examples = captured_examples(run)
    return {
        "answers": answers,
        "metrics": dict(counts),
        "closed_log": closed[-1] if closed else None,
        "skip_log": [
            {"reason": entry.get("reason"), "detail": entry.get("detail")}
            for entry in log_events(log, "capture skipped an exchange")
        ],
        "not_written": not_written(answers, run),
        "proxy_exit": status,
        "seconds": round(sent_s, 1),
        "files": len(list((run / "captured").glob("*.jsonl"))),
        "lines": len(examples),
        "redacted_strings": sum(json.dumps(e).count(REDACTED) for e in examples),
        "disconnected_but_answered": disconnected_but_answered(log),
    }


def training_steps(
    args: argparse.Namespace, run: Path, llama_base: str, cmd: Commands
) -> dict[str, Any]:
    distilled, heldout = run / "distilled.jsonl", run / "distilled.heldout.jsonl"
    merge_exit, merge_output = cmd(
        "merge", "training", "merge", str(run / "captured"), "-o", str(distilled),
        "--holdout", str(args.holdout), "--holdout-out", str(heldout),
    )  # fmt: skip
    check_exit, check_output = cmd("check", "training", "check", str(distilled))
    init_exit, _ = cmd(
        "policy-init", "policy", "init", str(distilled), "--name", "student", "--mode", "slim",
        "-o", str(run / "policies"),
    )  # fmt: skip
    config = write_config(run, "student", llama_base, variants_route({"student": "student"}))
    student_exit, student_output = cmd("student-check", "check", "-c", str(config))
    return {
        "merge": {"exit": merge_exit, **merge_figures(merge_output)},
        "check": {"exit": check_exit, **check_figures(check_output)},
        "policy_init_exit": init_exit,
        "student_check": {
            "exit": student_exit,
            "levers": re.findall(r"levers: (.*)", student_output),
            "warnings": re.findall(r"^warning: (.*)", student_output, re.MULTILINE),
        },
    }


def eval_step(
    args: argparse.Namespace, run: Path, llama_base: str, cmd: Commands, server: Any
) -> dict[str, Any]:
    variants = {"full": "support-full", "slim": args.student_policy}
    config = write_config(run, "eval", llama_base, variants_route(variants))
    heldout = run / "distilled.heldout.jsonl"
    report = run / "eval-report.json"
    print(f"\n== eval of the held-out split through {', '.join(variants)} ==", flush=True)
    code, output = cmd(
        "eval", "eval", str(heldout), "-c", str(config), "--model", ROUTE,
        "--variants", ",".join(variants), "--concurrency", "1", "--timeout", "900",
        "--temperature", "0", "--max-tokens", str(args.max_tokens), "--json", str(report),
    )  # fmt: skip
    check_alive(server, args.log, "during the eval")
    return {
        "exit": code,
        "table": output,
        "report": json.loads(report.read_text()) if report.exists() else None,
        "redacted_lines": [
            number
            for number, example in enumerate(jsonl_lines(heldout), 1)
            if REDACTED in json.dumps(example["messages"][:-1])
        ],
    }


def shadow_step(
    args: argparse.Namespace, run: Path, llama_base: str, turns: list[EvalCase], server: Any
) -> dict[str, Any]:
    config = write_config(
        run, "shadow", llama_base, shadow_route("support-full", args.shadow_policy)
    )
    log = run / "proxy-shadow.log"
    print(f"\n== shadow: served by support-full, shadow {args.shadow_policy} ==", flush=True)
    started = time.monotonic()
    with serving(config, log) as (base, proxy):
        answers = send_turns(base, turns, args.max_tokens, server, args.log)
        sent_s = time.monotonic() - started
        counts = settle(base, "agreement", len(turns), proxy)
        status = sigterm(proxy)
    shadows = {entry["request_id"]: entry for entry in log_events(log, "shadow")}
    for answer, request in zip(answers, log_events(log, "request"), strict=True):
        shadow = shadows.get(request["request_id"], {})
        answer["shadow"] = shadow.get("tool_calls") if shadow.get("outcome") == "ok" else None
    return {
        "answers": answers,
        "agreement": dict(counts["agreement"]),
        "shadow_requests": dict(counts["shadow"]),
        "proxy_exit": status,
        "seconds": round(sent_s, 1),
        "disconnected_but_answered": disconnected_but_answered(log),
    }


# ----------------------------------------------------------------------------- the report


def table(title: str, rows: list[tuple[Any, ...]], header: tuple[str, ...] | None = None) -> str:
    """A plain text table; without a header, a list of `name  value` rows."""
    cells = [tuple(str(cell) for cell in row) for row in ([header] if header else []) + rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    rule = "  ".join("-" * width for width in widths)
    lines = [title, rule]
    for number, row in enumerate(cells):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if number == 0 and header:
            lines.append(rule)
    return "\n".join(lines)


def answer_kinds(answers: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    kinds: Counter[tuple[str, bool]] = Counter()
    for answer in answers:
        kind = "failed" if "error" in answer else "tool call" if answer["calls"] else "text"
        kinds[(kind, answer["streamed"])] += 1
    return [
        (kind, kinds[(kind, False)], kinds[(kind, True)])
        for kind in ("tool call", "text", "failed")
    ]


def names(answer: dict[str, Any]) -> str:
    if "error" in answer:
        return "failed"
    return ", ".join(name for name, _ in answer["calls"]) or "text"


def same_answers(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> Counter[str]:
    """Turn by turn, the capture run's answer against the shadow run's served one (both
    support-full at temperature 0 on the same server)."""
    outcome: Counter[str] = Counter()
    for a, b in zip(first, second, strict=True):
        same = {k: v for k, v in a.items() if k != "seconds"} == {
            k: v for k, v in b.items() if k not in ("seconds", "shadow")
        }
        outcome["identical" if same else "different"] += 1
    return outcome


def shadow_turns(answers: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for answer in answers:
        shadow = answer["shadow"]
        shadowed = "failed" if shadow is None else ", ".join(shadow) or "text"
        rows.append(
            (answer["turn"], "stream" if answer["streamed"] else "json", names(answer), shadowed)
        )
    return rows


def eval_turns(evaluation: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Each held-out turn: what the teacher answered in the capture, and each variant now."""
    results = (evaluation["report"] or {}).get("results", [])
    by_case: dict[str, dict[str, Any]] = {}
    for result in results:
        row = by_case.setdefault(result["case"], {"expected": result["expected"]})
        answered = result["error"] or ", ".join(call["name"] for call in result["answered"])
        exact = " (exact)" if result["checks"]["args_exact"] else ""
        row[result["variant"]] = (answered or "text") + exact
    rows = []
    for case, row in by_case.items():
        line = int(case[1:].split(".")[0])
        expected = ", ".join(call["name"] for call in row["expected"]) or "text"
        redacted = "yes" if line in evaluation["redacted_lines"] else ""
        rows.append((case, redacted, expected, row.get("full", ""), row.get("slim", "")))
    return rows


def print_report(report: dict[str, Any]) -> None:
    capture, training, evaluation, shadow = (
        report["capture"], report["training"], report["eval"], report["shadow"],
    )  # fmt: skip
    settings = report["settings"]
    metrics, merge, student = capture["metrics"], training["merge"], training["student_check"]
    sections = [
        table(
            f"Capture run: the client's answers ({settings['turns']} turns)",
            answer_kinds(capture["answers"]),
            ("answer", "json", "stream"),
        ),
        table(
            'tuned_proxy_capture_examples_total{route="support-agent"}, capture run',
            [(outcome, metrics.get(outcome, 0)) for outcome in CAPTURE_OUTCOMES],
            ("outcome", "count"),
        ),
        table(
            "Answered turns no captured line holds, and why (the full training schema's verdict)",
            capture["not_written"] or [("none", "", "")],
            ("turn", "function", "arguments"),
        ),
        table(
            'Capture skips logged ("capture skipped an exchange": once a minute per reason)',
            [(s["reason"], s["detail"]) for s in capture["skip_log"]] or [("none", "")],
            ("reason", "detail"),
        ),
        table(
            "Captured files",
            [
                ("files", capture["files"]),
                ("lines", capture["lines"]),
                ("[REDACTED] strings", capture["redacted_strings"]),
                ("proxy's exit after SIGTERM", capture["proxy_exit"]),
                ("`capture closed` log line", json.dumps(capture["closed_log"] or {})),
                (
                    "answered requests logged client_disconnected",
                    capture["disconnected_but_answered"],
                ),
            ],
        ),
        table(f"training merge --holdout {settings['holdout']}", list(merge.items())),
        table("training check of the training part", list(training["check"].items())),
        table(
            "policy init --mode slim, and `tuned-proxy check` of a route serving it",
            [
                ("policy init exit", training["policy_init_exit"]),
                ("check exit", student["exit"]),
                *(("levers", levers) for levers in student["levers"]),
                *(("warning", warning) for warning in student["warnings"]),
            ],
        ),
        table(
            "eval, turn by turn (the expected answer is the teacher's, captured)",
            eval_turns(evaluation),
            ("turn", "prompt redacted", "teacher captured", "full", "slim"),
        ),
        table(
            f"Shadow run, turn by turn: served support-full, shadow {settings['shadow_policy']}",
            shadow_turns(shadow["answers"]),
            ("turn", "", "served", "shadow"),
        ),
        table(
            'tuned_proxy_shadow_agreement_total{route="support-agent"}, shadow run',
            [(outcome, shadow["agreement"].get(outcome, 0)) for outcome in AGREEMENT_OUTCOMES],
            ("outcome", "count"),
        ),
        table(
            'tuned_proxy_shadow_requests_total{route="support-agent"}, shadow run',
            sorted(shadow["shadow_requests"].items()),
            ("outcome", "count"),
        ),
        table(
            "Served answers: capture run against shadow run (support-full, temperature 0)",
            [
                *sorted(report["repeatability"].items()),
                (
                    "answered requests logged client_disconnected",
                    shadow["disconnected_but_answered"],
                ),
            ],
        ),
        table("Timings, seconds", list(report["timings"].items())),
    ]
    print("\n" + "\n\n".join(sections))
    print(f"\ntuned-proxy eval of the held-out split (exit {evaluation['exit']}):")
    print(evaluation["table"].rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=24, help="held-out turns (default: 24)")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--holdout", type=float, default=0.25, help="merge's held-out part")
    parser.add_argument("--student-policy", default="support-slim", help="the capture's policy")
    parser.add_argument("--shadow-policy", default="support-slim", help="the comparing shadow's")
    parser.add_argument("--run", type=Path, default=CACHE / "run-distill", help="run folder")
    add_server_arguments(parser)
    args = parser.parse_args()
    exit_on_sigterm()
    run = args.run.resolve()
    prepare_run_folder(run)
    args.log = run / "llama-server.log"
    turns = held_out_turns(args.limit)
    started = time.monotonic()
    with llama_server(args, run) as (base, server):
        ready_s = round(time.monotonic() - started, 1)
        print(f"llama-server on {base}; run folder {run}; {len(turns)} turns", flush=True)
        cmd = Commands(run)
        capture = capture_step(args, run, base, turns, server)
        training = training_steps(args, run, base, cmd)
        evaluation = eval_step(args, run, base, cmd, server)
        shadow = shadow_step(args, run, base, turns, server)
    timings = {
        "llama-server ready": ready_s,
        "capture: turns sent": capture["seconds"],
        **{step["step"]: step["seconds"] for step in cmd.log},
        "shadow: turns sent": shadow["seconds"],
        "whole run": round(time.monotonic() - started, 1),
    }
    report = {
        "settings": {
            "turns": len(turns), "holdout": args.holdout, "threads": args.threads,
            "context": args.context, "max_tokens": args.max_tokens,
            "student_policy": args.student_policy, "shadow_policy": args.shadow_policy,
            "model": MODEL_NAME,
        },
        "commands": cmd.log,
        "capture": capture,
        "training": training,
        "eval": evaluation,
        "shadow": shadow,
        "repeatability": dict(same_answers(capture["answers"], shadow["answers"])),
        "timings": timings,
    }  # fmt: skip
    (run / "report.json").write_text(json.dumps(report, indent=2))
    print_report(report)
    print(f"\nreport: {run / 'report.json'}")
    written = training["merge"].get("training examples written", 0)
    if written < MIN_EXAMPLES:
        print(f"only {written} training examples (a job needs {MIN_EXAMPLES}): raise --limit")
    clean = training["merge"]["exit"] == 0 and training["check"]["exit"] == 0
    return 0 if clean and evaluation["exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
