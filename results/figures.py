"""Figures of studies as PNG (matplotlib, Agg): curves, metric vs a hyperparameter, CMs, ROC,
parallel coordinates of the varied hyperparameters against the study metric, accuracy under
perturbations (``robustness_figure``, drawn by ``python -m study.robustness``).

Usage:
    python -m results.figures studies/grid1 -o figures/        # every figure as a PNG
    fig = learning_curves(tables["epochs"], tables["trials"]); save(fig, "curves.png")
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from results.aggregate import ReportError, higher_is_better, summarize, varying
from results.importance import MIN_TRIALS, finished_trials, study_metric

DPI = 110
LOG2_AXES = ("batch_size",)  # doubling grids read best on a log2 axis


def pick_trials(trials: pd.DataFrame, n: int = 6, metric: str = "test_accuracy") -> list[str]:
    """The ``n`` best trials by ``metric`` (study/trial_id), for figures that cannot show all."""
    ranked = trials[trials[metric].notna()].sort_values(
        metric, ascending=not higher_is_better(metric), kind="stable")
    return [f"{r.study}/{r.trial_id}" for r in ranked.head(n).itertuples()]


def _keys(trials: pd.DataFrame) -> list[str]:
    """The hyperparameters worth naming in a legend: those that differ between trials."""
    return [k for k in varying(trials) if trials[k].nunique(dropna=False) > 1]


def _label(trial: pd.Series, keys: list[str]) -> str:
    hp = ", ".join(f"{k}={trial[k]}" for k in keys)
    mark = {"asha": " (ASHA cut)", "early_stopping": " (patience)"}.get(trial["stop_reason"], "")
    return f"{trial['trial_id']}" + (f": {hp}" if hp else "") + mark


def _rows(trials: pd.DataFrame, refs: list[str]) -> list[pd.Series]:
    out = []
    for ref in refs:
        study, _, tid = ref.rpartition("/")
        hit = trials[(trials["trial_id"] == tid) & ((trials["study"] == study) | (study == ""))]
        if len(hit):
            out.append(hit.iloc[0])
    return out


def learning_curves(epochs: pd.DataFrame, trials: pd.DataFrame, refs: list[str] | None = None
                    ) -> Figure:
    """Loss and accuracy per epoch: training solid, validation dashed (training accuracy is
    of the batches as trained, as Keras plots it; absent in studies before schema v5)."""
    refs = refs or pick_trials(trials)
    keys = _keys(trials)
    fig = Figure(figsize=(12, 4.8), dpi=DPI)
    loss_ax, acc_ax = fig.subplots(1, 2)
    colors = matplotlib.colormaps["tab10"]
    for i, t in enumerate(_rows(trials, refs)):
        e = epochs[(epochs["study"] == t["study"]) & (epochs["trial_id"] == t["trial_id"])]
        c = colors(i % 10)
        loss_ax.plot(e["epoch"], e["train_loss"], "-o", color=c, ms=3, label=_label(t, keys))
        loss_ax.plot(e["epoch"], e["val_loss"], "--", color=c)
        if "train_accuracy" in e.columns and e["train_accuracy"].notna().any():
            acc_ax.plot(e["epoch"], e["train_accuracy"], "-", color=c, alpha=0.6)
        acc_ax.plot(e["epoch"], e["val_accuracy"], "--o", color=c, ms=3)
        if t["stop_reason"] == "asha" and len(e):
            acc_ax.plot(e["epoch"].iloc[-1], e["val_accuracy"].iloc[-1], "x", color=c, ms=10,
                        mew=2)
    loss_ax.set(title="loss (solid: train, dashed: validation)", xlabel="epoch", ylabel="loss")
    acc_ax.set(title="accuracy (solid: train, dashed: validation; x: cut by ASHA)",
               xlabel="epoch", ylabel="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.legend(*loss_ax.get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8,
               frameon=False)
    fig.subplots_adjust(bottom=0.32, wspace=0.25)
    return fig


def metric_vs(trials: pd.DataFrame, x: str, hue: str = "model", metric: str = "test_accuracy"
              ) -> Figure:
    """``metric`` against hyperparameter ``x``, one line per ``hue``: each point the best
    configuration's mean over seeds (error bar: std over seeds), grey dots every trial."""
    fig = Figure(figsize=(6.5, 4.5), dpi=DPI)
    ax = fig.subplots()
    data = trials[trials[metric].notna()]
    ax.scatter(data[x], data[metric], color="0.7", s=14, zorder=1, label="each trial")
    for name, group in data.groupby(hue, sort=True):
        points = [(xv, summarize(g, metric, "max")) for xv, g in group.groupby(x, sort=True)]
        xs = [p[0] for p in points]
        ys = [p[1]["value"] for p in points]
        err = [0 if np.isnan(p[1]["std"]) else p[1]["std"] for p in points]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=4, zorder=2, label=f"{hue}={name}")
    if x in LOG2_AXES:
        ax.set_xscale("log", base=2)
    values = sorted(data[x].unique())
    ax.set_xticks(values, [f"{v:g}" for v in values])
    ax.set(xlabel=x, ylabel=metric, title=f"{metric} vs {x}\n(best configuration per point, "
           "± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusion_matrices(trials: pd.DataFrame, refs: list[str] | None = None) -> Figure:
    """Test-set confusion matrices (rows: true class, columns: predicted) of chosen trials."""
    rows = _rows(trials, refs or pick_trials(trials, 4))
    n = max(len(rows), 1)
    ncols = 2 if n == 4 else min(n, 3)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(3.6 * ncols, 3.5 * nrows), dpi=DPI)
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for ax, t in zip(axes, rows, strict=False):  # spare axes stay blank
        m = np.array([[t["test_tn"], t["test_fp"]], [t["test_fn"], t["test_tp"]]], dtype=float)
        share = m / max(m.sum(), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=max(share.max(), 1e-9))
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{int(v)}\n{share[i, j]:.1%}", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 * share.max() else "black", fontsize=10)
        ax.set_xticks([0, 1], ["REAL", "FAKE"])
        ax.set_yticks([0, 1], ["REAL", "FAKE"])
        ax.set(xlabel="predicted", ylabel="true",
               title=f"{t['trial_id']}\nacc {t['test_accuracy']:.3f}")
    for ax in axes[len(rows):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def roc_curves(predictions: pd.DataFrame, trials: pd.DataFrame, refs: list[str] | None = None
               ) -> Figure:
    """ROC curves on the common test set from the stored predictions."""
    fig = Figure(figsize=(6, 7), dpi=DPI)
    ax = fig.subplots()
    keys = _keys(trials)
    for t in _rows(trials, refs or pick_trials(trials, 6)):
        p = predictions[(predictions["study"] == t["study"])
                        & (predictions["trial_id"] == t["trial_id"])]
        if not len(p) or p["label"].isna().any() or p["label"].nunique() < 2:
            continue
        fpr, tpr, _ = roc_curve(p["label"].astype(int), p["score"])
        ax.plot(fpr, tpr, lw=1.5, label=f"{_label(t, keys)}  AUC {t['test_auc']:.3f}")
    ax.plot([0, 1], [0, 1], ":", color="0.5", label="chance")
    ax.set(xlabel="false positive rate (REAL called FAKE)",
           ylabel="true positive rate (FAKE caught)", title="ROC on the test set",
           xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    fig.tight_layout()
    return fig


def robustness_figure(rows: pd.DataFrame, title: str = "") -> Figure:
    """Accuracy (solid) and ROC AUC (dashed) of one trial under each perturbation family.

    ``rows`` are one trial's rows of the ``robustness`` table; the clean score is each panel's
    first point and a grey line, chance (0.5) a dotted one.
    """
    clean = rows[rows["perturbation"] == "none"]
    clean_acc = float(clean["accuracy"].iloc[0]) if len(clean) else float("nan")
    clean_auc = float(clean["auc"].iloc[0]) if len(clean) else float("nan")
    panels = [
        ("JPEG re-compression", ["jpeg"], "quality (100 = clean)", lambda v: v, 100.0),
        ("rescale and back", ["rescale"], "scale factor (1 = clean)", lambda v: v, 1.0),
        ("Gaussian noise", ["noise"], "sigma on 0-255 (0 = clean)", lambda v: v, 0.0),
        ("attacks (FGSM, PGD)", ["fgsm", "pgd"], "eps x 255 (0 = clean)", lambda v: v * 255,
         0.0),
    ]
    fig = Figure(figsize=(13, 3.9), dpi=DPI)
    axes = fig.subplots(1, len(panels), sharey=True)
    colors = {"jpeg": "C0", "rescale": "C1", "noise": "C2", "fgsm": "C3", "pgd": "C4"}
    for ax, (name, kinds, xlabel, to_x, clean_x) in zip(axes, panels, strict=True):
        for kind in kinds:
            r = rows[rows["perturbation"] == kind].sort_values("strength")
            if not len(r):
                continue
            xs = [clean_x, *to_x(r["strength"]).tolist()]
            order = np.argsort(xs)
            xs = np.asarray(xs)[order]
            acc = np.asarray([clean_acc, *r["accuracy"]])[order]
            auc = np.asarray([clean_auc, *r["auc"]])[order]
            label = kind.upper() if len(kinds) > 1 else "accuracy"
            marker = "s" if kind == "pgd" else "o"  # FGSM and PGD often coincide
            ax.plot(xs, acc, "-" + marker, color=colors[kind], ms=6 if kind == "fgsm" else 4,
                    mfc="none" if kind == "fgsm" else None, label=label)
            ax.plot(xs, auc, "--", color=colors[kind], alpha=0.6,
                    label=f"{label} AUC" if len(kinds) > 1 else "ROC AUC")
        if kinds == ["jpeg"]:
            ax.invert_xaxis()  # stronger compression to the right, as on the other panels
        if kinds == ["rescale"]:
            ax.set_xscale("log", base=2)
            ticks = sorted({1.0, *rows.loc[rows["perturbation"] == "rescale", "strength"]})
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.axhline(clean_acc, color="0.6", lw=1)
        ax.axhline(0.5, color="0.6", lw=1, ls=":")
        ax.set(title=name, xlabel=xlabel, ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
        else:
            ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes,
                    color="0.5")
    axes[0].set_ylabel("accuracy (solid), ROC AUC (dashed)")
    n = int(rows["n_images"].iloc[0]) if len(rows) else 0
    fig.suptitle(f"{title}  (n={n} test images; grey: clean accuracy, dotted: chance)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def _axis(values: pd.Series) -> tuple[np.ndarray, list[float], list[str]]:
    """One parallel axis: each trial's height in [0, 1], and the ticks (heights, labels).

    Numbers that span a factor of 4 or more (batch sizes, learning rates) sit on a log scale,
    where a doubling grid is evenly spaced; anything else that is not a number (a model, a
    schedule, a flag) is a category, in sorted order, evenly spaced and labelled by name.
    """
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        x = values.astype(float).to_numpy()
        lo, hi = np.nanmin(x), np.nanmax(x)
        log = lo > 0 and hi / lo >= 4
        f = np.log10 if log else (lambda v: v)
        span = (f(hi) - f(lo)) or 1.0
        height = (f(x) - f(lo)) / span
        distinct = np.unique(x[~np.isnan(x)])
        ticks = distinct if len(distinct) <= 8 else (
            10 ** np.linspace(f(lo), f(hi), 5) if log else np.linspace(lo, hi, 5))
        return height, [float((f(t) - f(lo)) / span) for t in ticks], [f"{t:.3g}" for t in ticks]
    names = sorted(values.astype(str).unique())
    at = {n: i / max(len(names) - 1, 1) for n, i in zip(names, range(len(names)), strict=True)}
    return values.astype(str).map(at).to_numpy(dtype=float), list(at.values()), names


def parallel_coordinates(trials: pd.DataFrame, params: list[str], metric: str) -> Figure:
    """One line per trial across an axis per hyperparameter and the study metric, coloured by
    the metric; trials cut by ASHA are dashed (their metric is of a shorter run)."""
    columns = [*params, metric]
    fig = Figure(figsize=(max(6.5, 1.9 * len(columns)), 4.8), dpi=DPI)
    ax = fig.subplots()
    axes = [_axis(trials[c]) for c in columns]
    heights = np.column_stack([a[0] for a in axes])
    value = trials[metric].astype(float).to_numpy()
    norm = matplotlib.colors.Normalize(np.nanmin(value), np.nanmax(value))
    cmap = matplotlib.colormaps["viridis"]
    xs = np.arange(len(columns))
    cut = (trials["stop_reason"] == "asha").to_numpy() if "stop_reason" in trials else (
        np.zeros(len(trials), dtype=bool))
    for i in np.argsort(value, kind="stable"):  # the highest values drawn last, on top
        row, v, dashed = heights[i], value[i], cut[i]
        ax.plot(xs, row, "--" if dashed else "-", color=cmap(norm(v)), lw=1.6, alpha=0.8)
    for i, (_, at, labels) in enumerate(axes):
        ax.axvline(i, color="0.3", lw=1)
        for y, label in zip(at, labels, strict=True):
            ax.text(i - 0.03, y, label, ha="right", va="center", fontsize=8,
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1})
    ax.set_xticks(xs, columns)
    ax.set_yticks([])
    ax.set_xlim(-0.45, len(columns) - 0.85)
    ax.set_ylim(-0.06, 1.06)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=metric,
                 pad=0.02)
    ax.set_title(f"{len(trials)} finished trials: hyperparameters against {metric}\n"
                 "(one line per trial, coloured by the metric; dashed: cut by ASHA)")
    fig.tight_layout()
    return fig


def hyperparameter_view(tables: dict[str, pd.DataFrame]
                        ) -> tuple[pd.DataFrame, list[str], str]:
    """(finished trials, the hyperparameters that vary among them, the study metric) for the
    parallel-coordinates figure; a ReportError says why there is none."""
    metric = study_metric(tables)
    done, params = finished_trials(tables, metric)
    if len(done) < MIN_TRIALS or len(params) < 2:
        raise ReportError(f"a parallel-coordinates figure needs at least {MIN_TRIALS} finished "
                          f"trials with {metric} and 2 hyperparameters that varied among them "
                          f"(found {len(done)} trials, varied: {', '.join(params) or 'none'})")
    return done, params, metric


def standard_figures(tables: dict[str, pd.DataFrame]) -> dict[str, Figure]:
    """Every figure that the loaded tables support, by file stem."""
    trials, out = tables["trials"], {}
    if not trials["test_accuracy"].notna().any():
        return out
    out["learning_curves"] = learning_curves(tables["epochs"], trials)
    hue = "model"
    for x in ("batch_size", "split_ratio"):
        if trials[x].nunique() > 1:
            out[f"accuracy_vs_{x}"] = metric_vs(trials, x, hue)
    out["confusion_matrices"] = confusion_matrices(trials)
    if len(tables["predictions"]):
        out["roc_curves"] = roc_curves(tables["predictions"], trials)
    try:
        out["parallel_coordinates"] = parallel_coordinates(*hyperparameter_view(tables))
    except ReportError:
        pass  # fewer than 2 varied hyperparameters or 3 finished trials: the report says so
    return out


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(fig))
    return path


def main(argv: list[str] | None = None) -> int:
    from results.tables import load

    p = argparse.ArgumentParser(prog="python -m results.figures", description=__doc__.split(
        "\n")[0])
    p.add_argument("study_dirs", nargs="+")
    p.add_argument("-o", "--out", default="figures", help="folder for the PNG files")
    args = p.parse_args(argv)
    for stem, fig in standard_figures(load(args.study_dirs)).items():
        print(save(fig, Path(args.out) / f"{stem}.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
