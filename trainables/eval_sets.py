"""Evaluation sets scored during training (``study.run --eval-data NAME=PATH``): names, columns.

Usage:
    key = metric_key("eval:external/auc")        # "eval_external_auc", the reported key
    row = set_metrics("external", labels, generators, scores, threshold)

A study's evaluation sets are scored whenever its common test set is: at every epoch whose
validation loss is the best so far, with the weights and the threshold the test metrics use.
Each epoch reports the best model's figures, so ASHA can rank trials on one of them
(``--metric eval:<name>/<metric>``). They never train a model, fit its threshold or choose its
epoch; named as the study's metric, they choose between trials, and only then.

Columns: ``eval_<set>_<metric>`` for the whole set (``SET_METRICS``), and
``eval_<set>__<generator>_<metric>`` per generator where the set names them (``GENERATOR_METRICS``;
each generator's images, with the set's real images of no generator when it has none of its own).
Framework-free: the training loop and the tables both import it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

from trainables.metrics import classification_metrics

EVAL_METRIC_PREFIX = "eval:"
COLUMN_PREFIX = "eval_"
SET_METRICS = ("accuracy", "auc", "ap", "recall", "recall_real")
GENERATOR_METRICS = ("accuracy", "auc", "ap")
# Every evaluation metric is higher-is-better (a study ranking on one uses mode "max").
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*$")
_SUFFIXES = sorted(SET_METRICS, key=len, reverse=True)


class EvalSetError(ValueError):
    """A bad evaluation-set name or metric; the message names it and the fix."""


def check_set_name(name: str) -> str:
    """``name`` if it can name columns (letters, digits, single underscores), else an error."""
    if not _NAME.match(name or ""):
        raise EvalSetError(
            f"evaluation set name {name!r} cannot name a column: use letters, digits and "
            "single underscores, starting with a letter (e.g. --eval-data external=dev.zip)")
    return name


def parse_eval_metric(metric: str) -> tuple[str, str] | None:
    """(set, metric) of ``eval:<set>/<metric>``; None for any other metric name."""
    if not metric.startswith(EVAL_METRIC_PREFIX):
        return None
    body = metric[len(EVAL_METRIC_PREFIX):]
    name, sep, which = body.partition("/")
    if not sep or which not in SET_METRICS:
        raise EvalSetError(f"metric {metric!r}: write eval:<set>/<metric> with <metric> one of "
                           f"{', '.join(SET_METRICS)} (e.g. eval:external/auc)")
    return check_set_name(name), which


def column(eval_set: str, metric: str, generator: str | None = None) -> str:
    """The trials/epochs column of ``metric`` on ``eval_set`` (or one of its generators)."""
    if generator is None:
        return f"{COLUMN_PREFIX}{eval_set}_{metric}"
    return f"{COLUMN_PREFIX}{eval_set}__{generator_label(generator)}_{metric}"


def metric_key(metric: str) -> str:
    """The key a trial reports ``metric`` under: ``eval:<set>/<m>`` -> its column; else as is."""
    parsed = parse_eval_metric(metric)
    return column(*parsed) if parsed else metric


def generator_label(generator: str) -> str:
    """A generator's name as a column part: other characters become ``_``."""
    return re.sub(r"[^A-Za-z0-9]+", "_", str(generator)).strip("_") or "none"


def is_eval_column(name: str) -> bool:
    return name.startswith(COLUMN_PREFIX)


def set_columns(columns: Iterable[str], metric: str) -> dict[str, str]:
    """{set: column} of the whole-set ``metric`` columns among ``columns`` (no generators)."""
    out = {}
    for col in columns:
        if not is_eval_column(col) or "__" in col:
            continue
        body = col[len(COLUMN_PREFIX):]
        which = next((m for m in _SUFFIXES if body.endswith("_" + m)), None)
        if which == metric:
            out[body[: -len(which) - 1]] = col
    return out


def set_metrics(eval_set: str, labels: np.ndarray, generators: np.ndarray | None,
                scores: np.ndarray, threshold: float) -> dict[str, float]:
    """The columns of one set: ``SET_METRICS`` over it, ``GENERATOR_METRICS`` per generator."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    whole = classification_metrics(labels, scores, threshold)
    out = {column(eval_set, m): whole[m] for m in SET_METRICS}
    if generators is None:
        return out
    gens = np.asarray(generators).astype(str)
    named = sorted(g for g in set(gens) if g)
    # Real images filed under no generator are every generator's reals (a set of one real
    # folder beside several generators' fake folders).
    shared_reals = (gens == "") & (labels == 0)
    for g in named:
        mine = gens == g
        if not (labels[mine] == 0).any():
            mine = mine | shared_reals
        m = classification_metrics(labels[mine], scores[mine], threshold)
        out.update({column(eval_set, k, g): m[k] for k in GENERATOR_METRICS})
    return out
