"""Every report, figure and the HTML page on a real finished study (``tiny_study``, real Ray).

Usage: ``python -m pytest tests/test_results_reports.py`` (about a minute: one tiny study).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import helpers
import numpy as np
import pandas as pd
import pytest

import results
from results.aggregate import compare, paper_layout
from results.figures import save, standard_figures
from results.paper_tables import PaperTable
from results.query import main as query
from results.render import FORMATS
from results.report import build_html, hyperparameters
from results.report import main as report_main
from results.tables import TrialOutcome, write_study_tables
from trainables.metrics import auc
from trainables.train import save_state

PNG = b"\x89PNG\r\n\x1a\n"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = query([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def as_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    code, out, err = run(capsys, *argv, "--format", "json")
    assert code == 0, err
    return json.loads(out)


# ---------------------------------------------------------------------------------------------
# What the study wrote


def test_predictions_reproduce_each_trials_test_metrics(tiny_study: Path) -> None:
    tables = results.load(tiny_study)
    trials, preds = tables["trials"].set_index("trial_id"), tables["predictions"]
    assert set(preds["trial_id"]) == set(trials.index)
    assert preds["label"].notna().all() and set(preds["label"]) == {0, 1}
    for trial_id, p in preds.groupby("trial_id"):
        t = trials.loc[trial_id]
        assert len(p) == t["n_test"] and p["image_id"].is_unique
        assert (p["predicted"] == (p["score"] >= t["threshold"])).all()
        assert (p["predicted"] == p["label"]).mean() == pytest.approx(t["test_accuracy"])
        assert auc(p["label"], p["score"]) == pytest.approx(t["test_auc"], abs=1e-6)


def test_studies_row_records_where_the_numbers_came_from(tiny_study: Path) -> None:
    tables = results.load(tiny_study)
    study = tables["studies"].iloc[0]
    info = json.loads((tiny_study / "study.json").read_text())
    assert (study["study"], study["space"]) == ("tiny", "quickstart")
    assert study["data_fingerprint"] == info["data_fingerprint"]
    assert study["data_source"] == info["data_source"] and study["data_layout"] == "cifake"
    assert study["ray_version"] and study["torch_version"] and study["python_version"]
    assert study["cpu_count"] == 2 and study["gpu_count"] == 0  # the session's Ray: 2 CPUs
    assert study["devices"] == "cpu" and study["nodes"]
    assert study["started"] <= study["ended"]
    assert study["n_trials"] == study["n_terminated"] == 6
    assert study["n_asha"] + study["n_budget"] + study["n_early_stopping"] == 6
    assert json.loads(study["overrides"]) == {"epochs": 3, "image_size": 16}


def test_trials_hold_identity_run_facts_and_every_hyperparameter(tiny_study: Path) -> None:
    trials = results.load(tiny_study)["trials"]
    for column in ("study", "trial_id", "config_key", "status", "stop_reason", "epochs_run",
                   "best_epoch", "best_val_accuracy", "test_accuracy", "test_auc",
                   "train_seconds", "wall_seconds", "images_per_second", "num_params", "node",
                   "device", "model", "batch_size", "split_ratio", "seed", "lr"):
        assert trials[column].notna().all(), column
    assert trials["config_key"].is_unique  # six different configurations, one seed each


# ---------------------------------------------------------------------------------------------
# The query command


def test_sql_exposes_every_table_as_a_view(tiny_study: Path, capsys) -> None:
    for table, rows in (("trials", 6), ("studies", 1)):
        got = as_json(capsys, "sql", f"SELECT count(*) AS n FROM {table}", tiny_study)
        assert got["tables"]["result"] == [{"n": rows}]
    got = as_json(capsys, "sql", "SELECT t.trial_id, avg((p.predicted = p.label)::INT) AS acc, "
                  "any_value(t.test_accuracy) AS reported FROM predictions p JOIN trials t "
                  "USING (study, trial_id) GROUP BY 1", tiny_study)
    for row in got["tables"]["result"]:
        assert row["acc"] == pytest.approx(row["reported"])
    code, _, err = run(capsys, "sql", "SELECT * FROM nowhere", tiny_study)
    assert code == 2 and "SQL error" in err


def test_leaderboard_marks_trials_stopped_by_asha(tiny_study: Path, capsys) -> None:
    got = as_json(capsys, "leaderboard", tiny_study, "--ci", "--n-boot", "200")
    board = pd.DataFrame(got["tables"]["leaderboard"])
    trials = results.load(tiny_study)["trials"].set_index("trial_id")
    assert list(board["rank"]) == list(range(1, 7))
    assert board["test_accuracy"].is_monotonic_decreasing
    for row in board.itertuples():
        reason = trials.loc[row.trial_id, "stop_reason"]
        assert row.stopped.startswith({"asha": "ASHA*", "budget": "budget"}[reason])
        assert row.acc_ci_low <= row.test_accuracy <= row.acc_ci_high
    assert any("not a verdict" in n for n in got["notes"])


def test_compare_pivots_a_metric_and_tests_cells_with_mcnemar(tiny_study: Path, capsys) -> None:
    got = as_json(capsys, "compare", tiny_study, "--rows", "batch_size", "--cols", "split_ratio",
                  "--metric", "test_accuracy", "--agg", "max")
    pivot = pd.DataFrame(got["tables"]["pivot"])
    assert list(pivot["batch_size"]) == [32, 64, 128]
    assert list(pivot.columns[1:]) == ["split_ratio=0.75", "split_ratio=0.8"]
    trials = results.load(tiny_study)["trials"]
    for row in pivot.itertuples(index=False):
        for ratio, text in zip((0.75, 0.8), row[1:], strict=True):
            t = trials[(trials["batch_size"] == row[0]) & np.isclose(trials["split_ratio"], ratio)]
            assert text.rstrip("*") == f"{t['test_accuracy'].item():.4f}"
            assert text.endswith("*") == (t["stop_reason"].item() == "asha")
    tests = got["tables"]["mcnemar"]
    assert len(tests) == 5 and all(0 <= t["p_value"] <= 1 for t in tests)


def test_compare_shows_mean_and_std_over_repeated_seeds(tmp_path: Path) -> None:
    outcomes = []
    for seed, acc in enumerate((0.70, 0.75, 0.80)):  # one configuration, three seeds
        outcomes.append(_outcome(tmp_path, f"a{seed}", batch_size=32, seed=seed, accuracy=acc))
    outcomes.append(_outcome(tmp_path, "b0", batch_size=64, seed=0, accuracy=0.9))
    write_study_tables(str(tmp_path / "s"), "s", outcomes, info={}, revision="")
    report = compare(results.load(tmp_path / "s"), rows="batch_size", metric="test_accuracy")
    pivot = report.tables["pivot"].set_index("batch_size")["test_accuracy"]
    # mean 0.75, sample std sqrt(((-0.05)^2 + 0 + 0.05^2) / 2) = 0.05
    assert pivot[32] == "0.7500 ± 0.0500 (n=3)" and pivot[64] == "0.9000"
    cells = report.tables["cells"].set_index("batch_size")
    assert cells.loc[32, "trial_id"] == "a2"  # the best seed represents the cell
    assert report.tables["mcnemar"]["other_trial"].tolist() == ["a2"]


def test_curves_lists_each_epoch_and_draws_them(tiny_study: Path, tmp_path: Path,
                                                capsys) -> None:
    trials = results.load(tiny_study)["trials"]
    trial = trials.iloc[0]
    png = tmp_path / "curves.png"
    got = as_json(capsys, "curves", f"tiny/{trial['trial_id']}", tiny_study, "--png", png)
    epochs = got["tables"]["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(1, trial["epochs_run"] + 1))
    assert all(0 <= e["train_accuracy"] <= 1 for e in epochs)
    assert epochs[-1]["final_test_accuracy"] is not None
    assert png.read_bytes().startswith(PNG)
    code, _, err = run(capsys, "curves", "no_such_trial", tiny_study)
    assert code == 2 and "no trial 'no_such_trial'" in err


def test_mcnemar_and_bootstrap_reports_on_real_trials(tiny_study: Path, capsys) -> None:
    trials = results.load(tiny_study)["trials"]
    a, b = trials["trial_id"].iloc[0], trials["trial_id"].iloc[1]
    got = as_json(capsys, "mcnemar", a, b, tiny_study)
    s = got["tables"]["summary"][0]
    assert s["n"] == trials["n_test"].iloc[0]
    assert s["accuracy_a"] == pytest.approx(trials["test_accuracy"].iloc[0])
    assert 0 <= s["p_value"] <= 1 and s["method"] in (
        "exact binomial", "chi-square with continuity correction")
    got = as_json(capsys, "bootstrap", a, tiny_study, "--n-boot", "500", "--seed", "1")
    rows = {r["metric"]: r for r in got["tables"]["bootstrap"]}
    assert rows["accuracy"]["estimate"] == pytest.approx(trials["test_accuracy"].iloc[0])
    assert rows["auc"]["estimate"] == pytest.approx(trials["test_auc"].iloc[0], abs=1e-6)
    for r in rows.values():
        assert r["low"] <= r["estimate"] <= r["high"] and r["n_boot"] == 500
    assert got == as_json(capsys, "bootstrap", a, tiny_study, "--n-boot", "500", "--seed", "1")


def test_paper_layout_puts_the_papers_figure_beside_ours(tiny_study: Path, capsys) -> None:
    tables = results.load(tiny_study)
    # A declaration like the seeds' (rows x cols -> the paper's figure) for the tiny space.
    table = PaperTable(space="quickstart", source="a made-up paper, Table 9",
                       rows="batch_size", cols="split_ratio", row_keys=(32, 64, 256),
                       col_keys=("75%", 0.8), values={(32, "75%"): 0.91, (64, 0.8): 0.93},
                       aliases={"75%": (0.75,)}).validate()
    layout = paper_layout(tables["trials"], table).set_index("batch_size")
    assert list(layout.columns) == ["75% paper", "75% ours", "0.8 paper", "0.8 ours"]
    pivot = compare(tables, "batch_size", "split_ratio").tables["pivot"].set_index("batch_size")
    assert layout.loc[32, "75% paper"] == 0.91 and layout.loc[64, "0.8 paper"] == 0.93
    assert layout.loc[32, "75% ours"] == pivot.loc[32, "split_ratio=0.75"]
    assert layout.loc[64, "0.8 ours"] == pivot.loc[64, "split_ratio=0.8"]
    assert layout.loc[256, "75% ours"] == "—" and pd.isna(layout.loc[256, "75% paper"])
    # The declared seed tables need a study of their space.
    code, _, err = run(capsys, "paper", "bartos_batch", tiny_study)
    assert code == 2 and "no loaded study ran space 'bartos_batch'" in err and "quickstart" in err
    code, _, err = run(capsys, "paper", "no_space", tiny_study)
    assert code == 2 and "bartos_split" in err


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_output_format_renders_the_reports(tiny_study: Path, capsys, fmt: str) -> None:
    code, out, err = run(capsys, "leaderboard", tiny_study, "--format", fmt)
    assert code == 0, err
    if fmt == "csv":
        assert len(pd.read_csv(io.StringIO(out))) == 6 and "ASHA" in err  # notes on stderr
    elif fmt == "json":
        assert len(json.loads(out)["tables"]["leaderboard"]) == 6
    elif fmt == "markdown":
        assert out.startswith("## leaderboard") and out.count("\n| ") >= 7
    else:
        assert "leaderboard by test_accuracy" in out and "ASHA*" in out
    code, out, _ = run(capsys, "compare", tiny_study, "--rows", "batch_size", "--format", fmt)
    assert code == 0 and out.strip()


def test_unknown_metric_names_the_choices(tiny_study: Path, capsys) -> None:
    code, _, err = run(capsys, "leaderboard", tiny_study, "--metric", "test_acc")
    assert code == 2 and "unknown metric 'test_acc'" in err and "test_accuracy" in err


# ---------------------------------------------------------------------------------------------
# Figures and the HTML page


def test_every_figure_is_written_as_a_png(tiny_study: Path, tmp_path: Path) -> None:
    figures = standard_figures(results.load(tiny_study))
    assert set(figures) == {"learning_curves", "accuracy_vs_batch_size",
                            "accuracy_vs_split_ratio", "confusion_matrices", "roc_curves",
                            "parallel_coordinates"}
    for stem, fig in figures.items():
        path = save(fig, tmp_path / f"{stem}.png")
        assert path.read_bytes().startswith(PNG) and path.stat().st_size > 10_000


def test_html_report_is_one_self_contained_page(tiny_study: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    assert report_main([str(tiny_study), "-o", str(out)]) == 0
    page = out.read_text()
    assert page.count("data:image/png;base64,") == 6
    assert "src=\"http" not in page and "<link" not in page and "<script" not in page
    for heading in ("studies", "leaderboard by test_accuracy", "by batch_size x split_ratio",
                    "hyperparameter importance for best_val_accuracy", "parallel coordinates"):
        assert heading in page
    assert "not a verdict" in page


def test_the_report_ranks_the_varied_hyperparameters_and_draws_them_in_parallel(
        tiny_study: Path) -> None:
    tables = results.load(tiny_study)
    section = hyperparameters(tables)
    importance = section.tables["importance"].set_index("parameter")["importance"]
    assert set(importance.index) == {"batch_size", "split_ratio"}  # what quickstart varies
    assert importance.sum() == pytest.approx(1.0)
    assert "fANOVA over the 6 finished trials" in section.notes[0]
    ax = standard_figures(tables)["parallel_coordinates"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "batch_size", "split_ratio", "best_val_accuracy"]
    trials = tables["trials"]
    lines = [line for line in ax.lines if len(line.get_xdata()) == 3]  # not the axis rules
    assert len(lines) == len(trials)
    dashed = sum(line.get_linestyle() == "--" for line in lines)
    assert dashed == (trials["stop_reason"] == "asha").sum()
    # Each axis is labelled with the values the trials took (batch sizes on a log scale).
    labels = {t.get_text() for t in ax.texts}
    assert {"32", "64", "128", "0.75", "0.8"} <= labels


def _varied_study(root: Path, batch_sizes: list[int], models: list[str] | None = None) -> dict:
    """A study of real checkpoints whose space varies batch_size (and model, if given)."""
    params = {"batch_size": {"kind": "grid", "values": sorted(set(batch_sizes))}}
    if models:
        params["model"] = {"kind": "grid", "values": sorted(set(models))}
    info = helpers.info(root.name)
    info["space"] = {"name": "unit", "metric": "val_accuracy", "params": params}
    outcomes = []
    for i, b in enumerate(batch_sizes):
        o = helpers.outcome(root, f"t{i}", batch_size=b, accuracy=0.5 + i / 10)
        o.history["best_val_accuracy"] = 0.6 + i / 20
        o.history[["test_tn", "test_fp", "test_fn", "test_tp"]] = (3, 1, 1, 3)
        if models:
            o.config["model"] = models[i]
        outcomes.append(o)
    helpers.write(root, root.name, outcomes, info=info)
    return results.load(root)


def test_too_few_trials_or_varied_hyperparameters_are_notes_not_crashes(tmp_path: Path
                                                                        ) -> None:
    two = _varied_study(tmp_path / "two", [16, 32])
    notes = " ".join(hyperparameters(two).notes)
    assert "no importance table: importance needs at least 3 finished trials" in notes
    assert "no parallel-coordinates figure" in notes and "found 2 trials" in notes
    assert "parallel_coordinates" not in standard_figures(two)
    one_axis = _varied_study(tmp_path / "one", [16, 32, 64])
    section = hyperparameters(one_axis)
    assert list(section.tables["importance"]["parameter"]) == ["batch_size"]
    assert "2 hyperparameters that varied among them (found 3 trials, varied: batch_size)" in (
        section.notes[-1])
    assert "parallel_coordinates" not in standard_figures(one_axis)
    page = build_html(one_axis, "one")  # the page is written, with the notes
    assert "no parallel-coordinates figure" in page and "parallel coordinates</h3>" not in page
    # A categorical axis (the model) is encoded and labelled by name.
    both = _varied_study(tmp_path / "both", [16, 32, 64], ["small_cnn", "vit", "small_cnn"])
    ax = standard_figures(both)["parallel_coordinates"].axes[0]
    assert {"small_cnn", "vit", "16", "64"} <= {t.get_text() for t in ax.texts}


# ---------------------------------------------------------------------------------------------


def _outcome(root: Path, trial_id: str, *, batch_size: int, seed: int, accuracy: float
             ) -> TrialOutcome:
    """A finished trial with a real checkpoint: 8 test images, ``accuracy`` of them right."""
    right = round(accuracy * 8)
    labels = np.array([0, 1] * 4, dtype=np.int8)
    scores = np.where(np.arange(8) < right, labels, 1 - labels).astype(np.float32)
    folder = root / trial_id
    folder.mkdir()
    save_state({"best": {"test_scores": scores, "threshold": 0.5},
                "test_ids": np.array([f"test/{i}.png" for i in range(8)]),
                "test_labels": labels}, str(folder / "checkpoint.pt"))
    history = pd.DataFrame([{"epoch": 1, "best_epoch": 1, "test_accuracy": accuracy,
                             "images_per_second": 10.0, "stop_reason": "budget"}])
    config = {"model": "small_cnn", "batch_size": batch_size, "seed": seed, "epochs": 1}
    return TrialOutcome(trial_id, config, history, None, str(folder))
