"""The steps that shape how the model may call tools: parallel_tool_calls and tool_choice."""

from __future__ import annotations

from proxy.rewrite.fields import has_tools, message_at, read_messages
from proxy.rewrite.policy import Policy
from proxy.rewrite.result import PARALLEL_TOOL_CALLS_SET, TOOL_CHOICE_FORCED, Body, Change


def force_parallel_tool_calls(body: Body, policy: Policy, changes: list[Change]) -> Body:
    """Runs when the policy sets `parallel_tool_calls` and tools are left after the tools step.

    Sets the field to the policy's value (upstreams refuse it without tools).
    """
    wanted = policy.spec.parallel_tool_calls
    if wanted is None or body.get("parallel_tool_calls") is wanted or not has_tools(body):
        return body
    changes.append(Change(PARALLEL_TOOL_CALLS_SET, "true" if wanted else "false"))
    return {**body, "parallel_tool_calls": wanted}


def force_tool_choice_on_user_turn(body: Body, policy: Policy, changes: list[Change]) -> Body:
    """Runs when `tool_choice.on_user_turn` is set; may set `tool_choice`.

    Only when tools are present, the client left the choice to the model (no `tool_choice`,
    or `auto`) and the last message is the user's: after a tool result the model must be
    free to answer in text.
    """
    forced = policy.spec.tool_choice.on_user_turn
    if forced is None or body.get("tool_choice") not in (None, "auto") or not has_tools(body):
        return body
    messages = read_messages(body)
    if not messages or message_at(messages, -1).get("role") != "user":
        return body
    changes.append(Change(TOOL_CHOICE_FORCED, forced))
    return {**body, "tool_choice": forced}
