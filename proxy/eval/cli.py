"""`tuned-proxy eval EXAMPLES.jsonl -c FILE --model ROUTE`: replay held-out examples through
every variant of a route and compare them (see `proxy.eval`).

Exit codes: 0 the run finished (failed requests are results, not errors), 1 a problem with the
config, the route, the variants or the examples file, or a bias by text whose tokenizer does
not answer, 130 stopped with Ctrl-C (the report of what was measured is printed all the same).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from proxy import jsonutil
from proxy.config import MockUpstream, Runtime, default_config_path, load_config
from proxy.errors import ConfigError
from proxy.eval.cases import CaseSet, read_cases
from proxy.eval.progress import ProgressBar
from proxy.eval.report import EvalReport, render_table, report_json
from proxy.eval.runner import EvalSettings
from proxy.eval.session import evaluate
from proxy.eval.text_bias import TextBiasUnresolved
from proxy.training.reader import TrainingFileError

EXIT_INTERRUPTED = 130  # the shell's code for a process ended by SIGINT


class UsageProblem(Exception):
    """A problem with what the command was given; the message says which."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value}")
    return value


def add_eval_parser(commands: Any) -> None:
    """Add `eval` to the `tuned-proxy` subcommands (`commands` is argparse's subparsers)."""
    parser = commands.add_parser(
        "eval",
        help="replay held-out examples through each variant and compare tool-calling quality",
        description=(
            "For each assistant turn of a held-out chat fine-tuning file, send the conversation "
            "so far through the proxy to each variant (its policy applied) and compare the "
            "answer with the example's tool calls."
        ),
    )
    parser.add_argument("examples", metavar="EXAMPLES.jsonl", help="held-out examples")
    parser.add_argument("-c", "--config", help="config file (default: tuned-proxy.yaml, else demo)")
    parser.add_argument("--model", required=True, metavar="ROUTE", help="the route to evaluate")
    parser.add_argument(
        "--variants",
        metavar="A,B",
        help="comma-separated variant names; the first is the baseline (default: all, in order)",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=4,
        metavar="N",
        help="requests at once (default: 4)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=120.0,
        metavar="SECONDS",
        help="deadline of each request (default: 120)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=0,
        metavar="N",
        help="SDK retries on 429/5xx/connection errors (default: 0, every failure counts)",
    )
    parser.add_argument(
        "--temperature", type=float, metavar="T", help="set on every request (default: none sent)"
    )
    parser.add_argument(
        "--max-tokens", type=_positive_int, metavar="N", help="set on every request"
    )
    parser.add_argument(
        "--limit", type=_positive_int, metavar="N", help="read only the first N examples"
    )
    parser.add_argument(
        "--api",
        choices=["chat", "responses"],
        default="chat",
        help="replay through chat completions (default) or the Responses API",
    )
    parser.add_argument(
        "--json", metavar="OUT", help="also write the report as JSON to OUT ('-': stdout)"
    )
    parser.set_defaults(run=run_eval_command)


def run_eval_command(args: argparse.Namespace) -> int:
    try:
        runtime, settings, case_set = _prepare(args)
    except UsageProblem as exc:
        print(f"tuned-proxy eval: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 1
    for skipped in case_set.skipped:
        print(f"{args.examples}:{skipped.line}: skipped: {skipped.reason}", file=sys.stderr)

    from proxy.logs import configure_logging

    # The proxy runs in this process: its per-request log lines would bury the report.
    configure_logging("error", "console")
    try:
        report = asyncio.run(_run(runtime, settings, case_set, args.examples))
    except TextBiasUnresolved as exc:
        print(f"tuned-proxy eval: {exc}", file=sys.stderr)
        return 1
    for line in mock_notes(runtime, settings):
        print(line, file=sys.stderr if args.json == "-" else sys.stdout)
    _print_report(report, args.json)
    return EXIT_INTERRUPTED if report.interrupted else 0


def _prepare(args: argparse.Namespace) -> tuple[Runtime, EvalSettings, CaseSet]:
    runtime = load_config(Path(args.config) if args.config else default_config_path())
    route = runtime.routes.get(args.model)
    if route is None:
        known = ", ".join(sorted(runtime.routes))
        raise UsageProblem(f"no route {args.model!r} in {runtime.path} (routes: {known})")
    names = [v.name for v in route.variants]
    chosen = [n.strip() for n in args.variants.split(",") if n.strip()] if args.variants else names
    unknown = [n for n in chosen if n not in names]
    if unknown or not chosen or len(set(chosen)) != len(chosen):
        raise UsageProblem(
            f"--variants must name distinct variants of route {route.name!r} "
            f"({', '.join(names)}); got {args.variants!r}"
        )
    try:
        case_set = read_cases(Path(args.examples), args.limit)
    except TrainingFileError as exc:
        raise UsageProblem(str(exc)) from exc
    if not case_set.cases:
        raise UsageProblem(f"{args.examples}: no assistant turn to replay")
    settings = EvalSettings(
        route=route.name,
        variants=tuple(chosen),
        concurrency=args.concurrency,
        timeout_s=args.timeout,
        retries=max(0, args.retries),
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        api=args.api,
    )
    return runtime, settings, case_set


async def _run(
    runtime: Runtime, settings: EvalSettings, case_set: CaseSet, examples_file: str
) -> EvalReport:
    progress = ProgressBar(len(case_set.cases) * len(settings.variants))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_interrupt() -> None:
        stop.set()
        # A second Ctrl-C ends the process at once, the usual way.
        loop.remove_signal_handler(signal.SIGINT)

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    try:
        return await evaluate(
            runtime,
            case_set,
            settings,
            examples_file=examples_file,
            on_outcome=lambda outcome: progress.advance(failed=outcome.failed),
            stop=stop,
        )
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        progress.close()


def mock_notes(runtime: Runtime, settings: EvalSettings) -> list[str]:
    """A warning above the table for each variant the built-in fake model serves: its
    answers are chosen by word overlap, so its quality figures measure nothing."""
    route = runtime.routes[settings.route]
    notes = []
    for name in settings.variants:
        variant = route.variant(name)
        if variant is not None and isinstance(variant.upstream, MockUpstream):
            notes.append(
                f"note: variant {name} is served by the built-in fake model (upstream "
                f"{variant.upstream_name}, kind mock): its call and argument rates say nothing "
                "about a real model; its prompt tokens are the fake's estimate."
            )
    return [*notes, ""] if notes else []


def _print_report(report: EvalReport, json_out: str | None) -> None:
    table = render_table(report)
    if json_out == "-":
        print(table, file=sys.stderr)
        print(jsonutil.dumps_pretty(report_json(report)))
        return
    print(table)
    if json_out:
        Path(json_out).write_text(jsonutil.dumps_pretty(report_json(report)) + "\n", "utf-8")
        print(f"\nJSON report written to {json_out}")


def main(argv: list[str] | None = None) -> int:
    """`python -m proxy.eval.cli …`: the command on its own (the same as `tuned-proxy eval`)."""
    parser = argparse.ArgumentParser(prog="tuned-proxy")
    add_eval_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["eval", *(sys.argv[1:] if argv is None else argv)])
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
