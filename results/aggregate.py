"""Aggregations of loaded result tables into reports: leaderboards, comparisons, curves, the
papers' tables and paired statistics, each a ``Report`` of named DataFrames and notes.

Usage:
    tables = results.load("studies/grid1")
    leaderboard(tables); compare(tables, rows="model", cols="batch_size", agg="max")
    curves(tables, "05725_00000"); paper(tables, "bartos_batch")
    mcnemar_report(tables, "a1_00000", "a1_00001"); bootstrap_report(tables, "a1_00000")

``results.query`` is the command line over these functions, ``results.render`` formats them and
``results.report`` (the HTML page command) puts several on one page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from results.paper_tables import PaperTable, paper_tables
from results.schema import HYPERPARAMETER_NAMES
from results.stats import bootstrap, mcnemar
from trainables.eval_sets import SET_METRICS, set_columns

AGGREGATES = ("max", "min", "mean", "median")
ASHA_MARK, PATIENCE_MARK = "*", "†"
ASHA_NOTE = (f"{ASHA_MARK} stopped by ASHA at a rung: its figures are of a run shorter than its "
             "budget. That is a scheduling cut, not a verdict on the configuration.")
PATIENCE_NOTE = (f"{PATIENCE_MARK} stopped early (patience): validation loss stopped improving; "
                 "the best epoch's weights are the ones evaluated.")


class ReportError(ValueError):
    """A report that cannot be made from the loaded tables; the message says why."""


@dataclass
class Report:
    title: str
    tables: dict[str, pd.DataFrame]
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Helpers


def higher_is_better(metric: str) -> bool:
    return not ("loss" in metric or "seconds" in metric or metric.endswith(("_fp", "_fn")))


def _check_column(df: pd.DataFrame, column: str, what: str) -> None:
    if column not in df.columns:
        numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]
        raise ReportError(f"unknown {what} {column!r}; choose one of: {', '.join(numeric)}")


def find_trial(trials: pd.DataFrame, ref: str) -> pd.Series:
    """The trial named ``trial_id`` or ``study/trial_id``; ambiguous or unknown names fail."""
    study, _, trial_id = ref.rpartition("/")
    hit = trials[trials["trial_id"] == trial_id]
    if study:
        hit = hit[hit["study"] == study]
    if len(hit) == 1:
        return hit.iloc[0]
    if len(hit) > 1:
        raise ReportError(f"trial {ref!r} is in several studies ({', '.join(hit['study'])}); "
                          "name it as study/trial_id")
    known = ", ".join(trials["trial_id"].head(8)) + (" ..." if len(trials) > 8 else "")
    raise ReportError(f"no trial {ref!r} in the loaded tables; trials: {known or '(none)'}")


def varying(trials: pd.DataFrame) -> list[str]:
    """Hyperparameters that take more than one value among ``trials`` (model always shown)."""
    cols = [c for c in HYPERPARAMETER_NAMES if c in trials.columns
            and trials[c].nunique(dropna=False) > 1]
    return ["model", *[c for c in cols if c != "model"]]


def stopped_label(row: pd.Series) -> str:
    """Why and when a trial stopped: ``budget 8/8``, ``ASHA* 2/8``, ``patience† 5/8``."""
    run = row.get("epochs_run")
    budget = row.get("epochs")
    at = f" {int(run)}/{int(budget)}" if pd.notna(run) and pd.notna(budget) else ""
    reason = row.get("stop_reason")
    return {"budget": f"budget{at}", "asha": f"ASHA{ASHA_MARK}{at}",
            "early_stopping": f"patience{PATIENCE_MARK}{at}", "error": "error",
            "interrupted": f"interrupted{at}"}.get(reason, str(reason))


def _marks_notes(reasons: pd.Series) -> list[str]:
    notes = []
    if (reasons == "asha").any():
        notes.append(ASHA_NOTE)
    if (reasons == "early_stopping").any():
        notes.append(PATIENCE_NOTE)
    return notes


def summarize(cell: pd.DataFrame, metric: str, agg: str) -> dict[str, Any] | None:
    """One cell of a comparison: the aggregated ``metric`` with mean ± std over seeds.

    ``max``/``min``: the configuration (``config_key``: all hyperparameters but the seed) whose
    mean over seeds is highest/lowest, with that mean, its std over seeds and its seed count.
    ``mean``/``median``: over every trial of the cell (std over all of them).
    The representative trial is the best trial of what was aggregated.
    """
    if agg not in AGGREGATES:
        raise ReportError(f"unknown aggregate {agg!r}; choose one of {', '.join(AGGREGATES)}")
    cell = cell[cell[metric].notna()]
    if not len(cell):
        return None
    keys = cell["config_key"].fillna(cell["trial_id"])
    by_config = cell.groupby(keys)[metric].agg(["mean", "std", "count"])
    if agg in ("max", "min"):
        pick = by_config["mean"].idxmax() if agg == "max" else by_config["mean"].idxmin()
        chosen = cell[keys == pick]
        value, std, n = by_config.loc[pick, ["mean", "std", "count"]]
    else:
        chosen = cell
        value = cell[metric].mean() if agg == "mean" else cell[metric].median()
        std, n = cell[metric].std(), len(cell)
    best = chosen.sort_values(metric, ascending=not higher_is_better(metric)).iloc[0]
    return {"value": float(value), "std": float(std) if n > 1 else math.nan, "n": int(n),
            "configs": len(by_config), "study": best["study"], "trial_id": best["trial_id"],
            "asha_cut": int((chosen["stop_reason"] == "asha").sum())}


def cell_text(s: dict[str, Any] | None, digits: int = 4) -> str:
    if s is None:
        return "—"
    text = f"{s['value']:.{digits}f}"
    if s["n"] > 1:
        text += f" ± {s['std']:.{digits}f} (n={s['n']})"
    return text + (ASHA_MARK if s["asha_cut"] else "")


def trial_predictions(tables: dict[str, pd.DataFrame], trial: pd.Series) -> pd.DataFrame:
    """The stored predictions of one trial, with known labels."""
    p = tables.get("predictions")
    rows = pd.DataFrame() if p is None else p[(p["study"] == trial["study"])
                                                & (p["trial_id"] == trial["trial_id"])]
    name = f"{trial['study']}/{trial['trial_id']}"
    if not len(rows):
        raise ReportError(f"trial {name} has no stored predictions (no readable checkpoint, or "
                          "tables from before schema v2): rerun `python -m study.run --resume "
                          "--name <study>` to rebuild them from the checkpoints")
    if rows["label"].isna().any():
        raise ReportError(f"trial {name}'s predictions have no labels (its checkpoint predates "
                          "test_labels); retrain it to get paired statistics")
    return rows


# ---------------------------------------------------------------------------------------------
# Reports


BY = ("metric", "worst-eval", "mean-eval")


def eval_summary(trials: pd.DataFrame, eval_metric: str = "auc") -> tuple[pd.DataFrame, list[str]]:
    """``trials`` with ``worst_eval_<m>`` and ``mean_eval_<m>`` over its evaluation sets'
    ``eval_metric`` columns, and those columns' names (``study.run --eval-data``).

    A trial that lacks a set (another study's, or a set with one class, whose AUC is NaN) has
    no worst or mean: it cannot be said to generalise to a set it was not scored on.
    """
    if eval_metric not in SET_METRICS:
        raise ReportError(f"--eval-metric {eval_metric!r} is not one of {', '.join(SET_METRICS)}")
    cols = list(set_columns(trials.columns, eval_metric).values())
    if not cols:
        raise ReportError("these studies have no evaluation sets; run study.run with "
                          "--eval-data NAME=PATH (or rank with --by metric)")
    values = trials[cols].astype(float)
    out = trials.assign(**{f"worst_eval_{eval_metric}": values.min(axis=1, skipna=False),
                           f"mean_eval_{eval_metric}": values.mean(axis=1, skipna=False)})
    return out, cols


def leaderboard(tables: dict[str, pd.DataFrame], metric: str = "test_accuracy",
                top: int | None = None, ci: bool = False, n_boot: int = 1000, seed: int = 0,
                level: float = 0.95, by: str = "metric", eval_metric: str = "auc") -> Report:
    """Trials ranked by ``metric``, each marked with why it stopped (ASHA, patience, budget).

    ``by="worst-eval"`` ranks by the worst of the evaluation sets' ``eval_metric`` (how a
    detector does where it does worst), ``"mean-eval"`` by their mean; the sets' own columns
    are shown beside it.
    """
    trials = tables["trials"]
    shown: list[str] = []
    if by != "metric":
        if by not in BY:
            raise ReportError(f"--by {by!r} is not one of {', '.join(BY)}")
        trials, shown = eval_summary(trials, eval_metric)
        metric = f"{by.split('-')[0]}_eval_{eval_metric}"
    _check_column(trials, metric, "metric")
    df = trials.sort_values(metric, ascending=not higher_is_better(metric), na_position="last",
                            kind="stable").reset_index(drop=True)
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    df["stopped"] = df.apply(stopped_label, axis=1) if len(df) else []
    extra = [m for m in ("test_accuracy", "test_auc") if m != metric]
    # Where the test set holds copies of training images (CIFAKE's official split does), the
    # clean test set's accuracy says how much the leak moves each trial's figure.
    leaky = ("n_test_clean" in df.columns and
             bool((df["n_test_clean"].astype(float) < df["n_test"].astype(float)).any()))
    if leaky:
        extra += ["test_clean_accuracy", "n_test", "n_test_clean"]
    cols = ["rank", *(["study"] if df["study"].nunique() > 1 else []), "trial_id",
            *varying(trials), "status", "stopped", "best_epoch", metric, *shown, *extra,
            "train_seconds"]
    notes = _marks_notes(df["stop_reason"])
    if leaky:
        notes.append("test_clean_accuracy: on the test images with no byte-identical copy among "
                     "the images the trial trained and validated on (n_test_clean of n_test).")
    if shown:
        notes.append(f"{metric}: the {by.split('-')[0]} over the evaluation sets "
                     f"({', '.join(shown)}), each scored with the best epoch's weights; a "
                     "trial missing a set ranks last.")
    if top:
        df = df.head(top)
    out = df[list(dict.fromkeys(cols))].copy()
    if ci:
        lows, highs = [], []
        for _, trial in df.iterrows():
            try:
                p = trial_predictions(tables, trial)
            except ReportError:
                lows.append(math.nan)
                highs.append(math.nan)
                continue
            acc = bootstrap(p["label"].to_numpy(), p["score"].to_numpy(),
                            p["predicted"].to_numpy(), n_boot=n_boot, level=level,
                            seed=seed)["accuracy"]
            lows.append(acc.low)
            highs.append(acc.high)
        out["acc_ci_low"], out["acc_ci_high"] = lows, highs
        notes.append(f"acc_ci: {level:.0%} percentile bootstrap interval of test accuracy over "
                     f"the test images ({n_boot} resamples, seed {seed}).")
    errors = trials[trials["status"] == "ERROR"]
    for _, row in errors.iterrows():
        notes.append(f"trial {row['trial_id']} failed: {str(row['error']).splitlines()[0]}")
    return Report(f"leaderboard by {metric}", {"leaderboard": out}, notes)


def compare(tables: dict[str, pd.DataFrame], rows: str, cols: str | None = None,
            metric: str = "test_accuracy", agg: str = "max", tests: bool = True) -> Report:
    """``metric`` pivoted over ``rows`` x ``cols`` (see ``summarize``), with McNemar tests."""
    trials = tables["trials"]
    _check_column(trials, metric, "metric")
    for axis in (rows, cols):
        if axis is not None and axis not in trials.columns:
            raise ReportError(f"unknown column {axis!r}; hyperparameters: "
                              f"{', '.join(HYPERPARAMETER_NAMES)}")
    axes = [rows] if cols is None else [rows, cols]
    cells = []
    for key, group in trials.groupby(axes, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        s = summarize(group, metric, agg)
        if s is not None:
            cells.append({**dict(zip(axes, key, strict=True)), **s})
    if not cells:
        raise ReportError(f"no trial has a value of {metric}")
    long = pd.DataFrame(cells)
    long["text"] = [cell_text(c) for c in cells]
    if cols is None:
        pivot = long[[rows, "text"]].rename(columns={"text": metric})
    else:
        pivot = long.pivot(index=rows, columns=cols, values="text").fillna("—")
        pivot.columns = [f"{cols}={c}" for c in pivot.columns]
        pivot = pivot.reset_index()
    notes = [f"{metric}, {agg} over each cell's configurations; ± is the standard deviation over "
             "seeds of the chosen configuration (n seeds)" if agg in ("max", "min") else
             f"{metric}, {agg} over each cell's trials; ± is the standard deviation over them"]
    notes += [ASHA_NOTE] if long["asha_cut"].any() else []
    out = {"pivot": pivot, "cells": long.drop(columns="text")}
    if tests and len(long) > 1:
        out["mcnemar"] = _cell_tests(tables, long, metric)
        notes.append("mcnemar: the best cell's representative trial against each other cell's, on "
                     "the same test images; it tests those two trained models, not the "
                     "configurations over seeds. Exact binomial when b + c < 25, else chi-square "
                     "with continuity correction (see results.stats).")
    return Report(f"{metric} by {rows}" + (f" x {cols}" if cols else ""), out, notes)


def _cell_tests(tables: dict[str, pd.DataFrame], long: pd.DataFrame, metric: str) -> pd.DataFrame:
    order = long.sort_values("value", ascending=not higher_is_better(metric))
    best = order.iloc[0]
    trials = tables["trials"]
    rows = []
    for _, other in order.iloc[1:].iterrows():
        row = {"best_trial": best["trial_id"], "other_trial": other["trial_id"],
               "other_cell": ", ".join(f"{a}={other[a]}" for a in long.columns[
                   : list(long.columns).index("value")])}
        try:
            result = _mcnemar(tables, find_trial(trials, f"{best['study']}/{best['trial_id']}"),
                              find_trial(trials, f"{other['study']}/{other['trial_id']}"))
            row.update(only_best=result.only_a, only_other=result.only_b,
                       p_value=result.p_value, method=result.method)
        except ReportError as exc:
            row.update(only_best=None, only_other=None, p_value=None, method=str(exc)[:80])
        rows.append(row)
    return pd.DataFrame(rows)


def _mcnemar(tables: dict[str, pd.DataFrame], a: pd.Series, b: pd.Series) -> Any:
    pa_, pb = trial_predictions(tables, a), trial_predictions(tables, b)
    both = pa_.merge(pb, on="image_id", suffixes=("_a", "_b"))
    if len(both) != len(pa_) or len(both) != len(pb):
        raise ReportError(f"trials {a['trial_id']} and {b['trial_id']} were tested on different "
                          f"images ({len(pa_)} and {len(pb)}, {len(both)} shared); McNemar's "
                          "test needs the same test images")
    if (both["label_a"] != both["label_b"]).any():
        raise ReportError("the two trials disagree on the labels of the same images")
    return mcnemar(both["predicted_a"] == both["label_a"], both["predicted_b"] == both["label_b"])


def mcnemar_report(tables: dict[str, pd.DataFrame], trial_a: str, trial_b: str) -> Report:
    """McNemar's test between two trials on the same test images."""
    trials = tables["trials"]
    a, b = find_trial(trials, trial_a), find_trial(trials, trial_b)
    r = _mcnemar(tables, a, b)
    counts = pd.DataFrame({"": ["A right", "A wrong"], "B right": [r.both_correct, r.only_b],
                           "B wrong": [r.only_a, r.both_wrong]})
    summary = pd.DataFrame([{
        "trial_a": a["trial_id"], "trial_b": b["trial_id"], "n": r.n,
        "accuracy_a": (r.both_correct + r.only_a) / r.n,
        "accuracy_b": (r.both_correct + r.only_b) / r.n,
        "b (only A right)": r.only_a, "c (only B right)": r.only_b,
        "statistic": r.statistic, "p_value": r.p_value, "method": r.method}])
    notes = [f"A = {a['study']}/{a['trial_id']}, B = {b['study']}/{b['trial_id']}.",
             "Exact two-sided binomial test when b + c < 25, else chi-square with continuity "
             "correction (|b - c| - 1)^2 / (b + c), 1 degree of freedom."]
    return Report(f"McNemar: {a['trial_id']} vs {b['trial_id']}",
                  {"summary": summary, "contingency": counts}, notes)


