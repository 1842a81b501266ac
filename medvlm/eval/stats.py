"""Uncertainty for evaluation figures: bootstrap intervals and paired tests.

* :func:`bootstrap_ci` — percentile bootstrap of a mean, several metrics at once, with a seeded
  generator (same seed, same interval); resamples are drawn as multinomial counts over distinct
  values, the same distribution as resampling item indices at a fraction of the cost.
* :func:`mcnemar_exact` — exact (binomial) McNemar test on paired right/wrong outcomes: the
  discordant pairs b (A right, B wrong) and c (A wrong, B right) are Binomial(b + c, ½) under the
  null; two-sided p = min(1, 2 · P[X ≤ min(b, c)]).
* :func:`paired_bootstrap` — resamples items (the same indices for both systems) to give the mean
  difference A − B a percentile interval and a two-sided p-value,
  p = min(1, 2 · min(#{δ* ≤ 0} + 1, #{δ* ≥ 0} + 1) / (B + 1)).

Every interval is over items: it says how much a figure would move on another test set drawn like
this one, not how much a model would move when retrained.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

_CHUNK_CELLS = 2_000_000  # multinomial counts held at once (× 8 bytes)


def rng_for(seed: int, *names: str) -> np.random.Generator:
    """A generator seeded by ``seed`` and a stable hash of ``names`` (independent of call order)."""
    return np.random.default_rng([seed, *(zlib.crc32(name.encode()) for name in names)])


def _resampled_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, metrics) means of bootstrap resamples of the rows of ``values`` (items × metrics).

    Resampling n items with replacement only matters through how many times each distinct value is
    drawn, and those counts are Multinomial(n, frequency / n). Drawing the counts directly gives
    exactly the distribution of the index bootstrap at O(distinct values) per replicate instead of
    O(items): per-item scores take few distinct values (0/1 for accuracies), so 10,000 items cost
    what 10 do. Each column is resampled on its own, which is all a per-metric interval needs.
    """
    n = values.shape[0]
    means = np.empty((n_boot, values.shape[1]))
    for column in range(values.shape[1]):
        distinct, counts = np.unique(values[:, column], return_counts=True)
        chunk = max(1, _CHUNK_CELLS // len(distinct))
        for start in range(0, n_boot, chunk):
            stop = min(start + chunk, n_boot)
            draws = rng.multinomial(n, counts / n, size=stop - start)
            means[start:stop, column] = draws @ distinct / n
    return means


def bootstrap_ci(values: np.ndarray, n_boot: int, rng: np.random.Generator,
                 level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of the mean of each column; (NaN, NaN) columns when there is no data."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.shape[0] == 0 or n_boot <= 0:
        nan = np.full(values.shape[1], np.nan)
        return nan, nan.copy()
    means = _resampled_means(values, n_boot, rng)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail], axis=0)
    return low, high


@dataclass(frozen=True)
class McNemar:
    b: int  # A right, B wrong
    c: int  # A wrong, B right
    p_value: float


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> McNemar:
    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    if only_a + only_b == 0:
        return McNemar(only_a, only_b, 1.0)
    p = binomtest(min(only_a, only_b), only_a + only_b, 0.5, alternative="two-sided").pvalue
    return McNemar(only_a, only_b, float(min(1.0, p)))


@dataclass(frozen=True)
class PairedBootstrap:
    difference: float
    ci_low: float
    ci_high: float
    p_value: float


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int, rng: np.random.Generator,
                     level: float = 0.95) -> PairedBootstrap:
    """Mean difference ``a − b`` over paired items, its percentile interval and a two-sided p-value."""
    delta = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if delta.size == 0:
        return PairedBootstrap(float("nan"), float("nan"), float("nan"), float("nan"))
    if n_boot <= 0:
        return PairedBootstrap(float(delta.mean()), float("nan"), float("nan"), float("nan"))
    means = _resampled_means(delta[:, None], n_boot, rng)[:, 0]
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    below, above = int(np.sum(means <= 0)), int(np.sum(means >= 0))
    p = min(1.0, 2.0 * min(below + 1, above + 1) / (n_boot + 1))
    return PairedBootstrap(float(delta.mean()), float(low), float(high), p)
