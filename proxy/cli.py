"""The `tuned-proxy` command line (also `python -m proxy`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from proxy import __version__
from proxy.config import Route, Runtime, Target, default_config_path, load_config
from proxy.errors import ConfigError
from proxy.eval.cli import add_eval_parser
from proxy.training.cli import add_training_commands

LOG_LEVELS = ["debug", "info", "warning", "error"]


def _config_path(args: argparse.Namespace) -> Path:
    return Path(args.config) if args.config else default_config_path()


def _load_or_report(path: Path) -> Runtime | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return None


def cmd_check(args: argparse.Namespace) -> int:
    from proxy.checking import report, warnings

    path = _config_path(args)
    runtime = _load_or_report(path)
    if runtime is None:
        return 1
    print(f"{path}: ok")
    print("\n".join(report(runtime)))
    for warning in warnings(runtime):
        print(f"warning: {warning}")
    if args.resolve:
        return resolve_text_bias(runtime)
    return 0


def resolve_text_bias(runtime: Runtime) -> int:
    """`check --resolve`: ask the upstreams' tokenizers for the policies' texts now."""
    from proxy.checking import describe_resolution
    from proxy.text_bias import resolve_once, text_targets

    targets = text_targets(runtime)
    if not targets:
        print("logit_bias.text: no policy biases by text")
        return 0
    resolution = asyncio.run(resolve_once(targets))
    print("\n".join(describe_resolution(resolution)))
    return 1 if resolution.unreachable else 0


def cmd_serve(args: argparse.Namespace) -> int:
    from proxy.auth import Listener, refuse_open_bind
    from proxy.logs import configure_logging
    from proxy.server import MetricsListener, event_loop_factory, serve

    path = _config_path(args)
    runtime = _load_or_report(path)
    if runtime is None:
        return 1
    server = runtime.config.server
    host = args.host or server.host
    port = args.port if args.port is not None else server.port
    listener = Listener(host, args.allow_unauthenticated)
    refusal = refuse_open_bind(runtime, listener)
    if refusal:
        print(f"tuned-proxy: {refusal}", file=sys.stderr)
        return 2
    drain = args.drain_timeout if args.drain_timeout is not None else server.drain_timeout_s
    metrics_port = args.metrics_port if args.metrics_port is not None else server.metrics_port
    metrics = None
    if metrics_port is not None:
        metrics = MetricsListener(args.metrics_host or server.metrics_host, metrics_port)
    try:
        new_loop = event_loop_factory(server.event_loop)
    except RuntimeError as exc:
        print(f"tuned-proxy: {exc}", file=sys.stderr)
        return 2
    logging_setup = configure_logging(args.log_level, args.log_format)
    try:
        with asyncio.Runner(loop_factory=new_loop) as runner:
            runner.run(
                serve(
                    runtime,
                    listener,
                    port,
                    config_path=path,
                    metrics=metrics,
                    request_lines=logging_setup.request_lines,
                    watch=args.watch,
                    drain_timeout_s=drain,
                )
            )
    finally:
        # The last lines ("stopped", or those before a crash) go out before any traceback.
        logging_setup.flush()
    return 0


def cmd_mock_upstream(args: argparse.Namespace) -> int:
    from proxy.fake.server import run_mock_server
    from proxy.logs import configure_logging

    configure_logging("info", "json")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_mock_server(args.host, args.port))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from proxy.fake.demo import run_demo

    return asyncio.run(run_demo())


def find_target(route: Route, name: str | None) -> Target | None:
    """A route's variant, fallback target or shadow by name; the first variant by default."""
    if name is None:
        return route.variants[0]
    return next((t for t in route.targets if t.name == name), None)


