"""Honest statistics from stored predictions: bootstrap intervals and McNemar's test.

Usage:
    ci = bootstrap(labels, scores, predicted)           # {"accuracy": Interval, "auc": Interval}
    test = mcnemar(correct_a, correct_b)                # McNemarResult(p_value=..., method=...)

Bootstrap: ``n_boot`` resamples of the test images drawn with replacement from
``numpy.random.default_rng(seed)``, resample ``b`` being ``rng.integers(0, n, n)`` drawn in order
b = 0, 1, ...; accuracy and AUC are computed on the same resamples; the interval is the percentile
interval (``numpy.percentile``, linear interpolation) of the resampled values. A resample holding a
single class has no AUC and is left out of the AUC interval (``Interval.n_valid`` counts the rest).

McNemar: b = images only model A gets right, c = images only model B gets right. When b + c < 25
the two-sided exact binomial test is used (p = min(1, 2 P[X <= min(b, c)]), X ~ Bin(b + c, 1/2)),
because the chi-square approximation is poor for few discordant pairs (the usual rule of thumb);
otherwise the chi-square statistic with Edwards' continuity correction, (|b - c| - 1)^2 / (b + c),
on one degree of freedom. ``McNemarResult.method`` says which was used.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from trainables.metrics import auc_weighted

EXACT_BELOW = 25  # discordant pairs under which McNemar's test is the exact binomial one


@dataclass(frozen=True)
class Interval:
    metric: str
    estimate: float
    low: float
    high: float
    level: float
    n_boot: int
    n_valid: int  # resamples the interval is computed from
    seed: int

    def asdict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class McNemarResult:
    n: int  # paired images
    both_correct: int
    only_a: int  # b: A right, B wrong
    only_b: int  # c: A wrong, B right
    both_wrong: int
    statistic: float | None  # chi-square (continuity-corrected); None for the exact test
    p_value: float
    method: str  # "exact binomial" | "chi-square with continuity correction"

    def asdict(self) -> dict[str, Any]:
        return asdict(self)


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if not len(values):
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap(
    labels: np.ndarray, scores: np.ndarray, predicted: np.ndarray, *, n_boot: int = 2000,
    level: float = 0.95, seed: int = 0,
) -> dict[str, Interval]:
    """Percentile bootstrap intervals of accuracy and AUC over the test images (see module doc)."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    correct = (np.asarray(predicted).astype(int) == labels).astype(np.float64)
    n = len(labels)
    if n == 0:
        raise ValueError("no predictions to bootstrap")
    if not 0 < level < 1:
        raise ValueError(f"level={level} must lie strictly between 0 and 1")
    unique, groups = np.unique(scores, return_inverse=True)
    rng = np.random.default_rng(seed)
    accuracies = np.empty(n_boot)
    aucs = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        weights = np.bincount(idx, minlength=n).astype(np.float64)
        accuracies[b] = weights @ correct / n
        aucs[b] = auc_weighted(labels, groups, len(unique), weights)
    out = {}
    for metric, values, estimate in (
        ("accuracy", accuracies, float(correct.mean())),
        ("auc", aucs, auc_weighted(labels, groups, len(unique), np.ones(n))),
    ):
        low, high = _percentile_interval(values, level)
        out[metric] = Interval(metric, estimate, low, high, level, n_boot,
                               int((~np.isnan(values)).sum()), seed)
    return out


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p of k or fewer successes in n fair coin flips (doubled, capped at 1)."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray, *, exact_below: int = EXACT_BELOW
            ) -> McNemarResult:
    """McNemar's test of two classifiers on the same images (see the module doc for the method)."""
    a = np.asarray(correct_a, dtype=bool)
    b_ = np.asarray(correct_b, dtype=bool)
    if a.shape != b_.shape:
        raise ValueError(f"paired predictions differ in length ({len(a)} vs {len(b_)})")
    b = int((a & ~b_).sum())
    c = int((~a & b_).sum())
    counts = {"n": len(a), "both_correct": int((a & b_).sum()), "only_a": b, "only_b": c,
              "both_wrong": int((~a & ~b_).sum())}
    if b + c < exact_below:
        p = binomial_two_sided(min(b, c), b + c)
        return McNemarResult(**counts, statistic=None, p_value=p, method="exact binomial")
    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    p = math.erfc(math.sqrt(statistic / 2))  # chi-square survival function, 1 degree of freedom
    return McNemarResult(**counts, statistic=statistic, p_value=p,
                         method="chi-square with continuity correction")
