"""The pure request rewrite: a policy applied to a chat-completions body.

`rewrite(body, policy)` returns the new body and the list of `Change`s it made; the caller
counts and logs them. See `engine.STEPS` for the whole rewrite in order.
"""

from proxy.rewrite.engine import STEPS, rewrite
from proxy.rewrite.result import ACTIONS, Change, RewriteResult

__all__ = ["ACTIONS", "STEPS", "Change", "RewriteResult", "rewrite"]
