"""Statistics against hand-computed values: McNemar (exact and chi-square), bootstrap, AUC.

Usage: ``python -m pytest tests/test_results_stats.py`` (seconds, no Ray).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from results.stats import binomial_two_sided, bootstrap, mcnemar
from trainables.metrics import auc


def paired(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Correctness vectors of two classifiers with the given contingency counts."""
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return np.array(a), np.array(b)


def test_mcnemar_matches_hand_computed_exact_value() -> None:
    # b = 3, c = 10: p = 2 * sum_{k<=3} C(13, k) / 2^13 = 2 * (1 + 13 + 78 + 286) / 8192.
    result = mcnemar(*paired(50, 3, 10, 7))
    assert (result.n, result.both_correct, result.only_a, result.only_b, result.both_wrong) == (
        70, 50, 3, 10, 7)
    assert result.method == "exact binomial" and result.statistic is None
    assert result.p_value == pytest.approx(2 * 378 / 8192, abs=1e-15)
    assert result.p_value == pytest.approx(0.09228515625)


def test_mcnemar_matches_hand_computed_chi_square_value() -> None:
    # b = 30, c = 12 (b + c = 42 >= 25): chi2 = (|30 - 12| - 1)^2 / 42 = 289 / 42 = 6.88095...;
    # p = P(chi2_1 > 6.88095) = 0.0087119 (tables: chi2_1 at p = 0.01 is 6.635, at 0.005 is 7.879).
    result = mcnemar(*paired(100, 30, 12, 8))
    assert result.method == "chi-square with continuity correction"
    assert result.statistic == pytest.approx(289 / 42)
    assert result.p_value == pytest.approx(0.0087119, abs=1e-7)


def test_mcnemar_switches_to_chi_square_at_25_discordant_pairs() -> None:
    assert mcnemar(*paired(10, 12, 12, 0)).method == "exact binomial"  # 24
    assert mcnemar(*paired(10, 13, 12, 0)).method.startswith("chi-square")  # 25


def test_mcnemar_without_disagreements_finds_no_difference() -> None:
    result = mcnemar(*paired(20, 0, 0, 5))
    assert result.p_value == 1.0 and result.method == "exact binomial"


def test_mcnemar_needs_equal_length_predictions() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        mcnemar(np.ones(3, bool), np.ones(4, bool))


def test_exact_binomial_is_symmetric_and_capped() -> None:
    assert binomial_two_sided(0, 5) == pytest.approx(2 / 32)
    assert binomial_two_sided(5, 5) == binomial_two_sided(0, 5)
    assert binomial_two_sided(3, 6) == 1.0  # 2 * P(X <= 3) = 2 * 42/64 > 1


def test_auc_matches_sklearn_including_ties() -> None:
    labels = np.array([0, 0, 1, 1, 0, 1, 1, 0])
    scores = np.array([0.1, 0.4, 0.4, 0.8, 0.5, 0.5, 0.9, 0.2])
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    # Hand: 16 (FAKE, REAL) pairs; FAKE above REAL in 13, tied in 2 -> (13 + 1) / 16.
    assert auc(labels, scores) == pytest.approx(14 / 16)
    assert np.isnan(auc(np.ones(3), np.array([0.1, 0.2, 0.3])))


def test_bootstrap_with_fixed_seed_matches_a_plain_loop() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 30)
    scores = np.round(rng.random(30), 2)  # rounding makes ties
    predicted = (scores >= 0.5).astype(int)
    got = bootstrap(labels, scores, predicted, n_boot=300, level=0.9, seed=7)
    # The documented procedure, written out: resample b = rng.integers(0, n, n), b = 0, 1, ...
    draw = np.random.default_rng(7)
    accs, aucs = [], []
    for _ in range(300):
        idx = draw.integers(0, 30, 30)
        accs.append(np.mean(predicted[idx] == labels[idx]))
        if len(set(labels[idx])) == 2:
            aucs.append(roc_auc_score(labels[idx], scores[idx]))
    for name, values, estimate in (
        ("accuracy", accs, np.mean(predicted == labels)),
        ("auc", aucs, roc_auc_score(labels, scores)),
    ):
        low, high = np.percentile(values, [5, 95])
        ci = got[name]
        assert (ci.estimate, ci.low, ci.high) == pytest.approx((estimate, low, high)), name
        assert ci.n_valid == len(values) and ci.n_boot == 300 and ci.seed == 7


def test_bootstrap_is_reproducible_and_depends_on_the_seed() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 50)
    scores = rng.random(50)
    predicted = (scores >= 0.5).astype(int)
    a = bootstrap(labels, scores, predicted, n_boot=200, seed=3)
    assert a == bootstrap(labels, scores, predicted, n_boot=200, seed=3)
    assert a != bootstrap(labels, scores, predicted, n_boot=200, seed=4)


def test_bootstrap_of_hand_computable_cases() -> None:
    # Every image right: every resample has accuracy 1.
    perfect = bootstrap(np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.2, 0.8]),
                        np.array([0, 1, 0, 1]), n_boot=100)
    assert (perfect["accuracy"].low, perfect["accuracy"].high) == (1.0, 1.0)
    assert perfect["auc"].estimate == 1.0
    # One right, one wrong: resampled accuracy is 0, 1/2 or 1 with chances 1/4, 1/2, 1/4,
    # so the 95% interval runs from 0 to 1 and the 50% interval is [1/2, 1/2].
    half = dict(labels=np.array([0, 1]), scores=np.array([0.2, 0.3]), predicted=np.array([0, 0]))
    wide = bootstrap(**half, n_boot=2000)["accuracy"]
    assert (wide.estimate, wide.low, wide.high) == (0.5, 0.0, 1.0)
    narrow = bootstrap(**half, n_boot=2000, level=0.5)["accuracy"]
    assert (narrow.low, narrow.high) == (0.5, 0.5)
