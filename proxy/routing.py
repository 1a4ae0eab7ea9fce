"""Routing: which route a request names, and which of its variants serves it.

Choosing is a pure sampler plus a seed: `choose_variant(variants, u)` with `u` in [0, 1) from
`sticky_uniform(route, key)` (SHA-256, so every replica assigns a key to the same variant with
no shared state) or from a random number when the route or the request has no sticky key.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from proxy.config import Route, Runtime, Target
from proxy.errors import InvalidRequest, ModelNotFound, echo

VARIANT_HEADER = "x-tuned-proxy-variant"


def find_route(runtime: Runtime, model: str) -> Route:
    route = runtime.routes.get(model)
    if route is None:
        raise ModelNotFound.for_model(model)
    return route


def sticky_uniform(route: str, key: str) -> float:
    """A number in [0, 1) that depends only on the route and the key."""
    digest = hashlib.sha256(f"{route}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def choose_variant(variants: Sequence[Target], u: float) -> Target:
    """The variant whose share of the summed weights contains `u` (weight 0 never wins)."""
    total = sum(v.weight for v in variants)
    point = u * total
    cumulative = 0.0
    for variant in variants:
        cumulative += variant.weight
        if variant.weight > 0 and point < cumulative:
            return variant
    # Only reached through float rounding at u → 1: the last variant that has a share.
    return next(v for v in reversed(variants) if v.weight > 0)


def sticky_key(spec: str | None, headers: Mapping[str, str], body: Mapping[str, Any]) -> str | None:
    """The request's value for the route's `sticky` setting, or None when it has none."""
    if spec is None:
        return None
    source, _, name = spec.partition(":")
    value = headers.get(name) if source == "header" else body.get(name)
    return value if isinstance(value, str) and value else None


def select_variant(
    route: Route,
    headers: Mapping[str, str],
    body: Mapping[str, Any],
    rng: Callable[[], float] = random.random,
) -> Target:
    """Pinned variant (where the route allows it), else sticky hash, else random."""
    pinned = headers.get(VARIANT_HEADER)
    if pinned and route.allow_variant_override:
        variant = route.variant(pinned)
        if variant is None:
            names = ", ".join(v.name for v in route.variants)
            raise InvalidRequest(
                f"route {route.name!r} has no variant {echo(pinned)!r} (variants: {names})",
                param=VARIANT_HEADER,
                code="unknown_variant",
            )
        return variant
    key = sticky_key(route.sticky, headers, body)
    u = sticky_uniform(route.name, key) if key is not None else rng()
    return choose_variant(route.variants, u)