def bootstrap_report(tables: dict[str, pd.DataFrame], trial: str, n_boot: int = 2000,
                     level: float = 0.95, seed: int = 0) -> Report:
    """Percentile bootstrap intervals of a trial's test accuracy and AUC."""
    t = find_trial(tables["trials"], trial)
    p = trial_predictions(tables, t)
    result = bootstrap(p["label"].to_numpy(), p["score"].to_numpy(), p["predicted"].to_numpy(),
                       n_boot=n_boot, level=level, seed=seed)
    df = pd.DataFrame([{**i.asdict(), "n_images": len(p)} for i in result.values()])
    notes = [f"{t['study']}/{t['trial_id']}: percentile bootstrap over its {len(p)} test images, "
             f"{n_boot} resamples drawn with numpy default_rng({seed}); resamples with one class "
             "only are left out of the AUC interval (n_valid)."]
    return Report(f"bootstrap: {t['trial_id']}", {"bootstrap": df}, notes)


def curves(tables: dict[str, pd.DataFrame], trial: str) -> Report:
    """The per-epoch history of one trial."""
    t = find_trial(tables["trials"], trial)
    e = tables["epochs"]
    rows = e[(e["study"] == t["study"]) & (e["trial_id"] == t["trial_id"])]
    cols = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_auc",
            "test_accuracy", "test_auc", "final_test_accuracy", "lr", "epoch_seconds",
            "stop_reason"]
    cols = [c for c in cols if c in rows.columns]
    hp = ", ".join(f"{k}={t[k]}" for k in varying(tables["trials"]))
    notes = [f"{t['study']}/{t['trial_id']} ({hp}): {stopped_label(t)}, best epoch "
             f"{t['best_epoch']}. test_* at each epoch are those of the best model so far "
             "(lowest validation loss), final_test_* those of that epoch's weights; "
             "train_accuracy is of the batches as trained."]
    notes += _marks_notes(pd.Series([t["stop_reason"]]))
    return Report(f"curves: {t['trial_id']}", {"epochs": rows[cols].reset_index(drop=True)},
                  notes)


