"""Which hyperparameters mattered: Optuna's importance evaluators over the trials table.

Usage:
    from results.importance import importances
    importances(tables, metric="best_val_accuracy")     # DataFrame: parameter, importance
    python -m results.query importance studies/grid1 [--metric test_auc] [--evaluator ped]

The varied hyperparameters are the study's space's (``studies.space_json``); every finished
trial with a value of the metric is one observation, in an in-memory Optuna study, and the
evaluator (fANOVA by default; ``ped`` for PED-ANOVA, ``mdi`` for mean decrease in impurity) says
which share of the metric's variance each explains. Parameters that took one value (a
``--set``, say) explain nothing and are left out. Folded budgets' trials count as the trials
they are, so ``epochs`` gets its due.
"""

from __future__ import annotations

import json
import math

import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution, FloatDistribution

from results.aggregate import ReportError

EVALUATORS = ("fanova", "ped", "mdi")
MIN_TRIALS = 3  # fewer finished trials cannot say which hyperparameter explains the metric


def _evaluator(name: str, seed: int) -> optuna.importance.BaseImportanceEvaluator:
    if name == "fanova":
        return optuna.importance.FanovaImportanceEvaluator(seed=seed)
    if name == "ped":
        return optuna.importance.PedAnovaImportanceEvaluator()
    return optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=seed)


def varied_parameters(tables: dict[str, pd.DataFrame]) -> list[str]:
    """The hyperparameters the studies' spaces vary, in the order they declare them."""
    out: list[str] = []
    for text in tables["studies"].get("space_json", pd.Series(dtype=str)).dropna():
        out += [k for k in (json.loads(text).get("params") or {}) if k not in out]
    return out


def study_metric(tables: dict[str, pd.DataFrame]) -> str:
    """The trials column the studies rank by: ``best_<metric>`` of their spaces' metric, or
    ``best_val_accuracy`` when the spaces do not say or do not agree."""
    metrics = {json.loads(text).get("metric") for text in tables["studies"].get(
        "space_json", pd.Series(dtype=str)).dropna()}
    if len(metrics) != 1 or not (metric := metrics.pop()):
        return "best_val_accuracy"
    column = metric if metric.startswith("best_") else f"best_{metric}"
    return column if column in tables["trials"].columns else "best_val_accuracy"


def finished_trials(tables: dict[str, pd.DataFrame], metric: str
                    ) -> tuple[pd.DataFrame, list[str]]:
    """The finished trials with a value of ``metric``, and the spaces' hyperparameters that
    vary among them (in the order the spaces declare them)."""
    trials = tables["trials"]
    if metric not in trials.columns:
        raise ReportError(f"no column {metric!r} in the trials table")
    done = trials[(trials["status"] == "TERMINATED") & trials[metric].notna()]
    params = [p for p in varied_parameters(tables)
              if p in done.columns and done[p].nunique(dropna=True) > 1]
    return done, params


def importances(tables: dict[str, pd.DataFrame], metric: str = "best_val_accuracy",
                evaluator: str = "fanova", seed: int = 0) -> pd.DataFrame:
    done, params = finished_trials(tables, metric)
    if len(done) < MIN_TRIALS or not params:
        raise ReportError(f"importance needs at least {MIN_TRIALS} finished trials with "
                          f"{metric} and a hyperparameter that varied among them (found "
                          f"{len(done)} trials, varied: {params or 'none'})")
    dists = {}
    for p in params:
        values = done[p].dropna()
        if pd.api.types.is_float_dtype(values) and values.nunique() > 8:
            dists[p] = FloatDistribution(float(values.min()), float(values.max()))
        else:
            dists[p] = CategoricalDistribution(tuple(_sorted(values.unique().tolist())))
    study = optuna.create_study(direction="maximize")
    for _, row in done.iterrows():
        values = {p: (row[p].item() if hasattr(row[p], "item") else row[p]) for p in params}
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values.values()):
            continue
        study.add_trial(optuna.trial.create_trial(params=values, distributions=dists,
                                                  value=float(row[metric])))
    got = optuna.importance.get_param_importances(study, evaluator=_evaluator(evaluator, seed))
    return pd.DataFrame({"parameter": list(got), "importance": list(got.values()),
                         "values": [dists[p].choices if isinstance(dists[p],
                                    CategoricalDistribution) else (dists[p].low, dists[p].high)
                                    for p in got]})


def _sorted(values: list) -> list:
    """Numbers in numeric order (32 before 128), anything else by its text."""
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)
