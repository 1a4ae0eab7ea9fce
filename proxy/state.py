"""Typed keys of the app and the request, and the state they hold (no module globals)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

from proxy.config import Runtime
from proxy.record import RequestRecord
from proxy.shadow import ShadowSender
from proxy.upstream import Upstreams


@dataclass
class ProxyState:
    """What the app serves with. `runtime` is replaced whole on reload, never edited."""

    runtime: Runtime
    upstreams: Upstreams
    shadows: ShadowSender
    draining: bool = False
    reloads: Counter[str] = field(default_factory=Counter)

    def count_reload(self, result: str) -> None:
        self.reloads[result] += 1


STATE: web.AppKey[ProxyState] = web.AppKey("state", ProxyState)
RECORD: web.RequestKey[RequestRecord] = web.RequestKey("record", RequestRecord)