def _select(trials: pd.DataFrame, column: str, values: tuple[Any, ...]) -> pd.DataFrame:
    if column not in trials.columns:
        raise ReportError(f"the paper layout names column {column!r}, which trials lack")
    mask = np.zeros(len(trials), dtype=bool)
    col = trials[column]
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and \
                pd.api.types.is_numeric_dtype(col):
            mask |= np.isclose(col.to_numpy(dtype=float), float(v), rtol=0, atol=1e-9)
        else:
            mask |= (col == v).to_numpy()
    return trials[mask]


def paper_layout(trials: pd.DataFrame, table: PaperTable, agg: str = "max") -> pd.DataFrame:
    """Our results in ``table``'s layout, the paper's figure beside each of ours."""
    out = []
    for rk in table.row_keys:
        row: dict[str, Any] = {table.rows: rk}
        for ck in table.col_keys:
            metric: str | None = table.metric
            # Finished trials only: a failed one's zeros (epochs_run) are not figures.
            sel = trials[trials["status"] == "TERMINATED"]
            for column, value in table.where.items():
                sel = _select(sel, column, (value,))
            for axis, key in ((table.rows, rk), (table.cols, ck)):
                if axis == "metric":
                    ours = table.matches(key)
                    metric = ours[0] if ours else None
                else:
                    sel = _select(sel, axis, table.matches(key))
            metric = table.column(metric) if metric else None
            summary = (summarize(sel, metric, agg) if metric and metric in sel.columns
                       and len(sel) else None)
            row[f"{ck} paper"] = table.values.get((rk, ck))
            row[f"{ck} ours"] = cell_text(summary)
        out.append(row)
    return pd.DataFrame(out)


