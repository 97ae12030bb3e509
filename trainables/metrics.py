"""Classification metrics of one scored image set, as flat columns for the result tables.

FAKE (label 1) is the positive class. Per-class precision, recall and F1 with macro and weighted
averages follow scikit-learn's classification report, as the seed papers report them; average
precision is what the seeds call "mAP".
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

METRIC_NAMES = (
    "accuracy", "precision", "recall", "f1",
    "precision_real", "recall_real", "f1_real",
    "precision_macro", "recall_macro", "f1_macro",
    "precision_weighted", "recall_weighted", "f1_weighted",
    "auc", "ap", "tn", "fp", "fn", "tp",
)


def classification_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5
                           ) -> dict[str, float]:
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    pred = (scores >= threshold).astype(int)
    p, r, f, support = precision_recall_fscore_support(
        labels, pred, labels=[0, 1], zero_division=0
    )
    weights = support / max(support.sum(), 1)
    tn, fp, fn, tp = confusion_matrix(labels, pred, labels=[0, 1]).ravel()
    both = len(np.unique(labels)) == 2
    return {
        "accuracy": float((pred == labels).mean()) if len(labels) else math.nan,
        "precision": float(p[1]), "recall": float(r[1]), "f1": float(f[1]),
        "precision_real": float(p[0]), "recall_real": float(r[0]), "f1_real": float(f[0]),
        "precision_macro": float(p.mean()), "recall_macro": float(r.mean()),
        "f1_macro": float(f.mean()),
        "precision_weighted": float(p @ weights), "recall_weighted": float(r @ weights),
        "f1_weighted": float(f @ weights),
        "auc": float(roc_auc_score(labels, scores)) if both else math.nan,
        "ap": float(average_precision_score(labels, scores)) if both else math.nan,
        "tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp),
    }


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
