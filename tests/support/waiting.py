"""Waiting for state that settles after the fact, without measuring how long it took."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    """Wait until `check()` holds, polling; fail naming `what` after `timeout_s`.

    For state that settles after the fact (a socket closed by the peer, a task that ends).
    The timeout only guards against a hang: nothing measures how long it took.
    """
    try:
        async with asyncio.timeout(timeout_s):
            # Polled: sockets and other tasks change this state, and none of them signals it.
            while not check():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"never true within {timeout_s} s: {what}") from None
