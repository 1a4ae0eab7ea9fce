"""`tuned-proxy training rewrite`: a training file whose tools are what the proxy will send.

A team that wants to train on slim definitions must serve the very same slim definitions,
and a team that trains on full ones wants every example to use the one canonical definition.
Both are the policy's tool transformation, so this command does not slim anything itself:
it runs the proxy's own rewrite engine on each example, as if the example were a request,
with the policy reduced to its tool definitions and legacy translation. What the engine
puts in `tools` is, by construction, what the proxy sends upstream for that policy.

The rest of the policy (system prompt, parallel_tool_calls, logit_bias, tool_choice) is
about serving, not about what the model is trained on, and is not applied. Examples the
rewrite leaves unchanged are copied byte for byte; the others are written as compact JSON.

A preference (DPO) example's `input` is rewritten as a chat example is; its outputs, text
replies to that input, are left as they are.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
import sys
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from proxy import jsonutil
from proxy.errors import ConfigError, InvalidRequest
from proxy.policies import load_policy
from proxy.rewrite import Change, rewrite
from proxy.rewrite.fields import invalid_type
from proxy.rewrite.policy import Policy, PolicySpec
from proxy.rewrite.result import (
    LEGACY_FUNCTIONS_TRANSLATED,
    TOOL_DRIFT_UNDONE,
    TOOL_DROPPED_UNKNOWN,
    TOOL_OMITTED,
    TOOL_SLIMMED,
)
from proxy.training.findings import Finding, error, warning
from proxy.training.kinds import conversation
from proxy.training.reader import (
    UTF8_BOM,
    RawLine,
    TrainingFileError,
    is_blank,
    parse_example,
    read_lines,
    starts_with_bom,
)

# Ids that say nothing about their call: the fine-tuning guide's "call_id", numbered ones
# ("call_1", "1"), and the engine's own `call_legacy_N` from translating function_call.
PLACEHOLDER_CALL_ID = re.compile(r"(?i)(call[_-]?)?(id|\d+)?|call_legacy_\d+")


@dataclass(frozen=True)
class RewrittenExample:
    data: dict[str, Any]
    changes: list[Change]  # what the engine did
    call_ids_replaced: int
    changed: bool  # False: `data` is the example as read


class TrainingRewriter:
    """Rewrites examples with the training part of one policy."""

    def __init__(self, policy: Policy) -> None:
        self.policy = _training_part(policy)

    def rewrite(
        self, example: dict[str, Any], *, new_call_ids: Iterator[str] | None = None
    ) -> RewrittenExample:
        """`example` with the policy's tools; with `new_call_ids`, placeholder ids replaced.

        What is rewritten is the conversation: the example, or a preference example's input.
        Raises InvalidRequest where the proxy would refuse it as a request (a malformed
        `tools`, a function the policy rejects), or a preference example's input is no object.
        """
        before = conversation(example)
        if before is None:
            raise InvalidRequest(
                "Missing 'input': a preference example holds its conversation there."
            )
        if not isinstance(before, dict):
            raise invalid_type("input", "an object", before)
        try:
            result = rewrite(before, self.policy)
        except InvalidRequest as exc:
            if before is example:
                raise
            # The engine names request fields; in a preference example they are under `input`.
            param = f"input.{exc.param}" if exc.param else "input"
            raise InvalidRequest(f"in `input`: {exc.message}", param=param) from exc
        after = result.body
        replaced = 0
        if new_call_ids is not None and isinstance(after.get("messages"), list):
            messages, replaced = replace_placeholder_ids(after["messages"], new_call_ids)
            after = {**after, "messages": messages}
        changed = _differs(after, before)
        data = after if before is example else {**example, "input": after}
        return RewrittenExample(data, result.changes, replaced, changed)


def _differs(rewritten: dict[str, Any], example: dict[str, Any]) -> bool:
    """Whether the rewrite changed the example's bytes (key order included)."""
    if list(rewritten) == list(example) and all(
        rewritten[key] is example[key] for key in rewritten
    ):
        return False  # the engine shares what it does not change: nothing to serialise
    # `identical` sends the training objects even when they equal the example's: compare
    # what would be written.
    return jsonutil.dumps(rewritten) != jsonutil.dumps(example)


def _training_part(policy: Policy) -> Policy:
    """`policy` reduced to the steps that concern training data: tools and legacy functions.

    The prepared definitions (`training_tools`, `slimmed_tools`) are kept as they are: they
    depend only on the tools spec, which does not change.
    """
    spec = PolicySpec(
        training_tools=policy.spec.training_tools,
        tools=policy.spec.tools,
        legacy_functions="translate",
    )
    return dataclasses.replace(policy, spec=spec)


