"""`tuned-proxy check`'s report: what a loaded config does, and what looks like a mistake.

Per route its variants with their split and one line of levers each (what the variant's
policy does to a request); per upstream the levers its server honours; then warnings — a
config that loads may still not do what its author meant: an A/B split without a sticky key,
a policy lever its upstream ignores, a slim policy that omits every function.
"""

from __future__ import annotations

from proxy.config import Capture, Route, Runtime, Target, TracingConfig, UpstreamConfig
from proxy.rewrite.capabilities import Capabilities
from proxy.rewrite.policy import Policy
from proxy.text_bias import Resolution

# What the rewrite does where an upstream lacks a lever (`rewrite/capability.py`).
_WHERE_LACKING = {
    "named_tool_choice": "emulated: only the chosen tools offered, with tool_choice required",
    "tool_choice_required": "left as sent, counted",
    "logit_bias": "removed, counted",
    "parallel_tool_calls": "removed, counted",
    "strict": "removed, counted",
    "stream_usage": "not asked for: streams are not counted in tokens",
}


def report(runtime: Runtime) -> list[str]:
    lines = []
    for route in runtime.routes.values():
        lines += describe_route(route)
    lines += describe_upstreams(runtime)
    policies = sorted(name for name in runtime.policies if name != "passthrough")
    lines.append(f"policies: {', '.join(policies) or 'none'}")
    lines.append(describe_tracing(runtime.config.tracing))
    return lines


def describe_tracing(tracing: TracingConfig) -> str:
    if tracing.otlp_endpoint is None:
        return "tracing: off"
    return (
        f"tracing: OTLP/HTTP to {tracing.otlp_endpoint}, {tracing.sample:.0%} of new traces, "
        f"service {tracing.service_name}"
    )


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
        lines.append(f"    levers: {levers(variant.policy)}")
    for position, target in enumerate(route.fallback, start=1):
        lines.append(f"  fallback {position}: {describe_target(target)}")
    if route.shadow is not None:
        compare = f", compares {route.shadow.compare}" if route.shadow.compare else ""
        lines.append(
            f"  shadow {100 * route.shadow.sample:.2f}% of requests: "
            f"{describe_target(route.shadow)}{compare}"
        )
    if route.capture is not None:
        lines.append(describe_capture(route.capture))
    return lines


def describe_capture(capture: Capture) -> str:
    policy = capture.policy.name if capture.policy is not None else "the served tools"
    redact = f", {len(capture.redact)} redact pattern(s)" if capture.redact else ""
    return (
        f"  capture {100 * capture.sample:.2f}% of {', '.join(sorted(capture.variants))} "
        f"into {capture.dir} (tools of {policy}{redact})"
    )


def levers(policy: Policy) -> str:
    """What the policy does to a request, in one line."""
    spec = policy.spec
    tools = spec.tools
    parts = [f"tools {tools.mode}"]
    if tools.mode == "slim":
        levels = tools.slim_levels
        others = f", {len(levels.functions)} function(s) otherwise" if levels.functions else ""
        parts[0] += f" (default {levels.default}{others})"
    parts.append(f"unknown {tools.unknown}")
    parts.append(f"system prompt {spec.system_prompt.mode}")
    if spec.parallel_tool_calls is not None:
        parts.append(f"parallel_tool_calls {str(spec.parallel_tool_calls).lower()}")
    bias = spec.logit_bias
    if bias is not None:
        # Texts are not token ids until `check --resolve` or the proxy asks the tokenizer.
        what = [f"{len(bias.tokens)} token(s)"] if bias.tokens else []
        if bias.text:
            what.append("text " + ", ".join(repr(text) for text in bias.text))
        parts.append(f"logit_bias {' + '.join(what)} ({bias.when}, sampling {bias.sampling})")
    if spec.tool_choice.on_user_turn is not None:
        parts.append(f"tool_choice {spec.tool_choice.on_user_turn} on a user turn")
    if not spec.validate_arguments:
        parts.append("arguments not checked")
    return ", ".join(parts)


def describe_upstreams(runtime: Runtime) -> list[str]:
    lines = []
    for name, upstream in runtime.config.upstreams.items():
        capabilities = upstream.effective_capabilities()
        lines.append(
            f"upstream {name}: {upstream.kind}, server {upstream.server_name}, "
            f"responses {upstream.responses_mode}; {describe_capabilities(capabilities)}"
        )
    return lines


def describe_capabilities(capabilities: Capabilities) -> str:
    lacking = capabilities.lacking()
    honoured = "every lever" if not lacking else f"lacks {', '.join(lacking)}"
    return honoured + (", tokenizes" if capabilities.tokenize else "")


def warnings(runtime: Runtime) -> list[str]:
    """What looks like a mistake in a config that loads."""
    found = []
    for route in runtime.routes.values():
        found += _split_warnings(route)
        # The shadow too: it is often the new server being tried, where a lever may be missing.
        for target in route.targets:
            found += _lever_warnings(route, target)
            found += _slim_warnings(route, target)
    return list(dict.fromkeys(found))  # one of each, in order


def _split_warnings(route: Route) -> list[str]:
    if route.sticky is not None or sum(1 for v in route.variants if v.weight > 0) < 2:
        return []
    return [
        f"route {route.name} splits traffic between variants without `sticky`: the turns of "
        "one conversation go to different variants (set sticky: header:x-user-id, "
        "body:user, …)"
    ]


def _lever_warnings(route: Route, target: Target) -> list[str]:
    """A lever the policy uses that the target's upstream does not honour."""
    spec, capabilities = target.policy.spec, target.policy.capabilities
    used = {
        "logit_bias": spec.logit_bias is not None,
        "parallel_tool_calls": spec.parallel_tool_calls is not None,
        "tool_choice_required": spec.tool_choice.on_user_turn is not None,
        "strict": any(
            tool["function"].get("strict") is True for tool in target.policy.training_tools.values()
        ),
    }
    return [
        f"route {route.name}, {target.name}: policy {target.policy.name} uses {lever}, which "
        f"upstream {target.upstream_name} ({_server(target.upstream)}) does not honour: "
        f"{_WHERE_LACKING[lever]}"
        for lever, is_used in used.items()
        if is_used and not getattr(capabilities, lever)
    ]


def _slim_warnings(route: Route, target: Target) -> list[str]:
    policy = target.policy
    slimmed = policy.slimmed_tools
    if not slimmed or any(tool.definition is not None for tool in slimmed.values()):
        return []
    return [
        f"route {route.name}, {target.name}: policy {policy.name} omits every training "
        "function (omit_function): the model is offered none of them"
    ]


def _server(upstream: UpstreamConfig) -> str:
    return f"server {upstream.server_name}"


def describe_resolution(resolution: Resolution) -> list[str]:
    """`check --resolve`: each tokenizer's answer for the policies' texts."""
    lines = []
    for (upstream, model), ids in resolution.ids.items():
        for text, token in ids.items():
            lines.append(f"logit_bias.text {text!r} on {upstream}/{model}: token {token}")
    for (upstream, model), odd in resolution.not_one_token.items():
        for text, tokens in odd.items():
            lines.append(
                f"warning: logit_bias.text {text!r} on {upstream}/{model} is {len(tokens)} "
                f"tokens {tokens}, not one: left out"
            )
    for (upstream, model), why in resolution.unreachable.items():
        lines.append(f"error: logit_bias.text on {upstream}/{model} not resolved: {why}")
    return lines
