"""The `tuned-proxy training …` commands, ready to attach to the main parser."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from proxy.training.check import run_check
from proxy.training.merge import run_merge
from proxy.training.rewrite import run_rewrite
from proxy.training.rules import DEFAULT_MAX_TOKENS


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value


def _cmd_check(args: argparse.Namespace) -> int:
    return run_check(args.train, args.format, max_tokens=args.max_tokens)


def _cmd_rewrite(args: argparse.Namespace) -> int:
    return run_rewrite(args.train, args.policy, args.output, new_call_ids=args.new_call_ids)


def _cmd_merge(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    # Each option alone is a mistake: a split with nowhere to go, or a file to fill with nothing.
    if args.holdout is not None and args.holdout_out is None:
        parser.error("--holdout needs --holdout-out HELDOUT.jsonl, the file the split goes to")
    if args.holdout_out is not None and args.holdout is None:
        parser.error("--holdout-out needs --holdout FRACTION, the part of examples to hold out")
    return run_merge(
        args.inputs,
        args.output,
        holdout=args.holdout or 0.0,
        heldout=args.holdout_out,
        force=args.force,
    )


def add_training_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `training check`, `rewrite` and `merge` to the main parser's subcommands."""
    training = commands.add_parser(
        "training", help="check, rewrite and merge chat and preference (DPO) fine-tuning files"
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

    merge = training_commands.add_parser(
        "merge",
        help="join chat training files (captured ones too), drop repeats, split off a held-out set",
        description="Join chat fine-tuning files in the order given (a directory: its *.jsonl "
        "in name order, which for capture files is time order), keeping each example as read. "
        "An example whose messages repeat an earlier one's is dropped. With --holdout, a "
        "fraction of the examples goes to HELDOUT instead, chosen by a hash of the messages, "
        "so an example always lands on the same side. A last line that is not complete JSON "
        "(a capture cut short) is skipped with a warning; any other bad line is an error, and "
        "then nothing is written.",
    )
    merge.add_argument("inputs", nargs="+", type=Path, metavar="FILE_OR_DIR")
    merge.add_argument("-o", "--output", required=True, type=Path, metavar="OUT.jsonl")
    merge.add_argument(
        "--holdout",
        type=_fraction,
        metavar="FRACTION",
        help="the part of the examples to hold out, at least 0 and below 1 (e.g. 0.1); "
        "needs --holdout-out",
    )
    merge.add_argument(
        "--holdout-out",
        type=Path,
        metavar="HELDOUT.jsonl",
        help="where the held-out examples go, for `tuned-proxy eval`",
    )
    merge.add_argument(
        "--force", action="store_true", help="overwrite OUT and HELDOUT if they exist"
    )
    merge.set_defaults(run=functools.partial(_cmd_merge, merge))
