"""Bootstrap intervals, exact McNemar and the paired bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from medvlm.eval.stats import _resampled_means, bootstrap_ci, mcnemar_exact, paired_bootstrap, rng_for


def test_bootstrap_is_seeded_and_covers_the_mean() -> None:
    values = np.array([[1.0, 0.0]] * 30 + [[0.0, 0.0]] * 70)
    low, high = bootstrap_ci(values, 2000, rng_for(0, "x"))
    again = bootstrap_ci(values, 2000, rng_for(0, "x"))
    assert np.array_equal(low, again[0]) and np.array_equal(high, again[1])
    assert low[0] < 0.3 < high[0]
    # normal approximation: 0.3 ± 1.96·sqrt(.21/100) = [0.210, 0.390]
    assert low[0] == pytest.approx(0.21, abs=0.03) and high[0] == pytest.approx(0.39, abs=0.03)
    assert low[1] == high[1] == 0.0
    other = bootstrap_ci(values, 2000, rng_for(1, "x"))
    assert not np.array_equal(low, other[0]) or not np.array_equal(high, other[1])


def test_bootstrap_without_data_is_nan() -> None:
    low, high = bootstrap_ci(np.zeros((0, 2)), 100, rng_for(0))
    assert np.isnan(low).all() and np.isnan(high).all()


def test_bootstrap_of_continuous_values_in_chunks() -> None:
    values = np.arange(5000, dtype=float)
    low, high = bootstrap_ci(values, 1000, rng_for(3))  # 5,000 distinct values: drawn in chunks
    assert low[0] < values.mean() < high[0]


def test_multinomial_draws_have_the_index_bootstrap_distribution() -> None:
    # the bootstrap mean of n resampled items has variance (population variance) / n
    values = np.array([[0.0, 0.0], [1.0, 0.5], [1.0, 1.0], [0.0, 1 / 3]] * 25)
    means = _resampled_means(values, 40_000, rng_for(5))
    expected_sd = values.std(axis=0) / np.sqrt(len(values))
    assert means.mean(axis=0) == pytest.approx(values.mean(axis=0), abs=2e-3)
    assert means.std(axis=0) == pytest.approx(expected_sd, rel=0.03)


def test_mcnemar_exact_matches_the_binomial() -> None:
    a = np.array([1, 0, 0, 0, 0, 0, 1, 1], dtype=bool)  # b = 1 (A only), c = 5 (B only), 2 concordant
    b = np.array([0, 1, 1, 1, 1, 1, 1, 1], dtype=bool)
    result = mcnemar_exact(a, b)
    assert (result.b, result.c) == (1, 5)
    assert result.p_value == pytest.approx(14 / 64, abs=1e-12)  # 2·P[X ≤ 1], X ~ Bin(6, ½)
    assert mcnemar_exact(a, a).p_value == 1.0
    assert mcnemar_exact(np.ones(10, bool), np.zeros(10, bool)).p_value == pytest.approx(2 / 1024)


def test_paired_bootstrap() -> None:
    a = np.array([1.0] * 60 + [0.0] * 40)
    b = np.array([1.0] * 40 + [0.0] * 60)
    result = paired_bootstrap(a, b, 2000, rng_for(0))
    assert result.difference == pytest.approx(0.2)
    assert 0.05 < result.ci_low < 0.2 < result.ci_high < 0.35
    assert result.p_value == pytest.approx(2 / 2001)  # no resample has δ ≤ 0
    same = paired_bootstrap(a, a, 500, rng_for(0))
    assert (same.difference, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
