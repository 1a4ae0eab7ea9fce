"""`tuned-proxy policy init`: a policy written from the training file it serves.

A policy states facts the training file already holds: the tool definitions (as `tools
extract` finds them), the system prompt when every example shares one, `parallel_tool_calls`
as the examples set it. This writes `NAME.tools.json` and `NAME.yaml` with them, each value
commented with where it came from, so an operator starts from the facts instead of copying
them by hand. It never overwrites a file unless told to.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy import jsonutil
from proxy.training.extract import Extraction, extract_tools, read_examples
from proxy.training.kinds import conversation

SYSTEM_ROLES = ("system", "developer")


@dataclass
class TrainingFacts:
    """What the examples of one training file say that a policy repeats."""

    examples: int = 0
    # The first system (or developer) message's text per example; None for none.
    system_prompts: Counter[str | None] = field(default_factory=Counter)
    # `parallel_tool_calls` as each example sets it; None where it does not.
    parallel: Counter[bool | None] = field(default_factory=Counter)
    # Examples with an assistant message making more than one call at once, by their
    # `parallel_tool_calls` (None where it is not set).
    parallel_calls: Counter[bool | None] = field(default_factory=Counter)


def read_facts(path: Path) -> TrainingFacts:
    facts = TrainingFacts()
    for _, example in read_examples(path):
        chat = conversation(example)
        if not isinstance(chat, dict):
            continue
        facts.examples += 1
        listed = chat.get("messages")
        messages: list[Any] = listed if isinstance(listed, list) else []
        facts.system_prompts[_system_prompt(messages)] += 1
        value = chat.get("parallel_tool_calls")
        facts.parallel[value if isinstance(value, bool) else None] += 1
        if any(_calls(message) > 1 for message in messages):
            facts.parallel_calls[value if isinstance(value, bool) else None] += 1
    return facts


def _system_prompt(messages: list[Any]) -> str | None:
    for message in messages:
        if isinstance(message, dict) and message.get("role") in SYSTEM_ROLES:
            content = message.get("content")
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content if isinstance(content, str) else None
    return None


def _calls(message: Any) -> int:
    calls = message.get("tool_calls") if isinstance(message, dict) else None
    return len(calls) if isinstance(calls, list) else 0


def policy_text(name: str, train: Path, mode: str, facts: TrainingFacts, tools: int) -> str:
    """The policy file: each key, and a comment saying where its value came from."""
    lines = [
        f"# Written by `tuned-proxy policy init {train.name} --name {name} --mode {mode}`",
        f"# from {facts.examples} examples. Each value says where it came from; edit freely.",
        f"training_tools: {name}.tools.json   # the {tools} canonical definitions of the file",
        "tools:",
    ]
    if mode == "slim":
        lines += [
            "  mode: slim                        # the training definitions, descriptions omitted",
            "  slim: {default: omit_descriptions}",
        ]
    else:
        lines.append("  mode: identical                   # requests get the training definitions")
    lines.append("  unknown: pass                     # tools the training never saw pass as sent")
    lines += _system_prompt_lines(facts)
    lines += _parallel_lines(facts)
    lines.append("validate_arguments: true          # count arguments that break the full schema")
    return "\n".join(lines) + "\n"


def _system_prompt_lines(facts: TrainingFacts) -> list[str]:
    prompts = facts.system_prompts
    if len(prompts) == 1 and None not in prompts:
        (text,) = prompts
        return [
            "# Every example opens with this system prompt: the model learned it.",
            "system_prompt:",
            "  mode: replace",
            f"  text: {json.dumps(text, ensure_ascii=False)}",
        ]
    if set(prompts) == {None}:
        return ["# No example has a system prompt: the client's is kept (system_prompt: keep)."]
    return [
        f"# The examples' system prompts differ ({len(prompts)} kinds, none the rule): the",
        "# client's is kept. Set system_prompt yourself if one of them is the one to serve.",
    ]


def _parallel_lines(facts: TrainingFacts) -> list[str]:
    """The value the examples agree on: one value wherever it is set, and no example that
    leaves it unset making parallel calls (which only `true`, the API's default, allows)."""
    set_values = {value for value in facts.parallel if value is not None}
    unset = facts.parallel[None]
    if not set_values:
        return [
            "# No example sets parallel_tool_calls (training used the API's default, true);",
            f"# {facts.parallel_calls[None]} example(s) make parallel calls. Left to the client.",
        ]
    if len(set_values) == 1 and not (False in set_values and facts.parallel_calls[None]):
        (value,) = set_values
        text = str(value).lower()
        where = f"{facts.parallel[value]} example(s) set parallel_tool_calls: {text}"
        also = f"; the {unset} that do not make no parallel call" if unset else ""
        return [f"# {where}{also}.", f"parallel_tool_calls: {text}"]
    counts = ", ".join(f"{n} {str(v).lower()}" for v, n in facts.parallel.items() if v is not None)
    return [
        f"# The examples set parallel_tool_calls differently ({counts}, {unset} unset): left "
        "to the client."
    ]


class PolicyInitError(Exception):
    """The policy cannot be written (a file exists, the training file cannot be read)."""


def init_policy(train: Path, name: str, mode: str, out_dir: Path, force: bool) -> list[Path]:
    """Write `NAME.tools.json` and `NAME.yaml` under `out_dir`; the paths written."""
    tools_path, policy_path = out_dir / f"{name}.tools.json", out_dir / f"{name}.yaml"
    existing = [str(path) for path in (tools_path, policy_path) if path.exists()]
    if existing and not force:
        raise PolicyInitError(f"{', '.join(existing)} exist(s); pass --force to overwrite")
    extraction: Extraction = extract_tools(train)
    facts = read_facts(train)
    out_dir.mkdir(parents=True, exist_ok=True)
    tools_path.write_text(jsonutil.dumps_pretty(extraction.tools) + "\n", encoding="utf-8")
    policy_path.write_text(
        policy_text(name, train, mode, facts, len(extraction.tools)), encoding="utf-8"
    )
    return [tools_path, policy_path]
