"""The proxy's upstream connection pool, as aiohttp keeps it: for leak checks in tests."""

from __future__ import annotations

import aiohttp

from proxy.upstream import Upstreams


def pool_counts(upstreams: Upstreams) -> tuple[int, int]:
    """(in use, idle) connections of the upstream pool.

    aiohttp keeps no public count: this reads its connector's own bookkeeping, which is why it
    lives with the tests (a change of aiohttp breaks a test here, not the proxy).
    """
    session = upstreams.session
    if session is None:
        return 0, 0
    connector = session.connector
    if not isinstance(connector, aiohttp.BaseConnector):
        return 0, 0
    idle = sum(len(pool) for pool in connector._conns.values())
    return len(connector._acquired), idle
