"""The `tuned-proxy training …` commands, ready to attach to the main parser."""

from __future__ import annotations

import argparse
from pathlib import Path

from proxy.training.check import run_check
from proxy.training.rewrite import run_rewrite
from proxy.training.rules import DEFAULT_MAX_TOKENS


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return value


def _cmd_check(args: argparse.Namespace) -> int:
    return run_check(args.train, args.format, max_tokens=args.max_tokens)


def _cmd_rewrite(args: argparse.Namespace) -> int:
    return run_rewrite(args.train, args.policy, args.output, new_call_ids=args.new_call_ids)


def add_training_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `training check` and `training rewrite` to the main parser's subcommands."""
    training = commands.add_parser(
        "training", help="check and rewrite chat and preference (DPO) fine-tuning files"
    )
    training_commands = training.add_subparsers(
        dest="training_command", required=True, metavar="COMMAND"
    )

    check = training_commands.add_parser(
        "check",
        help="validate a chat or preference (DPO) fine-tuning file; errors with line numbers",
        description="Check every example of a chat or preference (DPO) fine-tuning file "
        "(JSONL) against the rules of the OpenAI and Azure OpenAI fine-tuning APIs. Prints "
        "FILE:LINE: error|warning: message (fix: ...) lines and a summary; exits 1 on any error.",
    )
    check.add_argument("train", metavar="TRAIN.jsonl", type=Path)
    check.add_argument(
        "--format",
        choices=["openai", "azure"],
        default="openai",
        help="azure also expects the file saved as UTF-8 with a byte order mark",
    )
    check.add_argument(
        "--max-tokens",
        type=_positive,
        default=DEFAULT_MAX_TOKENS,
        metavar="N",
        help="warn about examples longer than N tokens, which training truncates "
        f"(default {DEFAULT_MAX_TOKENS}, gpt-4o and gpt-4o-mini); no tokenizer is used: "
        "tokens are estimated as the example's bytes / 4",
    )
    check.set_defaults(run=_cmd_check)

    rewrite = training_commands.add_parser(
        "rewrite",
        help="give a training file the tool definitions a policy serves",
        description="Rewrite every example's tools (a preference example's input.tools) "
        "with a policy's tool transformation "
        "(identical or slim), exactly as the proxy rewrites requests for that policy, and "
        "convert the deprecated functions format to tools. Other policy keys are not "
        "applied. Nothing is written if an example cannot be rewritten.",
    )
    rewrite.add_argument("train", metavar="TRAIN.jsonl", type=Path)
    rewrite.add_argument(
        "--policy",
        required=True,
        type=Path,
        metavar="POLICY.yaml",
        help="a policy file, e.g. policies/support-slim.yaml (its name is the file's stem)",
    )
    rewrite.add_argument("-o", "--output", required=True, type=Path, metavar="OUT.jsonl")
    rewrite.add_argument(
        "--new-call-ids",
        action="store_true",
        help='replace placeholder call ids ("call_id", "call_1", "1", ids shared by several '
        "calls of one example, the call_legacy_N of converted examples) with unique "
        "call_<hex> ids, and the tool_call_id of their answers with them",
    )
    rewrite.set_defaults(run=_cmd_rewrite)
