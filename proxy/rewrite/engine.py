"""The rewrite: one ordered tuple of steps, applied to a request body.

Pure: dicts in, dicts out, no I/O. Every step is `(body, policy, changes) -> body`, never
mutates what it is given (it shallow-copies the containers it changes and shares the rest),
reports what it did in `changes`, and is a no-op when its part of the policy is absent.
"""

from __future__ import annotations

from collections.abc import Callable

from proxy.rewrite.capability import (
    drop_flat_unsupported_fields,
    drop_unsupported_fields,
    emulate_flat_tool_choice,
    emulate_tool_choice,
)
from proxy.rewrite.legacy import translate_legacy_functions
from proxy.rewrite.logit_bias import apply_logit_bias, skip_unsupported_logit_bias
from proxy.rewrite.policy import Policy
from proxy.rewrite.responses import (
    apply_system_prompt_to_instructions,
    force_tool_choice_on_user_input,
)
from proxy.rewrite.result import LEGACY_FUNCTIONS_TRANSLATED, Body, Change, RewriteResult
from proxy.rewrite.system_prompt import apply_system_prompt
from proxy.rewrite.tool_choice import force_parallel_tool_calls, force_tool_choice_on_user_turn
from proxy.rewrite.tools import rewrite_flat_tool_definitions, rewrite_tool_definitions

Step = Callable[[Body, "Policy", list[Change]], Body]

STEPS: tuple[Step, ...] = (
    # legacy functions become tools first, so every later step sees one shape (and `rewrite`
    # finds its report first)
    translate_legacy_functions,
    # identical / slim / unknown tools; when none is left, tool_choice and
    # parallel_tool_calls go too
    rewrite_tool_definitions,
    apply_system_prompt,
    # these three depend on the tools that are left
    force_parallel_tool_calls,
    force_tool_choice_on_user_turn,
    # after tool_choice: a bias only applies while the model still chooses
    apply_logit_bias,
    # last, on what the policy made: levers the upstream lacks, emulated or removed
    emulate_tool_choice,
    drop_unsupported_fields,
)


# The same policy on a Responses API request (`POST /v1/responses`).
RESPONSES_STEPS: tuple[Step, ...] = (
    rewrite_flat_tool_definitions,
    apply_system_prompt_to_instructions,
    force_parallel_tool_calls,
    force_tool_choice_on_user_input,
    # the Responses API has no logit_bias: a bias that would apply is counted as lost
    skip_unsupported_logit_bias,
    emulate_flat_tool_choice,
    drop_flat_unsupported_fields,
)


def rewrite(body: Body, policy: Policy) -> RewriteResult:
    """`body` rewritten by `policy`; `body` itself is left untouched.

    Raises InvalidRequest when a field the policy needs has the wrong shape, or the policy
    refuses the request (an unknown tool under `unknown: reject`, …). The result's `model`
    is the client's: the caller sets the variant's.
    """
    changes: list[Change] = []
    rewritten = body
    for step in STEPS:
        rewritten = step(rewritten, policy, changes)
    if rewritten is body:
        rewritten = dict(body)  # the caller sets `model` on the result
    # The legacy step runs first: when it translated, its report is the first one.
    legacy = bool(changes) and changes[0].action == LEGACY_FUNCTIONS_TRANSLATED
    return RewriteResult(rewritten, changes, legacy_functions=legacy)


def rewrite_responses(body: Body, policy: Policy) -> RewriteResult:
    """`rewrite` for a Responses API request body (`RESPONSES_STEPS`)."""
    changes: list[Change] = []
    rewritten = body
    for step in RESPONSES_STEPS:
        rewritten = step(rewritten, policy, changes)
    return RewriteResult(rewritten if rewritten is not body else dict(body), changes)