def paper(tables: dict[str, pd.DataFrame], space: str, agg: str = "max") -> Report:
    """Every table a seed paper reports for ``space``, laid out as in the paper, ours beside."""
    declared = paper_tables(space)
    studies = tables["studies"]
    names = studies.loc[studies["space"] == space, "study"]
    if not len(names):
        found = ", ".join(sorted(set(studies["space"]))) or "(no studies table)"
        raise ReportError(f"no loaded study ran space {space!r}; the loaded studies ran: {found}")
    trials = tables["trials"][tables["trials"]["study"].isin(names)]
    out, notes = {}, []
    for t in declared:
        out[t.source] = paper_layout(trials, t, agg)
        scored = ("the final epoch's weights (final_test_*)" if t.epoch == "final"
                  else "the best validation epoch's weights (test_*)")
        notes.append(f"{t.source}: {t.note} Ours: {scored}.")
    notes.append(f"ours: {agg} over each cell's configurations, mean ± std over seeds (n); "
                 "— where a study has no such trial or the paper no figure.")
    notes += [ASHA_NOTE] if (trials["stop_reason"] == "asha").any() else []
    return Report(f"{space}: the papers' tables beside ours ({', '.join(names)})", out, notes)


def overview(tables: dict[str, pd.DataFrame]) -> Report:
    """One row per study: where its numbers came from and how its trials ended."""
    s = tables["studies"]
    cols = ["study", "space", "data_source", "data_fingerprint", "code_revision", "started",
            "ended", "n_trials", "n_terminated", "n_error", "n_budget", "n_early_stopping",
            "n_asha", "python_version", "ray_version", "torch_version", "platform", "cpu_count",
            "gpu_count", "gpu_names", "nodes", "devices"]
    return Report("studies", {"studies": s[[c for c in cols if c in s.columns]]})
