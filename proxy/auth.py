"""Client auth: the key a request presents, checked against the configured ones, and the rules
on where a proxy without keys may listen (checked at start and again on every reload).

Without client keys the proxy relays anyone's traffic with the upstream's credential, so it
binds only a loopback address unless the operator says otherwise, and it says so in its log.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from dataclasses import dataclass

from aiohttp import web

from proxy.config import ProxyConfig, Runtime
from proxy.errors import AuthenticationFailed

CREDENTIAL_HEADERS = ("Authorization", "api-key")


def key_matches(presented: str, keys: tuple[str, ...]) -> bool:
    """Constant-time comparison against every configured key (no early exit).

    aiohttp decodes header bytes that are not UTF-8 as lone surrogates: they are compared as
    the bytes they were, never an error.
    """
    given = presented.encode("utf-8", "surrogateescape")
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key.encode())
    return matched


def presented_key(request: web.Request) -> str:
    headers = request.headers
    for name in CREDENTIAL_HEADERS:
        if len(headers.getall(name, ())) > 1:
            # Two credentials: which one a server in front or behind would read is anyone's guess.
            raise AuthenticationFailed(f"The request sends the {name} header more than once.")
    authorization = headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("api-key", "").strip()


def authenticate(request: web.Request, keys: tuple[str, ...]) -> None:
    """Client keys are checked before routing, so an unknown model without a key is a 401."""
    key = presented_key(request)
    if not key:
        raise AuthenticationFailed(
            "Missing API key: send it as 'Authorization: Bearer KEY' or 'api-key: KEY'."
        )
    if not key_matches(key, keys):
        raise AuthenticationFailed("Incorrect API key provided.")


@dataclass(frozen=True)
class Listener:
    """Where `serve` listens and what it was allowed at start: every reload is held to it."""

    host: str
    allow_unauthenticated: bool = False


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refuse_open_bind(runtime: Runtime, listener: Listener) -> str | None:
    """Why `runtime` must not serve on the listener's address, or None if it may."""
    if runtime.client_keys or listener.allow_unauthenticated or is_loopback(listener.host):
        return None
    why = why_no_keys(runtime.config)
    return (
        f"refusing to listen on {listener.host} without client keys ({why}); set keys, "
        "bind a loopback address, or pass --allow-unauthenticated"
    )


def unauthenticated_warning(runtime: Runtime) -> str | None:
    """What the log says when a config serves without client auth; None when it has keys."""
    if runtime.client_keys:
        return None
    return f"serving without client auth: {why_no_keys(runtime.config)}"


def why_no_keys(config: ProxyConfig) -> str:
    env = config.client_keys_env
    if not env:
        return "the config sets no client_keys_env"
    if env not in os.environ:
        return f"environment variable {env} is not set"
    return f"environment variable {env} holds no keys"
