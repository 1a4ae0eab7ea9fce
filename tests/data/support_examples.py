"""What the support agent's example generators share: the example lines and the file writer.

`make_support_train.py` (the training file) and `make_support_heldout.py` (the held-out set)
differ only in their conversations; both give each one the training system prompt and the
20 training tools, as a team's fine-tuning file has them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

POLICIES = Path(__file__).resolve().parents[2] / "policies"
Conversation = tuple[list[dict[str, Any]], bool]  # messages without the system prompt; parallel


def example_lines(
    conversations: Iterable[Conversation], tools: list[dict[str, Any]], system_prompt: str
) -> list[str]:
    lines = []
    for messages, parallel in conversations:
        example: dict[str, Any] = {
            "messages": [{"role": "system", "content": system_prompt}, *messages],
            "tools": tools,
        }
        if not parallel:
            example["parallel_tool_calls"] = False
        lines.append(json.dumps(example, ensure_ascii=False))
    return lines


def write_examples(
    description: str, default_output: str, conversations: Iterable[Conversation]
) -> None:
    """The command line of a generator: write its examples to `policies/<default_output>`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-o", "--output", type=Path, default=POLICIES / default_output)
    args = parser.parse_args()
    tools = json.loads((POLICIES / "support.tools.json").read_text(encoding="utf-8"))
    policy = yaml.safe_load((POLICIES / "support-full.yaml").read_text(encoding="utf-8"))
    lines = example_lines(conversations, tools, policy["system_prompt"]["text"])
    args.output.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
