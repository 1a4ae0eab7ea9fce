"""The tool-definition step: identical, slim, unknown tools, and the clean-up after them.

One step for both APIs: a `ToolShape` says how a function tool is written — chat's nested
`{type, function: {name, ...}}` or the Responses API's flat `{type, name, ...}` — and which
of the policy's prepared definitions (converted once, at load) match it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from proxy import jsonutil
from proxy.errors import InvalidRequest, echo
from proxy.jsonutil import JsonList
from proxy.rewrite.fields import (
    flat_function_name,
    flat_tool_choice_names,
    function_name,
    read_tools,
    tool_choice_names,
)
from proxy.rewrite.policy import Policy, SlimmedTool
from proxy.rewrite.result import (
    TOOL_DRIFT_UNDONE,
    TOOL_DROPPED_UNKNOWN,
    TOOL_OMITTED,
    TOOL_SLIMMED,
    TOOL_UNKNOWN_PASSED,
    TOOLS_EMPTIED,
    Body,
    Change,
)
from proxy.rewrite.schema import SchemaTooDeep, SlimLevel, slim_function, slim_tool

# Fields upstreams refuse when there is no tool left (see the OpenAI contract notes).
_TOOLS_ONLY_FIELDS = ("tools", "tool_choice", "parallel_tool_calls")


@dataclass(frozen=True)
class ToolShape:
    """How one API writes function tools, and the policy's definitions in that form."""

    name_of: Callable[[Any, int], str | None]  # a tool's function name; None: not a function
    choice_names: Callable[[Any], frozenset[str]]  # the functions `tool_choice` names
    training: Callable[[Policy], Mapping[str, dict[str, Any]]]
    slimmed: Callable[[Policy], Mapping[str, SlimmedTool]]
    slim: Callable[[dict[str, Any], SlimLevel], dict[str, Any] | None]
    function_param: str  # where a tool's function object is, for error messages


CHAT_TOOLS = ToolShape(
    name_of=function_name,
    choice_names=tool_choice_names,
    training=lambda policy: policy.training_tools,
    slimmed=lambda policy: policy.slimmed_tools,
    slim=slim_tool,
    function_param="tools[{index}].function",
)
FLAT_TOOLS = ToolShape(
    name_of=flat_function_name,
    choice_names=flat_tool_choice_names,
    training=lambda policy: policy.flat_training_tools,
    slimmed=lambda policy: policy.flat_slimmed_tools,
    slim=slim_function,
    function_param="tools[{index}]",
)


@dataclass(frozen=True)
class _Request:
    """What deciding about one tool needs to know about the request."""

    policy: Policy
    shape: ToolShape
    forced: frozenset[str]  # functions named by tool_choice: never omitted
    changes: list[Change]


def rewrite_tool_definitions(body: Body, policy: Policy, changes: list[Change]) -> Body:
    """Runs when `tools.mode` is identical or slim, or `tools.unknown` is not pass.

    Replaces, slims or removes function tools (it never adds one); other tool kinds pass as
    sent. When no tool is left it removes `tools`, `tool_choice` and `parallel_tool_calls`.
    """
    return _rewrite_tools(body, policy, changes, CHAT_TOOLS)


def rewrite_flat_tool_definitions(body: Body, policy: Policy, changes: list[Change]) -> Body:
    """`rewrite_tool_definitions` for the Responses API's flat function tools; its other tool
    kinds (hosted tools, `custom`, `mcp`, `namespace`, ...) pass as sent, never unknown."""
    return _rewrite_tools(body, policy, changes, FLAT_TOOLS)


def _rewrite_tools(body: Body, policy: Policy, changes: list[Change], shape: ToolShape) -> Body:
    spec = policy.spec.tools
    if spec.mode == "passthrough" and spec.unknown == "pass":
        return body
    tools = read_tools(body)
    if not tools:
        return body
    request = _Request(policy, shape, shape.choice_names(body.get("tool_choice")), changes)
    kept = _memoized(tools, request) if type(tools) is JsonList else _kept(tools, request)
    if _same_tools(kept, tools):
        return body
    if not kept:
        changes.append(Change(TOOLS_EMPTIED))
        return {key: value for key, value in body.items() if key not in _TOOLS_ONLY_FIELDS}
    return {**body, "tools": kept}


def _kept(tools: list[Any], request: _Request) -> list[Any]:
    """The tools to send in place of `tools`, each decided on its own."""
    kept = []
    for index, tool in enumerate(tools):
        name = request.shape.name_of(tool, index)
        new_tool = tool if name is None else _rewrite_function(tool, name, index, request)
        if new_tool is not None:
            kept.append(new_tool)
    return kept


