"""Routing is a pure sampler plus a seed: pinned `u` shows the split boundaries."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.config import MockUpstream, Route, Target
from proxy.errors import InvalidRequest, ModelNotFound
from proxy.rewrite.policy import PASSTHROUGH
from proxy.routing import (
    VARIANT_HEADER,
    choose_variant,
    select_variant,
    sticky_key,
    sticky_uniform,
)


def target(name: str, weight: float) -> Target:
    return Target(
        name=name,
        upstream_name="local",
        upstream=MockUpstream(kind="mock"),
        model=f"model-{name}",
        policy=PASSTHROUGH,
        weight=weight,
    )


SPLIT = (target("a", 90), target("b", 10))


@pytest.mark.parametrize(
    ("u", "expected"),
    [(0.0, "a"), (0.5, "a"), (0.8999, "a"), (0.9, "b"), (0.95, "b"), (0.999999, "b")],
)
def test_split_boundaries(u: float, expected: str) -> None:
    assert choose_variant(SPLIT, u).name == expected


def test_zero_weight_is_out_of_the_split() -> None:
    variants = (target("off", 0), target("a", 1), target("off2", 0))
    for u in (0.0, 0.3, 0.99999):
        assert choose_variant(variants, u).name == "a"


def test_u_at_one_from_rounding_still_picks_a_weighted_variant() -> None:
    assert choose_variant((target("a", 1), target("z", 0)), 1.0).name == "a"


def test_sticky_uniform_is_in_unit_interval_and_depends_on_route_and_key() -> None:
    u = sticky_uniform("support", "user-1")
    assert 0.0 <= u < 1.0
    assert u == sticky_uniform("support", "user-1")
    assert u != sticky_uniform("support", "user-2")
    assert u != sticky_uniform("other-route", "user-1")


@given(st.text(min_size=1))
def test_any_key_maps_to_the_same_variant_every_time(key: str) -> None:
    route = Route(name="r", variants=SPLIT, sticky="body:user", allow_variant_override=False)
    first = select_variant(route, {}, {"user": key})
    assert all(select_variant(route, {}, {"user": key}) is first for _ in range(3))


def test_sticky_key_sources() -> None:
    headers = {"x-user-id": "u1"}
    body = {"user": "u2", "safety_identifier": "u3", "prompt_cache_key": "u4"}
    assert sticky_key("header:x-user-id", headers, body) == "u1"
    assert sticky_key("body:user", headers, body) == "u2"
    assert sticky_key("body:safety_identifier", headers, body) == "u3"
    assert sticky_key("body:prompt_cache_key", headers, body) == "u4"
    assert sticky_key(None, headers, body) is None
    assert sticky_key("body:user", headers, {"user": 12}) is None
    assert sticky_key("body:user", headers, {"user": ""}) is None


def test_request_without_the_sticky_key_uses_the_random_number() -> None:
    route = Route(name="r", variants=SPLIT, sticky="body:user", allow_variant_override=False)
    assert select_variant(route, {}, {}, rng=lambda: 0.95).name == "b"
    assert select_variant(route, {}, {}, rng=lambda: 0.05).name == "a"


def test_variant_override_only_where_allowed() -> None:
    closed = Route(name="r", variants=SPLIT, sticky=None, allow_variant_override=False)
    opened = Route(name="r", variants=SPLIT, sticky=None, allow_variant_override=True)
    pin = {VARIANT_HEADER: "b"}
    assert select_variant(closed, pin, {}, rng=lambda: 0.0).name == "a"  # ignored
    assert select_variant(opened, pin, {}, rng=lambda: 0.0).name == "b"
    with pytest.raises(InvalidRequest) as info:
        select_variant(opened, {VARIANT_HEADER: "nope"}, {})
    assert info.value.param == VARIANT_HEADER


def test_model_not_found_is_openai_shaped() -> None:
    error = ModelNotFound.for_model("gpt-x")
    assert error.status == 404
    assert error.body()["error"]["code"] == "model_not_found"
