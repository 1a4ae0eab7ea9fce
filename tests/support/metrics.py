"""Readings of a proxy's metrics: samples parsed with Prometheus' own parser, summed by label."""

from __future__ import annotations

from functools import cache

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from proxy.metrics import Metrics
from proxy.state import STATE
from tests.support.servers import RunningProxy

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
# The samples each kind of family exports, by their suffix.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
}


@cache
def exported_names() -> frozenset[str]:
    """Every sample name the proxy's metrics can export (read from a fresh registry)."""
    return frozenset(
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in SUFFIXES[family.type]
    )


def known(name: str) -> str:
    """`name`, failing the test unless the proxy exports it: a count of 0 read under a name it
    never exports would pass whatever the proxy did."""
    assert name in exported_names(), f"the proxy exports no sample called {name}"
    return name


def parse_samples(text: str) -> Samples:
    """Every sample of a `/metrics` text as {(name, labels): value}."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every series of `name` whose labels include `labels`."""
    known(name)
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def samples_of(proxy: RunningProxy) -> Samples:
    """The samples of an in-process proxy, read from its registry (no request, no cache)."""
    return parse_samples(proxy.app[STATE].metrics.render()[0].decode())


async def scrape(url: str) -> Samples:
    """The samples a `GET /metrics` on `url` serves; no key needed."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        assert response.status == 200
        return parse_samples(await response.text())
