"""Confidence intervals for the eval report: the held-out examples are a sample, so every rate
and every difference between variants comes with a 95% interval. Pure functions, no I/O.

Rates — the Wilson score interval (Wilson 1927). For `k` successes in `n` trials,
p̂ = k/n and z the normal quantile (1.96 for 95%):

    centre = (p̂ + z²/2n) / (1 + z²/n)
    half   = z / (1 + z²/n) · sqrt(p̂(1 − p̂)/n + z²/4n²)
    interval = [centre − half, centre + half]

It is the set of p that a score test at level z does not reject, so it stays inside [0, 1]
and is not degenerate at 0/n or n/n, unlike the textbook p̂ ± z·sqrt(p̂(1 − p̂)/n) that fails
precisely where an eval lives (a variant that gets 100/100 right).

Difference of two variants' rates — Newcombe's method 10 for PAIRED proportions (Newcombe,
Statistics in Medicine 1998;17:2635–2650). Every variant answers the same turns, so the
outcomes are paired: a = both right, b = only the first right, c = only the second right,
d = both wrong. With p₁ = (a+b)/n, p₂ = (a+c)/n, D = p₁ − p₂, (l₁, u₁) and (l₂, u₂) their Wilson
intervals, and φ the correlation of the pairs,

    L = D − sqrt((p₁ − l₁)² − 2φ(p₁ − l₁)(u₂ − p₂) + (u₂ − p₂)²)
    U = D + sqrt((u₁ − p₁)² − 2φ(u₁ − p₁)(p₂ − l₂) + (p₂ − l₂)²)
    φ = C / sqrt((a+b)(c+d)(a+c)(b+d)),  C = ad − bc − n/2 if ad − bc > n/2,
                                         C = 0 if 0 ≤ ad − bc ≤ n/2,  C = ad − bc if ad − bc < 0,
    φ = 0 when the denominator is 0.

Pairing matters: two variants that agree on most turns have a much narrower interval for
their difference than two independent samples of the same size would give.

Means of per-turn scores (key accuracy) and of token counts — the normal interval of the
mean, m ± z·s/√n with the sample standard deviation s; for a difference between variants,
the same on the per-turn differences (paired).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z_95 = 1.959963984540054  # the 97.5% quantile of the standard normal distribution


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> Interval:
    """The Wilson score interval of `successes` / `trials`; [0, 1] when there is no trial."""
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes}/{trials}")
    if trials == 0:
        return Interval(0.0, 1.0)
    p = successes / trials
    z2n = z * z / trials
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    # Clamp float noise at the ends (0/n must give exactly 0 as its lower limit).
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class PairedCounts:
    """Outcomes of the same turns under two variants (first, second)."""

    both: int  # a: right under both
    first_only: int  # b
    second_only: int  # c
    neither: int  # d

    @property
    def total(self) -> int:
        return self.both + self.first_only + self.second_only + self.neither

    @classmethod
    def from_outcomes(cls, first: Sequence[bool], second: Sequence[bool]) -> PairedCounts:
        if len(first) != len(second):
            raise ValueError("paired outcomes need the same turns on both sides")
        pairs = list(zip(first, second, strict=True))
        return cls(
            both=sum(1 for x, y in pairs if x and y),
            first_only=sum(1 for x, y in pairs if x and not y),
            second_only=sum(1 for x, y in pairs if y and not x),
            neither=sum(1 for x, y in pairs if not x and not y),
        )


def pair_correlation(counts: PairedCounts) -> float:
    """Newcombe's φ for method 10: the pairs' correlation, shrunk toward 0 when it is positive
    (the n/2 correction), 0 when a margin is empty."""
    a, b, c, d = counts.both, counts.first_only, counts.second_only, counts.neither
    denominator = (a + b) * (c + d) * (a + c) * (b + d)
    if denominator == 0:
        return 0.0
    cross = a * d - b * c
    half_n = counts.total / 2
    if cross > half_n:
        corrected = cross - half_n
    elif cross < 0:
        corrected = float(cross)
    else:
        corrected = 0.0
    return corrected / math.sqrt(denominator)


def square_and_add(
    p1: float, ci1: Interval, p2: float, ci2: Interval, phi: float = 0.0
) -> Interval:
    """The interval of p1 − p2 from each proportion's own interval (Newcombe's
    square-and-add); φ = 0 is the unpaired hybrid score interval."""
    d = p1 - p2
    below1, above1 = p1 - ci1.low, ci1.high - p1
    below2, above2 = p2 - ci2.low, ci2.high - p2
    low = d - math.sqrt(max(0.0, below1**2 - 2 * phi * below1 * above2 + above2**2))
    high = d + math.sqrt(max(0.0, above1**2 - 2 * phi * above1 * below2 + below2**2))
    return Interval(max(-1.0, low), min(1.0, high))


def paired_difference_interval(counts: PairedCounts, z: float = Z_95) -> Interval:
    """Newcombe's method 10 interval of p_first − p_second on paired outcomes."""
    n = counts.total
    if n == 0:
        return Interval(-1.0, 1.0)
    first = counts.both + counts.first_only
    second = counts.both + counts.second_only
    return square_and_add(
        first / n,
        wilson_interval(first, n, z),
        second / n,
        wilson_interval(second, n, z),
        pair_correlation(counts),
    )


@dataclass(frozen=True)
class MeanEstimate:
    mean: float
    interval: Interval
    count: int


def mean_interval(
    values: Sequence[float], bounds: Interval | None = None, z: float = Z_95
) -> MeanEstimate:
    """The mean and its normal interval m ± z·s/√n (s the sample standard deviation), cut to
    `bounds` when the values cannot leave them (a share in [0, 1], a count ≥ 0: on a small
    sample the normal interval would cross them). With fewer than two values the interval is
    the mean itself, as nothing is known of the spread."""
    n = len(values)
    if n == 0:
        return MeanEstimate(0.0, Interval(0.0, 0.0), 0)
    mean = math.fsum(values) / n
    if n < 2:
        return MeanEstimate(mean, Interval(mean, mean), n)
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    half = z * math.sqrt(variance / n)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds.low), min(high, bounds.high)
    return MeanEstimate(mean, Interval(low, high), n)


def paired_mean_difference(
    first: Sequence[float],
    second: Sequence[float],
    bounds: Interval | None = None,
    z: float = Z_95,
) -> MeanEstimate:
    """Mean of first − second over paired values, with its normal interval (cut to the
    bounds of a difference when given)."""
    if len(first) != len(second):
        raise ValueError("paired values need the same turns on both sides")
    return mean_interval([x - y for x, y in zip(first, second, strict=True)], bounds, z)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The `fraction` quantile with linear interpolation between order statistics (numpy's
    default); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    weight = position - below
    return ordered[below] * (1 - weight) + ordered[above] * weight
