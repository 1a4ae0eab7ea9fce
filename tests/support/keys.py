"""The credentials the tests' proxies hold, and the environment variables that carry them."""

from __future__ import annotations

CLIENT_KEY = "sk-client-test-key"
UPSTREAM_KEY = "sk-upstream-secret-q7Zx9T"  # its tail is what a masked key shows
KEY_TAIL = UPSTREAM_KEY[-4:]  # what OpenAI's 401 (and the fake's) shows of a refused key
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}

# The variables the configs of `tests.support.configs` name.
CLIENT_KEYS_ENV = "TUNED_PROXY_TEST_KEYS"
UPSTREAM_KEY_ENV = "TUNED_PROXY_TEST_UPSTREAM_KEY"


def key_env() -> dict[str, str]:
    """The environment a proxy on those configs needs: the test keys in their variables."""
    return {CLIENT_KEYS_ENV: CLIENT_KEY, UPSTREAM_KEY_ENV: UPSTREAM_KEY}
