"""How the metrics are written: plain counters and histograms, exported to Prometheus's text
format by one collector at scrape time. Which metrics exist is `metrics.py`'s business.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Hashable, Iterator

from prometheus_client import metrics as prometheus_metrics
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

# The classic text format's content type, which every scraper reads and which prometheus_client
# itself answers a scraper that asks for nothing newer; our names need nothing newer.
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"

# Counters and histograms are plain Python numbers, exported by a collector at scrape time:
# prometheus_client's own metrics take a lock and re-check their labels on every increment,
# which cost several µs per request. No lock is needed because every `observe_*` call and every
# `render()` runs on the proxy's one asyncio event loop (requests, shadow outcomes, SIGHUP and
# `--watch` reloads alike) and none of them awaits part-way. A metric counted from another
# thread would need a lock of its own; `in_flight_requests` stays a prometheus_client Gauge.


def created_series_enabled() -> bool:
    """prometheus_client's switch for `_created` samples, so operators keep their control of it.

    It is set from `PROMETHEUS_DISABLE_CREATED_SERIES` or by `disable_created_metrics()`, and
    prometheus_client's own metrics read it on every scrape; it has no public getter.
    """
    return bool(getattr(prometheus_metrics, "_use_created", True))


class CounterFamily:
    """One counter metric: its series in first-use order, each with its creation time."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        # (values, key, label values, created): a series' value is `values[key]`, so an
        # increment touches only the dict that holds it.
        self._series: list[tuple[Counts, Hashable, tuple[str, ...], float]] = []

    def under(self, *leading: str) -> Counts:
        """The values of the series whose first label values are `leading`."""
        return Counts(self, leading)

    def add_series(self, values: Counts, key: Hashable, labelvalues: tuple[str, ...]) -> None:
        self._series.append((values, key, labelvalues, time.time()))

    def describe(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def export(self, with_created: bool) -> CounterMetricFamily:
        family = self.describe()
        for values, key, labelvalues, created in self._series:
            family.add_metric(labelvalues, values[key], created if with_created else None)
        return family


class Counts(dict[Hashable, float]):
    """One counter's values under fixed leading labels, keyed by the remaining label value(s).

    A key is the remaining label value, a tuple of them, or `()` when there are none. A key seen
    for the first time starts at 0 and joins the counter's series, as a prometheus_client label
    child would; after that an increment is one dict update (`counts[key] += n`). Values are
    floats, as prometheus_client keeps them, so large sums round the same way.
    """

    def __init__(self, family: CounterFamily, leading: tuple[str, ...]) -> None:
        super().__init__()
        self.family = family
        self.leading = leading

    def __missing__(self, key: Hashable) -> float:
        rest = key if isinstance(key, tuple) else (key,)
        self[key] = 0.0
        # Label values are strings, as `labels()` makes them (a status code is keyed as an int).
        self.family.add_series(self, key, self.leading + tuple(str(value) for value in rest))
        return 0.0


class Histogram:
    """One histogram series: a count per bucket (not cumulative) and the sum of observations."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        # The first bound >= value, as prometheus_client's `value <= bound`; the last is +Inf.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class HistogramFamily:
    """One histogram metric: its series in first-use order."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        buckets: tuple[float, ...],
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.bounds = (*buckets, math.inf)
        # The bounds as prometheus_client spells them ("1e-05", "+Inf"); it leaves this unannotated.
        self._le = tuple(floatToGoString(b) for b in self.bounds)  # type: ignore[no-untyped-call]
        self._series: list[tuple[tuple[str, ...], Histogram]] = []

    def series(self, *labelvalues: str) -> Histogram:
        histogram = Histogram(self.bounds)
        self._series.append((labelvalues, histogram))
        return histogram

    def describe(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def export(self, with_created: bool) -> HistogramMetricFamily:
        family = self.describe()
        for labelvalues, histogram in self._series:
            family.add_metric(labelvalues, self._cumulative(histogram), histogram.sum)
            if with_created:
                labels = dict(zip(self.labelnames, labelvalues, strict=True))
                family.samples.append(Sample(f"{self.name}_created", labels, histogram.created))
        return family

    def _cumulative(self, histogram: Histogram) -> list[tuple[str, float]]:
        buckets = []
        total = 0.0
        for le, count in zip(self._le, histogram.counts, strict=True):
            total += count
            buckets.append((le, total))
        return buckets


class LazyHistograms(dict[tuple[()], Histogram]):
    """A histogram series created on its first observation (`lazy[()]`), for optional stages."""

    def __init__(self, family: HistogramFamily, labelvalues: tuple[str, ...]) -> None:
        super().__init__()
        self.family = family
        self.labelvalues = labelvalues

    def __missing__(self, key: tuple[()]) -> Histogram:
        histogram = self[key] = self.family.series(*self.labelvalues)
        return histogram


Family = CounterFamily | HistogramFamily


class Collector:
    """Exports the families to the registry, in the order they were defined."""

    def __init__(self, families: list[Family]) -> None:
        self.families = families

    def describe(self) -> Iterator[Metric]:
        # Lets the registry refuse a second `Metrics` on it, as it refuses duplicate names.
        for family in self.families:
            yield family.describe()

    def collect(self) -> Iterator[Metric]:
        with_created = created_series_enabled()
        for family in self.families:
            yield family.export(with_created)