def cmd_rewrite(args: argparse.Namespace) -> int:
    from proxy import jsonutil
    from proxy.errors import ProxyError
    from proxy.outgoing import outgoing_request, outgoing_responses_request

    runtime = _load_or_report(_config_path(args))
    if runtime is None:
        return 1
    route = runtime.routes.get(args.model)
    target = find_target(route, args.variant) if route else None
    if route is None or target is None:
        what = f"route {args.model!r}" if route is None else f"variant {args.variant!r}"
        print(f"tuned-proxy: no {what} in {runtime.path}", file=sys.stderr)
        return 1
    if args.resolve:
        target = resolve_target_text_bias(target)
    raw = Path(args.request).read_bytes() if args.request else sys.stdin.buffer.read()
    try:
        body = jsonutil.loads(raw)
        if not isinstance(body, dict):
            raise ValueError("the request must be a JSON object")
        # A Responses API body has `input` where chat's has `messages`.
        responses = "input" in body and "messages" not in body
        result = (outgoing_responses_request if responses else outgoing_request)(target, body)
    except (ValueError, ProxyError) as exc:
        print(f"tuned-proxy: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1
    drift = tool_drift(body, target, result.changes)
    if args.json:
        print(jsonutil.dumps_pretty(rewrite_report(body, route, target, result, drift)))
        return 0
    print(jsonutil.dumps_pretty(result.body))
    print_rewrite_summary(body, route, target, result, drift, responses)
    return 0


def resolve_target_text_bias(target: Target) -> Target:
    """`rewrite --resolve`: the target with its `logit_bias.text` ids from its upstream's
    tokenizer, as the proxy serves it once resolved (what the tokenizer said: on stderr)."""
    from proxy.checking import describe_resolution
    from proxy.text_bias import resolve_once, resolved_target

    bias = target.policy.spec.logit_bias
    if bias is None or not bias.text:
        return target
    resolution = asyncio.run(resolve_once([target]))
    for line in describe_resolution(resolution):
        print(line, file=sys.stderr)
    return resolved_target(target, resolution)


def tool_drift(body: dict[str, Any], target: Target, changes: list[Any]) -> dict[str, list[str]]:
    """For each tool the policy made identical again, what the request's version changed."""
    from proxy.rewrite.drift import describe_drift
    from proxy.rewrite.result import TOOL_DRIFT_UNDONE

    sent = {}
    for tool in body.get("tools") or ():
        function = tool.get("function", tool) if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            sent[function["name"]] = function
    drift = {}
    for change in changes:
        trained = target.policy.training_tools.get(change.detail)
        if change.action == TOOL_DRIFT_UNDONE and trained and change.detail in sent:
            drift[change.detail] = describe_drift(sent[change.detail], trained["function"])
    return drift


def rewrite_report(
    body: dict[str, Any],
    route: Route,
    target: Target,
    result: Any,
    drift: dict[str, list[str]],
) -> dict[str, Any]:
    """`rewrite --json`: the rewritten body and what changed, for machines."""
    from proxy import jsonutil

    return {
        "route": route.name,
        "variant": target.name,
        "upstream": target.upstream_name,
        "model": target.model,
        "policy": target.policy.name,
        "body": result.body,
        "changes": [
            {"action": c.action, "detail": c.detail, "bytes_removed": c.bytes_removed}
            for c in result.changes
        ],
        "drift": drift,
        "tool_bytes_removed": result.tool_bytes_removed,
        "bytes": {"before": len(jsonutil.dumps(body)), "after": len(jsonutil.dumps(result.body))},
    }


def print_rewrite_summary(
    body: dict[str, Any],
    route: Route,
    target: Target,
    result: Any,
    drift: dict[str, list[str]],
    responses: bool,
) -> None:
    from proxy import jsonutil
    from proxy.rewrite.result import TOOL_DRIFT_UNDONE

    before, after = len(jsonutil.dumps(body)), len(jsonutil.dumps(result.body))
    api = ""
    if responses:
        bridged = ", bridged to chat completions" if result.bridged_from is not None else ""
        api = f"Responses API{bridged}: "
    print(
        f"{api}route {route.name} → variant {target.name} "
        f"({target.upstream_name}/{target.model}), "
        f"policy {target.policy.name}: {len(result.changes)} change(s), "
        f"{result.tool_bytes_removed} B of tool schema removed, body {before} → {after} B",
        file=sys.stderr,
    )
    for change in result.changes:
        removed = f" (-{change.bytes_removed} B)" if change.bytes_removed else ""
        found = drift.get(change.detail) if change.action == TOOL_DRIFT_UNDONE else None
        what = f": {'; '.join(found)}" if found else ""
        print(f"  {change.action} {change.detail}{removed}{what}".rstrip(), file=sys.stderr)


def cmd_policy_init(args: argparse.Namespace) -> int:
    from proxy.training.extract import ExtractError
    from proxy.training.policy_init import PolicyInitError, init_policy

    try:
        written = init_policy(Path(args.train), args.name, args.mode, Path(args.output), args.force)
    except (PolicyInitError, ExtractError) as exc:
        print(f"tuned-proxy: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    print(f"use it with `policy: {args.name}` on a variant (policies_dir: {args.output})")
    return 0


def cmd_tools_extract(args: argparse.Namespace) -> int:
    from proxy.training.extract import run

    return run(Path(args.train), Path(args.output) if args.output else None)


def add_policy_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    policy = commands.add_parser("policy", help="write policies from training files")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    init = policy_commands.add_parser(
        "init",
        help="write NAME.tools.json and NAME.yaml from a training file",
        description="Write a policy serving the tool definitions, system prompt and "
        "parallel_tool_calls of a fine-tuning file, each value commented with its source.",
    )
    init.add_argument("train", metavar="TRAIN.jsonl")
    init.add_argument("--name", required=True, help="the policy's name (files NAME.*)")
    init.add_argument("--mode", choices=["identical", "slim"], default="identical")
    init.add_argument("-o", "--output", default=".", metavar="DIR", help="default: .")
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    init.set_defaults(run=cmd_policy_init)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tuned-proxy",
        description="An OpenAI-compatible proxy for fine-tuned chat models.",
    )
    parser.add_argument("--version", action="version", version=f"tuned-proxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the proxy")
    serve.add_argument("-c", "--config", help="config file (default: tuned-proxy.yaml, else demo)")
    serve.add_argument("--host", help="address to bind (default: server.host)")
    serve.add_argument("--port", type=int, help="port to bind (default: server.port)")
    serve.add_argument(
        "--metrics-port",
        type=int,
        help="serve /metrics on this port alone (default: server.metrics_port)",
    )
    serve.add_argument(
        "--metrics-host", help="address of the metrics port (default: server.metrics_host)"
    )
    serve.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="allow a non-loopback address with no client keys configured",
    )
    serve.add_argument(
        "--watch", action="store_true", help="reload when the config or a policy file changes"
    )
    serve.add_argument(
        "--drain-timeout",
        type=float,
        metavar="SECONDS",
        help="on SIGTERM, time in-flight requests get to finish (default: server.drain_timeout_s)",
    )
    serve.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    serve.add_argument("--log-format", default="json", choices=["json", "console"])
    serve.set_defaults(run=cmd_serve)

    check = commands.add_parser("check", help="validate the config and its policies")
    check.add_argument("-c", "--config", help="config file (default: tuned-proxy.yaml, else demo)")
    check.add_argument(
        "--resolve",
        action="store_true",
        help="also ask the upstreams' tokenizers for the token ids of logit_bias.text",
    )
    check.set_defaults(run=cmd_check)

    mock = commands.add_parser("mock-upstream", help="serve the built-in fake model alone")
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=8000)
    mock.set_defaults(run=cmd_mock_upstream)

    dry_run = commands.add_parser(
        "rewrite", help="dry run: print a request as a variant's policy rewrites it"
    )
    dry_run.add_argument(
        "-c", "--config", help="config file (default: tuned-proxy.yaml, else demo)"
    )
    dry_run.add_argument("--model", required=True, help="the route name the application sends")
    dry_run.add_argument(
        "--variant", help="variant (or fallback/shadow target) name; default: first"
    )
    dry_run.add_argument("request", nargs="?", metavar="REQUEST.json", help="default: stdin")
    dry_run.add_argument(
        "--json", action="store_true", help="one JSON report on stdout: body, changes, drift"
    )
    dry_run.add_argument(
        "--resolve",
        action="store_true",
        help="ask the upstream's tokenizer for the ids of the policy's logit_bias.text first "
        "(else a text bias shows as logit_bias_pending)",
    )
    dry_run.set_defaults(run=cmd_rewrite)

    tools = commands.add_parser("tools", help="work with tool definitions")
    tools_commands = tools.add_subparsers(dest="tools_command", required=True, metavar="COMMAND")
    extract = tools_commands.add_parser(
        "extract", help="the canonical tool definitions of a training file, and their drift"
    )
    extract.add_argument("train", metavar="TRAIN.jsonl")
    extract.add_argument("-o", "--output", help="write the tools JSON here (default: stdout)")
    extract.set_defaults(run=cmd_tools_extract)

    add_policy_commands(commands)
    add_training_commands(commands)
    add_eval_parser(commands)

    demo = commands.add_parser("demo", help="run the proxy on the fake model and show what it does")
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
