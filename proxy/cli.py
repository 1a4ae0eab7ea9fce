"""The `tuned-proxy` command line (also `python -m proxy`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path

from proxy import __version__
from proxy.config import Route, Runtime, Target, default_config_path, load_config
from proxy.errors import ConfigError


def _config_path(args: argparse.Namespace) -> Path:
    return Path(args.config) if args.config else default_config_path()


def _load_or_report(path: Path) -> Runtime | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return None


def describe_target(target: Target) -> str:
    return f"{target.upstream_name}/{target.model} policy={target.policy.name}"


def describe_route(route: Route) -> list[str]:
    total = sum(v.weight for v in route.variants)
    lines = [
        f"route {route.name}: sticky={route.sticky or 'none'}"
        f" variant_override={'allowed' if route.allow_variant_override else 'ignored'}"
    ]
    for variant in route.variants:
        share = 100 * variant.weight / total
        lines.append(f"  variant {variant.name:<16} {share:6.2f}%  {describe_target(variant)}")
    for position, target in enumerate(route.fallback, start=1):
        lines.append(f"  fallback {position}: {describe_target(target)}")
    if route.shadow is not None:
        lines.append(
            f"  shadow {100 * route.shadow.sample:.2f}% of requests: "
            f"{describe_target(route.shadow)}"
        )
    return lines


def cmd_check(args: argparse.Namespace) -> int:
    path = _config_path(args)
    runtime = _load_or_report(path)
    if runtime is None:
        return 1
    print(f"{path}: ok")
    for route in runtime.routes.values():
        print("\n".join(describe_route(route)))
    policies = sorted(name for name in runtime.policies if name != "passthrough")
    print(f"policies: {', '.join(policies) or 'none'}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from proxy.logs import configure_logging
    from proxy.server import refuse_open_bind, serve

    configure_logging(args.log_level, args.log_format)
    runtime = _load_or_report(_config_path(args))
    if runtime is None:
        return 1
    host = args.host or runtime.config.server.host
    port = args.port if args.port is not None else runtime.config.server.port
    refusal = refuse_open_bind(runtime, host, args.allow_unauthenticated)
    if refusal:
        print(f"tuned-proxy: {refusal}", file=sys.stderr)
        return 2
    asyncio.run(serve(runtime, host, port))
    return 0


def cmd_mock_upstream(args: argparse.Namespace) -> int:
    from proxy.logs import configure_logging
    from proxy.mock_server import run_mock_server

    configure_logging("info", "json")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_mock_server(args.host, args.port))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from proxy.demo import run_demo

    return asyncio.run(run_demo())


def cmd_tools_extract(args: argparse.Namespace) -> int:
    from proxy.tools_extract import run

    return run(Path(args.train), Path(args.output) if args.output else None)


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
        "--allow-unauthenticated",
        action="store_true",
        help="allow a non-loopback address with no client keys configured",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-format", default="json", choices=["json", "console"])
    serve.set_defaults(run=cmd_serve)

    check = commands.add_parser("check", help="validate the config and its policies")
    check.add_argument("-c", "--config", help="config file (default: tuned-proxy.yaml, else demo)")
    check.set_defaults(run=cmd_check)

    mock = commands.add_parser("mock-upstream", help="serve the built-in fake model alone")
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=8000)
    mock.set_defaults(run=cmd_mock_upstream)

    tools = commands.add_parser("tools", help="work with tool definitions")
    tools_commands = tools.add_subparsers(dest="tools_command", required=True, metavar="COMMAND")
    extract = tools_commands.add_parser(
        "extract", help="the canonical tool definitions of a training file, and their drift"
    )
    extract.add_argument("train", metavar="TRAIN.jsonl")
    extract.add_argument("-o", "--output", help="write the tools JSON here (default: stdout)")
    extract.set_defaults(run=cmd_tools_extract)

    demo = commands.add_parser("demo", help="run the proxy on the fake model and show what it does")
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
