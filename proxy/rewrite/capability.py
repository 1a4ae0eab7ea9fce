"""The steps that fit a request to what its upstream honours (`Policy.capabilities`).

They run last, on the request the policy made: a lever the upstream lacks is emulated where
it can be, else removed, and counted either way — never dropped without a report:

- a named `tool_choice` (or `allowed_tools`) without `named_tool_choice`: only the named
  tools are offered, with `tool_choice: required` (or the allowed-tools mode): the model can
  call nothing else (`tool_choice_emulated`);
- `tool_choice: required` without `tool_choice_required`: nothing to emulate it with; left
  as sent and counted (`tool_choice_required_unsupported`);
- `parallel_tool_calls` and a function's `strict` without support: removed
  (`parallel_tool_calls_unsupported`, `strict_unsupported`).

`logit_bias` without support is the bias step's own business (`logit_bias.py`). Both tool
shapes are handled: chat's nested tools and the Responses API's flat ones.
"""

from __future__ import annotations

from typing import Any

from proxy import jsonutil
from proxy.jsonutil import JsonList
from proxy.rewrite.fields import read_tools
from proxy.rewrite.policy import Policy
from proxy.rewrite.result import (
    PARALLEL_TOOL_CALLS_UNSUPPORTED,
    STRICT_UNSUPPORTED,
    TOOL_CHOICE_EMULATED,
    TOOL_CHOICE_REQUIRED_UNSUPPORTED,
    Body,
    Change,
)
from proxy.rewrite.schema import without
from proxy.rewrite.tools import CHAT_TOOLS, FLAT_TOOLS, ToolShape


def emulate_tool_choice(body: Body, policy: Policy, changes: list[Change]) -> Body:
    """Runs when the upstream lacks `named_tool_choice` or `tool_choice_required` (chat)."""
    return _fit_tool_choice(body, policy, changes, CHAT_TOOLS)


def emulate_flat_tool_choice(body: Body, policy: Policy, changes: list[Change]) -> Body:
    """`emulate_tool_choice` for a Responses API request."""
    return _fit_tool_choice(body, policy, changes, FLAT_TOOLS)


def _fit_tool_choice(body: Body, policy: Policy, changes: list[Change], shape: ToolShape) -> Body:
    capabilities = policy.capabilities
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and not capabilities.named_tool_choice:
        body = _offer_only_chosen(body, choice, shape, changes)
    if body.get("tool_choice") == "required" and not capabilities.tool_choice_required:
        changes.append(Change(TOOL_CHOICE_REQUIRED_UNSUPPORTED))
    return body


def _offer_only_chosen(
    body: Body, choice: dict[str, Any], shape: ToolShape, changes: list[Change]
) -> Body:
    """Only the tools `choice` names, and the mode it asks for: what the upstream would make
    of a choice it cannot read. Left as sent when it names no tool the request offers."""
    names = shape.choice_names(choice)
    tools = read_tools(body) or []
    kept = [tool for index, tool in enumerate(tools) if shape.name_of(tool, index) in names]
    if not kept:
        return body
    changes.append(Change(TOOL_CHOICE_EMULATED, ",".join(sorted(names))))
    return {**body, "tools": kept, "tool_choice": _mode_of(choice)}


def _mode_of(choice: dict[str, Any]) -> str:
    """`required` for a named function; the mode of an `allowed_tools` choice (chat keeps it
    under `allowed_tools`, the Responses API beside `tools`)."""
    if choice.get("type") != "allowed_tools":
        return "required"
    allowed = choice.get("allowed_tools")
    mode = (allowed if isinstance(allowed, dict) else choice).get("mode")
    return mode if mode in ("auto", "required") else "auto"


def drop_unsupported_fields(body: Body, policy: Policy, changes: list[Change]) -> Body:
    """Runs when the upstream lacks `parallel_tool_calls` or `strict` (chat)."""
    return _drop_unsupported(body, policy, changes, nested=True)


def drop_flat_unsupported_fields(body: Body, policy: Policy, changes: list[Change]) -> Body:
    """`drop_unsupported_fields` for a Responses API request."""
    return _drop_unsupported(body, policy, changes, nested=False)


def _drop_unsupported(body: Body, policy: Policy, changes: list[Change], nested: bool) -> Body:
    capabilities = policy.capabilities
    if not capabilities.parallel_tool_calls and "parallel_tool_calls" in body:
        changes.append(Change(PARALLEL_TOOL_CALLS_UNSUPPORTED))
        body = without(body, ("parallel_tool_calls",))
    if not capabilities.strict:
        body = _without_strict(body, changes, nested)
    return body


def _without_strict(body: Body, changes: list[Change], nested: bool) -> Body:
    tools = read_tools(body)
    if not tools:
        return body
    if type(tools) is JsonList:
        kept = _shared_without_strict(tools, changes, nested)
    else:
        kept = _tools_without_strict(tools, changes, nested)
    return body if kept is tools else {**body, "tools": kept}


def _shared_without_strict(tools: JsonList, changes: list[Change], nested: bool) -> list[Any]:
    """`_tools_without_strict` for a shared list (the client's, or the tools step's memoized
    outcome), decided once per list: the training definitions the policy put in come back in
    the same shared list every request, and the result keeps its serialised text."""
    key = "without_strict" if nested else "without_strict_flat"
    found = tools.derived.get(key)
    if found is None:
        reported: list[Change] = []
        kept = _tools_without_strict(tools, reported, nested)
        shared = tools if kept is tools else JsonList(kept, jsonutil.dumps(kept))
        found = tools.derived[key] = (shared, tuple(reported))
    changes.extend(found[1])
    return found[0]


def _tools_without_strict(tools: list[Any], changes: list[Change], nested: bool) -> list[Any]:
    """`tools` without their functions' `strict` (`tools` itself when none has one)."""
    kept = [_tool_without_strict(tool, changes, nested) for tool in tools]
    return tools if all(new is old for new, old in zip(kept, tools, strict=True)) else kept


def _tool_without_strict(tool: Any, changes: list[Change], nested: bool) -> Any:
    """`tool` without its function's `strict` (the same object when it has none)."""
    function = tool.get("function") if nested and isinstance(tool, dict) else tool
    if not isinstance(function, dict) or "strict" not in function:
        return tool
    changes.append(Change(STRICT_UNSUPPORTED, str(function.get("name", ""))))
    plain = without(function, ("strict",))
    return {**tool, "function": plain} if nested else plain
