"""Config dicts the tests start proxies on: one route on the fake upstream (`basic_config`),
the same with upstreams that misbehave on purpose (`fault_config`), and the fault matrix."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support.keys import CLIENT_KEYS_ENV, UPSTREAM_KEY_ENV
from tests.support.servers import closed_port

REPO = Path(__file__).resolve().parent.parent.parent
POLICIES = REPO / "policies"

# A route of `fault_config`: (upstream, model) for one variant named `v`, or a whole route.
Route = tuple[str, str] | dict[str, Any]


def basic_config(upstream_url: str, **route: Any) -> dict[str, Any]:
    """One route `chat` with one variant on the fake upstream, as a compatible server."""
    return {
        "client_keys_env": CLIENT_KEYS_ENV,
        "policies_dir": "policies",
        "upstreams": {
            "fake": {
                "kind": "compatible",
                "base_url": f"{upstream_url}/v1",
                "api_key_env": UPSTREAM_KEY_ENV,
            }
        },
        "routes": {
            "chat": {
                "variants": [{"name": "main", "upstream": "fake", "model": "ft-model"}],
                **route,
            }
        },
    }


def fake_variant(
    name: str, model: str, weight: float = 1, policy: str | None = None
) -> dict[str, Any]:
    """A variant of a `basic_config` route on the fake upstream."""
    spec: dict[str, Any] = {"name": name, "upstream": "fake", "model": model, "weight": weight}
    if policy:
        spec["policy"] = policy
    return spec


def mock_config(model: str) -> dict[str, Any]:
    """One route `chat` on the in-process fake model (no server, no keys): for real processes."""
    return {
        "upstreams": {"local": {"kind": "mock"}},
        "routes": {"chat": {"variants": [{"name": "v", "upstream": "local", "model": model}]}},
    }


def fault_config(
    upstream_url: str,
    *,
    routes: Mapping[str, Route] | None = None,
    upstreams: Mapping[str, Mapping[str, Any]] | None = None,
    server: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`basic_config` (route `chat` on the fake upstream) with more upstreams and routes.

    `upstreams` maps a name to changes of the fake upstream's settings (`{"idle_timeout_s":
    0.3}`: the same server with a timeout of its own), or to a whole upstream when it names its
    `kind` (`refusing_upstream()`, `blackholed_upstream(port)`, a mock). `routes` maps a name
    to (upstream, model), a route with one variant `v` whose model's words steer the fake
    upstream (`ft-stall`, `ft-error-503`…), or to a whole route; `chat` may be replaced too.
    `server` is the config's `server` section.
    """
    config = basic_config(upstream_url)
    if server is not None:
        config["server"] = dict(server)
    fake = config["upstreams"]["fake"]
    for name, settings in (upstreams or {}).items():
        config["upstreams"][name] = dict(settings) if "kind" in settings else {**fake, **settings}
    for name, route in (routes or {}).items():
        config["routes"][name] = one_variant(*route) if isinstance(route, tuple) else route
    return config


def one_variant(upstream: str, model: str) -> dict[str, Any]:
    """A route with one variant, `v`."""
    return {"variants": [{"name": "v", "upstream": upstream, "model": model}]}


def refusing_upstream() -> dict[str, Any]:
    """An upstream on a port nothing listens on: every connection is refused."""
    return {"kind": "compatible", "base_url": f"http://127.0.0.1:{closed_port()}/v1"}


def blackholed_upstream(port: int, **timeouts: float) -> dict[str, Any]:
    """An upstream on a `Blackhole`'s port: every connection hangs until its connect timeout."""
    return {"kind": "compatible", "base_url": f"http://127.0.0.1:{port}/v1", **timeouts}


# The fault matrix: route -> (upstream, model), the model's words steering the fake upstream.
FAULT_ROUTES: dict[str, tuple[str, str]] = {
    "dead": ("dead", "m"),
    "blackhole": ("blackhole", "m"),
    "reset": ("fake", "ft-reset"),
    "cut": ("fake", "ft-stream-cut"),
    "stall": ("impatient", "ft-stall"),
    "stream-stall": ("impatient", "ft-stream-stall"),
    "slow": ("hasty", "ft-slow-150"),  # about 1.6 s of events, against 0.6 s
    "bad-json": ("fake", "ft-bad-json"),
    "malformed-json": ("fake", "ft-malformed-json"),
    "stream-error": ("fake", "ft-stream-error"),
    "huge": ("fake", "ft-huge"),
    "err401": ("fake", "ft-error-401"),
    "err429": ("fake", "ft-error-429"),
    "err500": ("fake", "ft-error-500"),
    "err502": ("fake", "ft-error-502"),
    "err503": ("fake", "ft-error-503"),
}


def fault_matrix_config(
    upstream_url: str, blackhole_port: int, more_routes: Mapping[str, Route] | None = None
) -> dict[str, Any]:
    """The route `chat`, and one route per fault of `FAULT_ROUTES` on upstreams with short
    timeouts (and `more_routes`); every scrape of its metrics renders anew, so that a test
    reads the counts before and after one request."""
    return fault_config(
        upstream_url,
        server={"metrics_cache_s": 0},
        upstreams={
            "impatient": {"idle_timeout_s": 0.3},  # first byte and between chunks
            "hasty": {"timeout_s": 0.6},  # the whole exchange
            "dead": refusing_upstream(),
            "blackhole": blackholed_upstream(blackhole_port, connect_timeout_s=0.3),
        },
        routes={**FAULT_ROUTES, **(more_routes or {})},
    )
