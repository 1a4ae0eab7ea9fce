"""The eval's confidence intervals against published values and reference formulas."""

from __future__ import annotations

import math

import pytest

from proxy.eval.stats import (
    Z_95,
    Interval,
    PairedCounts,
    mean_interval,
    pair_correlation,
    paired_difference_interval,
    paired_mean_difference,
    percentile,
    square_and_add,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [
        # Newcombe, Statistics in Medicine 1998;17:857–872, Table I, Wilson score method.
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_published_values(
    successes: int, trials: int, low: float, high: float
) -> None:
    interval = wilson_interval(successes, trials)
    assert interval.low == pytest.approx(low, abs=5e-5)
    assert interval.high == pytest.approx(high, abs=5e-5)


def score_test_limit(successes: int, trials: int, below: bool) -> float:
    """Reference: the Wilson limit is where the score statistic |p̂ − p| / sqrt(p(1 − p)/n)
    equals z; found by bisection, independently of the closed form."""
    p_hat = successes / trials
    lo, hi = (0.0, p_hat) if below else (p_hat, 1.0)
    for _ in range(200):
        mid = (lo + hi) / 2
        inside = abs(p_hat - mid) <= Z_95 * math.sqrt(mid * (1 - mid) / trials)
        # Below p̂ the rejected region is toward 0; above it, toward 1.
        if inside == below:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


@pytest.mark.parametrize(
    ("successes", "trials"), [(1, 10), (7, 10), (50, 100), (99, 100), (3, 155)]
)
def test_wilson_is_the_inverted_score_test(successes: int, trials: int) -> None:
    interval = wilson_interval(successes, trials)
    assert interval.low == pytest.approx(score_test_limit(successes, trials, True), abs=1e-9)
    assert interval.high == pytest.approx(score_test_limit(successes, trials, False), abs=1e-9)


def test_wilson_edges() -> None:
    assert wilson_interval(0, 0) == Interval(0.0, 1.0)
    assert wilson_interval(0, 5).low == 0.0
    assert wilson_interval(5, 5).high == 1.0
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(6, 5)


@pytest.mark.parametrize(
    ("first", "second", "low", "high"),
    [
        # Newcombe, Statistics in Medicine 1998;17:873–890, Table II, method 10 (unpaired).
        ((56, 70), (48, 80), 0.0524, 0.3339),
        ((9, 10), (3, 10), 0.1705, 0.8090),
    ],
)
def test_square_and_add_without_correlation_matches_published_values(
    first: tuple[int, int], second: tuple[int, int], low: float, high: float
) -> None:
    interval = square_and_add(
        first[0] / first[1],
        wilson_interval(*first),
        second[0] / second[1],
        wilson_interval(*second),
    )
    assert interval.low == pytest.approx(low, abs=5e-5)
    assert interval.high == pytest.approx(high, abs=5e-5)


def reference_newcombe_paired(a: int, b: int, c: int, d: int) -> tuple[float, float]:
    """Newcombe 1998 (Stat Med 17:2635), method 10, written out from the paper's equations."""
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n

    def wilson(x: int) -> tuple[float, float]:
        p, z = x / n, Z_95
        root = z * math.sqrt(4 * n * p * (1 - p) + z * z)
        return (
            max(0.0, (2 * n * p + z * z - root) / (2 * (n + z * z))),
            min(1.0, (2 * n * p + z * z + root) / (2 * (n + z * z))),
        )

    l1, u1 = wilson(a + b)
    l2, u2 = wilson(a + c)
    product = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    if product == 0:
        phi = 0.0
    elif cross > n / 2:
        phi = (cross - n / 2) / math.sqrt(product)
    elif cross < 0:
        phi = cross / math.sqrt(product)
    else:
        phi = 0.0
    delta = math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    epsilon = math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    return p1 - p2 - delta, p1 - p2 + epsilon


@pytest.mark.parametrize(
    "table",
    [(14, 5, 0, 22), (10, 15, 5, 20), (40, 3, 9, 48), (0, 0, 0, 12), (6, 0, 2, 0), (1, 1, 7, 12)],
)
def test_paired_difference_matches_the_reference_formula(table: tuple[int, int, int, int]) -> None:
    interval = paired_difference_interval(PairedCounts(*table))
    low, high = reference_newcombe_paired(*table)
    assert interval.low == pytest.approx(low, abs=1e-12)
    assert interval.high == pytest.approx(high, abs=1e-12)


def test_paired_difference_contains_the_estimate_and_flips_with_the_order() -> None:
    counts = PairedCounts(both=30, first_only=12, second_only=3, neither=5)
    interval = paired_difference_interval(counts)
    estimate = (counts.first_only - counts.second_only) / counts.total
    assert interval.low < estimate < interval.high
    swapped = paired_difference_interval(PairedCounts(30, 3, 12, 5))
    assert swapped.low == pytest.approx(-interval.high)
    assert swapped.high == pytest.approx(-interval.low)


def test_pairing_narrows_the_interval_of_agreeing_variants() -> None:
    # 40 of 50 right under both variants, discordant on only 2 turns: strongly correlated.
    paired = paired_difference_interval(PairedCounts(39, 1, 1, 9))
    unpaired = square_and_add(0.8, wilson_interval(40, 50), 0.8, wilson_interval(40, 50))
    assert paired.high - paired.low < unpaired.high - unpaired.low
    assert pair_correlation(PairedCounts(39, 1, 1, 9)) > 0


def test_paired_counts_from_outcomes() -> None:
    counts = PairedCounts.from_outcomes(
        [True, True, False, False, True], [True, False, True, False, True]
    )
    assert counts == PairedCounts(both=2, first_only=1, second_only=1, neither=1)
    with pytest.raises(ValueError, match="same turns"):
        PairedCounts.from_outcomes([True], [])


def test_mean_interval_is_the_normal_interval() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    estimate = mean_interval(values)
    mean = 4.0
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 4)
    assert estimate.mean == mean
    assert estimate.interval.low == pytest.approx(mean - Z_95 * sd / math.sqrt(5))
    assert estimate.interval.high == pytest.approx(mean + Z_95 * sd / math.sqrt(5))
    assert mean_interval([]).count == 0
    assert mean_interval([7.0]).interval == Interval(7.0, 7.0)


def test_paired_mean_difference_uses_per_turn_differences() -> None:
    difference = paired_mean_difference([10.0, 20.0, 30.0], [9.0, 18.0, 27.0])
    assert difference.mean == pytest.approx(2.0)
    sd = 1.0  # differences 1, 2, 3
    assert difference.interval.low == pytest.approx(2.0 - Z_95 * sd / math.sqrt(3))


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([3.0, 1.0, 2.0, 4.0], 0.5) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.95) == pytest.approx(4.8)
    assert percentile([], 0.5) == 0.0


def test_mean_interval_stays_within_the_bounds_of_its_values() -> None:
    shares = [0.0, 1.0, 1.0]
    unbounded = mean_interval(shares)
    assert unbounded.interval.high > 1.0  # the normal interval crosses 1 on a small sample
    bounded = mean_interval(shares, Interval(0.0, 1.0))
    assert bounded.interval == Interval(unbounded.interval.low, 1.0)
    assert bounded.mean == unbounded.mean
