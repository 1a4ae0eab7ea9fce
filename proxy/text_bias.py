"""Bias by text: a policy's `logit_bias.text` turned into token ids of each serving model.

A token id means something only to one tokenizer (316 is `" to"` for OpenAI's models and
something else for Qwen's), so a policy may name the text it wants to bias instead, and the
proxy asks each target's upstream for its ids (`Upstreams.tokenize`) when a config loads —
at start and at every reload, in the background, never on the request path. Until a target's
texts are resolved, its bias is not applied (the rewrite counts `logit_bias_pending`); once
they are, the runtime is replaced by one whose targets carry the ids, as a reload replaces it.

A text that is not exactly one token is logged and left out; an upstream that does not answer
is asked again, less and less often, until it does or the config is replaced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import structlog

from proxy.config import Runtime, Target
from proxy.errors import UpstreamFailure
from proxy.upstream import Upstreams

logger = structlog.get_logger("tuned_proxy.text_bias")
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0

# (upstream name, model): a tokenizer, which every target on that model shares.
Tokenizer = tuple[str, str]


@dataclass
class Resolution:
    """What the tokenizers said: the ids of each text per tokenizer, and what went wrong."""

    ids: dict[Tokenizer, dict[str, int]] = field(default_factory=dict)
    not_one_token: dict[Tokenizer, dict[str, list[int]]] = field(default_factory=dict)
    unreachable: dict[Tokenizer, str] = field(default_factory=dict)


def text_targets(runtime: Runtime) -> list[Target]:
    """The targets whose policy biases by text."""
    return [
        target
        for route in runtime.routes.values()
        for target in route.targets
        if _biases_by_text(target)
    ]


def _biases_by_text(target: Target) -> bool:
    bias = target.policy.spec.logit_bias
    return bias is not None and bool(bias.text)


async def resolve(upstreams: Upstreams, targets: list[Target]) -> Resolution:
    """Ask each tokenizer for every text its targets bias (once per tokenizer and text)."""
    wanted: dict[Tokenizer, tuple[Target, set[str]]] = {}
    for target in targets:
        bias = target.policy.spec.logit_bias
        texts = set(bias.text) if bias is not None else set()
        key = (target.upstream_name, target.model)
        wanted.setdefault(key, (target, set()))[1].update(texts)
    resolution = Resolution()
    for key, (target, texts) in wanted.items():
        try:
            said = {text: await upstreams.tokenize(target, text) for text in sorted(texts)}
        except UpstreamFailure as exc:
            resolution.unreachable[key] = exc.message
            continue
        resolution.ids[key] = {text: ids[0] for text, ids in said.items() if len(ids) == 1}
        odd = {text: ids for text, ids in said.items() if len(ids) != 1}
        if odd:
            resolution.not_one_token[key] = odd
    return resolution


async def resolve_once(targets: list[Target]) -> Resolution:
    """`resolve` on a client session of its own, closed after: for the commands (`check
    --resolve`, `rewrite --resolve`, `eval`), which ask once, outside a serving app."""
    upstreams = Upstreams()
    await upstreams.start()
    try:
        return await resolve(upstreams, targets)
    finally:
        await upstreams.close()


def with_resolved(runtime: Runtime, resolution: Resolution) -> Runtime:
    """`runtime` with every resolved target's policy carrying its texts' ids."""
    routes = {
        name: replace(
            route,
            variants=tuple(resolved_target(target, resolution) for target in route.variants),
            fallback=tuple(resolved_target(target, resolution) for target in route.fallback),
            shadow=(
                resolved_target(route.shadow, resolution) if route.shadow is not None else None
            ),
        )
        for name, route in runtime.routes.items()
    }
    return replace(runtime, routes=routes)


def resolved_target(target: Target, resolution: Resolution) -> Target:
    """`target` with its policy carrying its texts' ids, where `resolution` has them."""
    bias = target.policy.spec.logit_bias
    ids = resolution.ids.get((target.upstream_name, target.model))
    if bias is None or not bias.text or ids is None:
        return target
    tokens = {str(ids[text]): weight for text, weight in bias.text.items() if text in ids}
    return replace(target, policy=target.policy.with_text_bias(tokens))


def log_resolution(resolution: Resolution) -> None:
    for (upstream, model), odd in resolution.not_one_token.items():
        for text, ids in odd.items():
            logger.warning(
                "logit_bias.text is not one token of the model: left out",
                upstream=upstream,
                model=model,
                text=text,
                token_ids=ids,
            )
    for (upstream, model), why in resolution.unreachable.items():
        logger.warning(
            "logit_bias.text not resolved yet: the bias waits",
            upstream=upstream,
            model=model,
            error=why,
        )
    for (upstream, model), resolved in resolution.ids.items():
        logger.info("logit_bias.text resolved", upstream=upstream, model=model, token_ids=resolved)


# Installs a resolved runtime in place of the one it was resolved from, if that one still
# serves (a reload may have replaced it meanwhile); says whether it did.
Swap = Callable[[Runtime, Runtime], bool]


class TextBiasResolver:
    """Resolves a runtime's text biases in the background and swaps the runtime when done.

    `start(runtime, swap)` after each load; a newer load cancels the work for an older one.
    """

    def __init__(self, upstreams: Upstreams) -> None:
        self.upstreams = upstreams
        self.task: asyncio.Task[None] | None = None

    def start(self, runtime: Runtime, swap: Swap) -> None:
        self.stop()
        targets = text_targets(runtime)
        if targets:
            self.task = asyncio.get_running_loop().create_task(
                self._resolve_until_done(runtime, targets, swap)
            )

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _resolve_until_done(
        self, runtime: Runtime, targets: list[Target], swap: Swap
    ) -> None:
        delay = RETRY_FIRST_S
        while True:
            resolution = await resolve(self.upstreams, targets)
            log_resolution(resolution)
            if resolution.ids:
                resolved = with_resolved(runtime, resolution)
                if not swap(runtime, resolved):
                    return  # replaced by a newer load meanwhile
                runtime = resolved
            if not resolution.unreachable:
                return
            reached = set(resolution.ids)
            targets = [t for t in targets if (t.upstream_name, t.model) not in reached]
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
