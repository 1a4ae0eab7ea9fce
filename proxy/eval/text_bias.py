"""A variant that biases by text (`logit_bias.text`) is measured with its bias, or not at all.

When the proxy serves, a text bias is resolved in the background and applied once its
upstream's tokenizer has answered; requests that come first go without it (counted as
`logit_bias_pending`). An eval must not measure such requests as the variant's: they would be
another policy's answers under its name, and the report could not tell. So before the first
case is sent, the chosen variants' texts are resolved here, through the same tokenizer calls,
and the run starts from a config that already carries the ids. A tokenizer that does not
answer stops the eval; a text that is not one token is left out, as `serve` does, and said.
"""

from __future__ import annotations

from proxy.config import Runtime
from proxy.text_bias import resolve_once, text_targets, with_resolved


class TextBiasUnresolved(Exception):
    """A chosen variant's `logit_bias.text` could not be resolved; the message says why."""


async def resolve_text_bias(
    runtime: Runtime, route: str, variants: tuple[str, ...]
) -> tuple[Runtime, list[str]]:
    """`runtime` with the texts of the chosen variants of `route` resolved, and one line per
    text saying what it became. Raises `TextBiasUnresolved` when a tokenizer does not answer."""
    chosen = {id(t) for t in runtime.routes[route].variants if t.name in variants}
    targets = [t for t in text_targets(runtime) if id(t) in chosen]
    if not targets:
        return runtime, []
    resolution = await resolve_once(targets)
    if resolution.unreachable:
        (upstream, model), why = next(iter(resolution.unreachable.items()))
        names = [t.name for t in targets if (t.upstream_name, t.model) == (upstream, model)]
        raise TextBiasUnresolved(
            f"variant {', '.join(names)}: logit_bias.text not resolved on {upstream}/{model} "
            f"({why}); without it the variant would be measured without its bias "
            "(`tuned-proxy check --resolve` asks the tokenizer)"
        )
    notes = []
    for target in targets:
        key = (target.upstream_name, target.model)
        for text, token in resolution.ids.get(key, {}).items():
            notes.append(f"{target.name}: logit_bias.text {text!r} is token {token}")
        for text, tokens in resolution.not_one_token.get(key, {}).items():
            notes.append(
                f"{target.name}: logit_bias.text {text!r} is {len(tokens)} tokens {tokens}, "
                "not one: left out"
            )
    return with_resolved(runtime, resolution), notes
