"""The pure request rewrite: a policy applied to a chat-completions or a Responses body.

`rewrite(body, policy)` (chat) and `rewrite_responses(body, policy)` return the new body and
the list of `Change`s made; the caller counts and logs them. See `engine.STEPS` and
`engine.RESPONSES_STEPS` for each whole rewrite in order.
"""

from proxy.rewrite.engine import RESPONSES_STEPS, STEPS, rewrite, rewrite_responses
from proxy.rewrite.result import ACTIONS, Change, RewriteResult

__all__ = [
    "ACTIONS",
    "RESPONSES_STEPS",
    "STEPS",
    "Change",
    "RewriteResult",
    "rewrite",
    "rewrite_responses",
]
