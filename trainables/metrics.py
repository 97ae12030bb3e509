"""Classification metrics of one scored image set, as flat columns for the result tables.

FAKE (label 1) is the positive class. Per-class precision, recall and F1 with macro and weighted
averages follow scikit-learn's classification report, as the seed papers report them; average
precision is what the seeds call "mAP".

The formulas are scikit-learn's (``precision_recall_fscore_support`` with ``zero_division=0``,
``roc_auc_score``, ``average_precision_score``; tests hold them equal), written in numpy because
every trial process computes them each epoch: importing ``sklearn.metrics`` cost each Ray
worker 1.3 s of start-up and 46 MiB (README, Performance).
"""

from __future__ import annotations

import math

import numpy as np

METRIC_NAMES = (
    "accuracy", "precision", "recall", "f1",
    "precision_real", "recall_real", "f1_real",
    "precision_macro", "recall_macro", "f1_macro",
    "precision_weighted", "recall_weighted", "f1_weighted",
    "auc", "ap", "tn", "fp", "fn", "tp",
)
# Training metrics per epoch, FAKE the positive class (Kumar's curves; Purba Figs 10 and 12).
TRAIN_METRICS = ("accuracy", "precision", "recall", "f1")
# Test metrics also reported for the test images with no byte-identical copy in the training
# pool (CIFAKE's official test split shares 378 such groups with its training split).
CLEAN_METRICS = ("accuracy", "precision", "recall", "f1", "auc", "ap")


def classification_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5
                           ) -> dict[str, float]:
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    pred = (scores >= threshold).astype(int)
    tp = int(((pred == 1) & (labels == 1)).sum())
    fp = int(((pred == 1) & (labels == 0)).sum())
    fn = int(((pred == 0) & (labels == 1)).sum())
    tn = int(((pred == 0) & (labels == 0)).sum())
    # Per class [REAL, FAKE]: each class in turn is the positive one.
    p = np.array([_ratio(tn, tn + fn), _ratio(tp, tp + fp)])
    r = np.array([_ratio(tn, tn + fp), _ratio(tp, tp + fn)])
    f = np.array([_ratio(2 * pi * ri, pi + ri) for pi, ri in zip(p, r, strict=True)])
    support = np.array([tn + fp, tp + fn])
    weights = support / max(support.sum(), 1)
    both = bool(support.all())
    return {
        "accuracy": float((pred == labels).mean()) if len(labels) else math.nan,
        "precision": float(p[1]), "recall": float(r[1]), "f1": float(f[1]),
        "precision_real": float(p[0]), "recall_real": float(r[0]), "f1_real": float(f[0]),
        "precision_macro": float(p.mean()), "recall_macro": float(r.mean()),
        "f1_macro": float(f.mean()),
        "precision_weighted": float(p @ weights), "recall_weighted": float(r @ weights),
        "f1_weighted": float(f @ weights),
        "auc": auc(labels, scores) if both else math.nan,
        "ap": average_precision(labels, scores) if both else math.nan,
        "tn": tn, "fp": fp, "fn": fn, "tp": tp,
    }


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else 0.0  # scikit-learn's zero_division=0


def auc_weighted(labels: np.ndarray, groups: np.ndarray, n_groups: int, weights: np.ndarray
                 ) -> float:
    """ROC AUC of weighted samples; ``groups`` ranks the scores (ties share a group, count 1/2).

    The Mann-Whitney form: P(score of a FAKE > score of a REAL) + 1/2 P(tie).
    """
    pos = np.bincount(groups, weights=weights * (labels == 1), minlength=n_groups)
    neg = np.bincount(groups, weights=weights * (labels == 0), minlength=n_groups)
    total_pos, total_neg = pos.sum(), neg.sum()
    if total_pos == 0 or total_neg == 0:
        return math.nan
    below = np.cumsum(neg) - neg  # REAL weight strictly below each score group
    return float((pos * (below + 0.5 * neg)).sum() / (total_pos * total_neg))


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC (equal to ``sklearn.metrics.roc_auc_score``); NaN with a single class."""
    labels = np.asarray(labels).astype(int)
    unique, groups = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
    return auc_weighted(labels, groups, len(unique), np.ones(len(labels)))


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Sum over score thresholds of (R_k - R_(k-1)) P_k, as ``average_precision_score``.

    Tied scores form one threshold; NaN without a FAKE image.
    """
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], labels[order] == 1
    if not hits.any():
        return math.nan
    last = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # end of each tie group
    tps = np.cumsum(hits)[last]
    precision, recall = tps / (last + 1), tps / tps[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def best_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold that maximises accuracy (used for anomaly scores on validation)."""
    labels = np.asarray(labels).astype(int)
    order = np.argsort(scores, kind="stable")
    s, y = np.asarray(scores, dtype=np.float64)[order], labels[order]
    # Predict FAKE for scores >= t; t just above the k-th smallest score -> first k are REAL.
    real_below = np.concatenate([[0], np.cumsum(y == 0)])
    fake_above = np.concatenate([[0], np.cumsum((y == 1)[::-1])])[::-1]
    correct = real_below + fake_above
    k = int(np.argmax(correct))
    if k == 0:
        return float(s[0])
    if k == len(s):
        return float(np.nextafter(s[-1], np.inf))
    return float((s[k - 1] + s[k]) / 2)