def rewrite_example(
    example: dict[str, Any], policy: Policy, *, new_call_ids: Iterator[str] | None = None
) -> RewrittenExample:
    """One example rewritten by the training part of `policy` (see `TrainingRewriter`)."""
    return TrainingRewriter(policy).rewrite(example, new_call_ids=new_call_ids)


# --- call ids ---------------------------------------------------------------------------------


def is_placeholder(call_id: Any, uses_in_example: int) -> bool:
    """Whether a call id must be replaced: missing, a placeholder, or shared by several calls."""
    if not isinstance(call_id, str):
        return True
    return uses_in_example > 1 or PLACEHOLDER_CALL_ID.fullmatch(call_id) is not None


def replace_placeholder_ids(messages: list[Any], new_ids: Iterator[str]) -> tuple[list[Any], int]:
    """`messages` with placeholder call ids replaced, and the answers' `tool_call_id`s with them.

    An answer follows the assistant message whose call it answers, so ids are matched within
    that turn only, in order: a placeholder reused by several calls maps each answer to the
    right call. Returns the messages (the same list when nothing changed) and the count.
    """
    uses = Counter(
        _hashable(call.get("id"))
        for message in messages
        for call in _tool_calls(message)
        if call is not None
    )
    new_messages = list(messages)
    replacements: dict[Any, deque[str]] = {}  # old id -> new ids of this turn, in call order
    replaced = 0
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role == "tool":
            queue = replacements.get(_hashable(message.get("tool_call_id")))
            if queue:
                new_messages[index] = {**message, "tool_call_id": queue.popleft()}
            continue
        replacements = {}
        if role == "assistant" and isinstance(message.get("tool_calls"), list):
            calls = []
            for call in message["tool_calls"]:
                call_id = call.get("id") if isinstance(call, dict) else None
                if isinstance(call, dict) and is_placeholder(call_id, uses[_hashable(call_id)]):
                    new_id = next(new_ids)
                    replacements.setdefault(_hashable(call.get("id")), deque()).append(new_id)
                    call = _with_id(call, new_id)
                    replaced += 1
                calls.append(call)
            new_messages[index] = {**message, "tool_calls": calls}
    return (new_messages if replaced else messages), replaced


def _tool_calls(message: Any) -> list[dict[str, Any] | None]:
    if not isinstance(message, dict) or not isinstance(message.get("tool_calls"), list):
        return []
    return [call if isinstance(call, dict) else None for call in message["tool_calls"]]


def _hashable(value: Any) -> Any:
    # An id that is not a string (a malformed one) is matched as "no id".
    return value if isinstance(value, str) else None


def _with_id(call: dict[str, Any], new_id: str) -> dict[str, Any]:
    if "id" in call:
        return {**call, "id": new_id}  # same position
    return {"id": new_id, **call}  # where OpenAI puts it


def derived_call_ids(seed: bytes) -> Iterator[str]:
    """`call_<24 hex>` ids derived from `seed`: the output is the same on every run."""
    for counter in itertools.count():
        digest = hashlib.sha256(seed + counter.to_bytes(8, "big")).hexdigest()
        yield f"call_{digest[:24]}"


# --- the file ---------------------------------------------------------------------------------


@dataclass
class _Removed:
    first_line: int
    examples: int = 0


@dataclass
class RewriteReport:
    examples: int = 0
    changed: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    bytes_removed: int = 0
    call_ids_replaced: int = 0
    errors: int = 0
    # functions called in an example whose tools the policy no longer offers
    removed_but_called: dict[str, _Removed] = field(default_factory=dict)