def _memoized(tools: JsonList, request: _Request) -> list[Any]:
    """`_kept` for a shared list, decided once per policy, list text and forced functions.

    A deterministic function of those three, so the memo changes no outcome: it saves
    comparing every tool with its training definition, and serialising the result, on every
    request that sends the same tools. A refused request is not memoized (it raises).
    """
    memo = request.policy.tool_rewrites
    key = (tools.json, request.forced)
    found = memo.get(key)
    if found is None:
        reported: list[Change] = []
        kept = _kept(tools, replace(request, changes=reported))
        shared = tools if _same_tools(kept, tools) else JsonList(kept, jsonutil.dumps(kept))
        found = (shared, tuple(reported))
        memo.put(key, found)
    request.changes.extend(found[1])
    return found[0]


def _same_tools(kept: list[Any], tools: list[Any]) -> bool:
    """Whether every tool was kept as it was (the same objects, in the same order)."""
    return kept is tools or (
        len(kept) == len(tools) and all(a is b for a, b in zip(kept, tools, strict=True))
    )


def _rewrite_function(
    tool: dict[str, Any], name: str, index: int, request: _Request
) -> dict[str, Any] | None:
    """The tool to send in place of `tool` (the same object if unchanged), or None to drop it."""
    if name in request.shape.training(request.policy):
        return _trained(tool, name, request)
    return _untrained(tool, name, index, request)


def _trained(tool: dict[str, Any], name: str, request: _Request) -> dict[str, Any] | None:
    policy, shape = request.policy, request.shape
    mode = policy.spec.tools.mode
    training = shape.training(policy)[name]
    if mode == "passthrough":
        return tool
    target, bytes_removed = training, 0
    if mode == "slim":
        prepared = shape.slimmed(policy)[name]
        if prepared.definition is None and name not in request.forced:
            request.changes.append(Change(TOOL_OMITTED, name, prepared.bytes_removed))
            return None
        # A function the client forces keeps its full training definition: it must stay
        # callable with the arguments the model learned.
        if prepared.definition is not None:
            target, bytes_removed = prepared.definition, prepared.bytes_removed
    # Equal content is not reported (so a second rewrite reports nothing), but the training
    # object is sent anyway: its key order is the one the model saw.
    if tool != target:
        action = TOOL_SLIMMED if target is not training else TOOL_DRIFT_UNDONE
        request.changes.append(Change(action, name, bytes_removed))
    return target


def _untrained(
    tool: dict[str, Any], name: str, index: int, request: _Request
) -> dict[str, Any] | None:
    spec = request.policy.spec.tools
    if spec.unknown == "reject":
        raise InvalidRequest(
            f"The function `{echo(name)}` is not one this model was trained with; "
            f"it accepts: {', '.join(request.policy.training_tools)}.",
            param=request.shape.function_param.format(index=index) + ".name",
            code="unknown_tool",
        )
    if spec.unknown == "drop":
        if name in request.forced:
            raise InvalidRequest(
                f"tool_choice names `{echo(name)}`, which this model was not trained with, "
                "so the tool is removed from the request.",
                param="tool_choice",
                code="unknown_tool",
            )
        request.changes.append(Change(TOOL_DROPPED_UNKNOWN, name, _bytes_saved(tool, None)))
        return None
    if request.shape.training(request.policy):
        # Passes, as `unknown: pass` says; said, since the model never saw it in training.
        request.changes.append(Change(TOOL_UNKNOWN_PASSED, name))
    if spec.mode == "slim":
        return _slim_untrained(tool, name, index, request)
    return tool


def _slim_untrained(
    tool: dict[str, Any], name: str, index: int, request: _Request
) -> dict[str, Any] | None:
    """Slims the request's own definition: the only one there is for this function."""
    level = request.policy.spec.tools.slim_levels.level(name)
    if level == "omit_function" and name in request.forced:
        return tool
    try:
        slimmed = request.shape.slim(tool, level)
    except SchemaTooDeep as exc:
        param = request.shape.function_param.format(index=index) + ".parameters"
        raise InvalidRequest(
            f"Invalid '{param}': {exc}.", param=param, code="invalid_value"
        ) from exc
    if slimmed is None:
        request.changes.append(Change(TOOL_OMITTED, name, _bytes_saved(tool, None)))
    elif slimmed is not tool:
        request.changes.append(Change(TOOL_SLIMMED, name, _bytes_saved(tool, slimmed)))
    return slimmed


def _bytes_saved(before: dict[str, Any], after: dict[str, Any] | None) -> int:
    """Serialised bytes of `before` minus those of `after` (None: nothing left)."""
    try:
        return len(jsonutil.dumps(before)) - (
            len(jsonutil.dumps(after)) if after is not None else 0
        )
    except TypeError:
        # orjson parses deeper nesting than it serialises (1024 vs 255 levels); such a tool
        # is forwarded all the same, its bytes are not counted.
        return 0