class _FileRewrite:
    def __init__(self, path: Path, policy: Policy, *, new_call_ids: bool) -> None:
        self.path = path
        self.rewriter = TrainingRewriter(policy)
        self.new_call_ids = new_call_ids
        self.report = RewriteReport()

    def write(self, sink: BinaryIO) -> None:
        if starts_with_bom(self.path):
            sink.write(UTF8_BOM)  # Azure wants it: keep it where it was
        for line in read_lines(self.path):
            if is_blank(line):
                continue
            output = self._rewrite_line(line)
            if output is not None:
                sink.write(output)

    def _rewrite_line(self, line: RawLine) -> bytes | None:
        """The line to write, or None after reporting why it cannot be rewritten."""
        self.report.examples += 1
        number, data = line.number, line.data
        example = parse_example(line)
        if isinstance(example, Finding):
            self.fail(number, example)
            return None
        ids = derived_call_ids(f"{number}:".encode() + data) if self.new_call_ids else None
        try:
            rewritten = self.rewriter.rewrite(example, new_call_ids=ids)
        except InvalidRequest as exc:
            self.fail(number, error(exc.message, "run `tuned-proxy training check` on the file"))
            return None
        self._count(number, example, rewritten)
        if not rewritten.changed:
            return data if data.endswith(b"\n") else data + b"\n"
        return jsonutil.dumps(rewritten.data) + b"\n"

    def fail(self, number: int, finding: Finding) -> None:
        self.report.errors += 1
        print(dataclasses.replace(finding, line=number).format(str(self.path)), file=sys.stderr)

    def _count(self, number: int, before: dict[str, Any], after: RewrittenExample) -> None:
        report = self.report
        report.changed += after.changed
        report.actions.update(change.action for change in after.changes)
        report.bytes_removed += sum(change.bytes_removed for change in after.changes)
        report.call_ids_replaced += after.call_ids_replaced
        rewritten, original = conversation(after.data), conversation(before)
        for name in _called(rewritten) - _offered(rewritten):
            if name in _offered(original) or name in _legacy_offered(original):
                removed = report.removed_but_called.setdefault(name, _Removed(number))
                removed.examples += 1


def _called(data: dict[str, Any]) -> set[str]:
    messages = data.get("messages")
    names = set()
    for message in messages if isinstance(messages, list) else []:
        for call in _tool_calls(message):
            function = call.get("function") if call is not None else None
            if isinstance(function, dict) and isinstance(function.get("name"), str):
                names.add(function["name"])
    return names


def _offered(data: dict[str, Any]) -> set[str]:
    tools = data.get("tools")
    return {
        tool["function"]["name"]
        for tool in (tools if isinstance(tools, list) else [])
        if isinstance(tool, dict)
        and isinstance(tool.get("function"), dict)
        and isinstance(tool["function"].get("name"), str)
    }


def _legacy_offered(data: dict[str, Any]) -> set[str]:
    functions = data.get("functions")
    return {
        function["name"]
        for function in (functions if isinstance(functions, list) else [])
        if isinstance(function, dict) and isinstance(function.get("name"), str)
    }


def removed_but_called_warnings(report: RewriteReport) -> list[Finding]:
    findings = []
    for name, removed in report.removed_but_called.items():
        count = f"{removed.examples} example{'' if removed.examples == 1 else 's'}"
        found = warning(
            f"`{name}` is called in {count} (the first here) but the policy removes it from "
            "their tools, so `training check` reports those calls",
            "train on a definition the model will be served: give the function another slim "
            "level in the policy, or drop those examples",
        )
        findings.append(dataclasses.replace(found, line=removed.first_line))
    return findings


def format_report(out: Path, policy: str, report: RewriteReport) -> str:
    actions = report.actions
    tools = (
        f"{actions[TOOL_SLIMMED]} slimmed, {actions[TOOL_DRIFT_UNDONE]} made identical, "
        f"{actions[TOOL_OMITTED] + actions[TOOL_DROPPED_UNKNOWN]} removed"
    )
    average = report.bytes_removed // report.examples if report.examples else 0
    return "\n".join(
        [
            f"{out}: {report.examples} examples rewritten with policy {policy}, "
            f"{report.changed} changed",
            f"  tool definitions: {tools}; {report.bytes_removed:,} bytes removed "
            f"({average:,} per example)",
            f"  legacy functions converted to tools: {actions[LEGACY_FUNCTIONS_TRANSLATED]} "
            "examples",
            f"  call ids replaced: {report.call_ids_replaced}",
        ]
    )


def run_rewrite(path: Path, policy_path: Path, out: Path, *, new_call_ids: bool) -> int:
    """The body of `tuned-proxy training rewrite`: writes `out`, reports on stderr.

    The policy's name is its file's stem. Nothing is written when an example cannot be
    rewritten (exit 1): a training file missing some examples is worse than none.
    """
    try:
        policy = load_policy(policy_path, policy_path.stem)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 1
    job = _FileRewrite(path, policy, new_call_ids=new_call_ids)
    partial = out.with_name(out.name + ".partial")
    try:
        with partial.open("wb") as sink:
            job.write(sink)
        if job.report.errors:
            print(f"error: {out} not written", file=sys.stderr)
            return 1
        partial.replace(out)
    except (TrainingFileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        partial.unlink(missing_ok=True)
    for finding in removed_but_called_warnings(job.report):
        print(finding.format(str(path)), file=sys.stderr)
    print(format_report(out, policy.name, job.report), file=sys.stderr)
    return 0
