"""Evaluation sets (``study.run --eval-data``): scored with the test set, never trained on.

Usage: ``python -m pytest tests/test_eval_sets.py``
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import write_cifake_folder
from PIL import Image

from results import load
from results.aggregate import ReportError, leaderboard
from search_spaces import get_space
from search_spaces.base import Space, SpaceError, grid
from study.eval_data import parse_eval_data
from study.run import main
from trainables.config import TrainConfig
from trainables.eval_sets import (
    EvalSetError,
    column,
    metric_key,
    parse_eval_metric,
    set_columns,
    set_metrics,
)
from trainables.inference import Detector
from trainables.ingest import load_dataset
from trainables.train import train


def write_generator_folder(root: Path, size: int = 16, n: int = 12) -> Path:
    """A ``<class>/`` set whose fakes come from two named generators (a manifest says which)."""
    rng = np.random.default_rng(7)
    rows = ["path,label,generator"]
    for label, cls, gens in ((0, "real", [""]), (1, "fake", ["gen_a", "gen_b"])):
        folder = root / cls
        folder.mkdir(parents=True)
        for g in gens:
            for i in range(n):
                base = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
                image = Image.fromarray(base).resize((size, size), Image.Resampling.BICUBIC)
                name = f"{cls}/{g or 'photo'}_{i}.png"
                image.save(root / name)
                rows.append(f"{name},{label},{g}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


# -- names, columns, metrics ------------------------------------------------------------------

def test_eval_metric_names_map_to_the_reported_column() -> None:
    assert parse_eval_metric("eval:external/auc") == ("external", "auc")
    assert metric_key("eval:ext_2/recall_real") == "eval_ext_2_recall_real"
    assert metric_key("val_accuracy") == "val_accuracy"
    assert parse_eval_metric("val_loss") is None


@pytest.mark.parametrize("metric, words", [
    ("eval:external", "eval:<set>/<metric>"),
    ("eval:external/f1_macro", "one of accuracy, auc, ap"),
    ("eval:9lives/auc", "cannot name a column"),
    ("eval:a__b/auc", "single underscores"),
])
def test_bad_eval_metric_names_say_what_to_write(metric: str, words: str) -> None:
    with pytest.raises(EvalSetError, match=words.replace("(", r"\(")):
        parse_eval_metric(metric)


def test_eval_data_flags_need_name_equals_path_and_distinct_names() -> None:
    assert parse_eval_data(["ext=a.zip", "other=b/"]) == {"ext": "a.zip", "other": "b/"}
    with pytest.raises(Exception, match="NAME=PATH"):
        parse_eval_data(["a.zip"])
    with pytest.raises(Exception, match="twice"):
        parse_eval_data(["ext=a.zip", "ext=b.zip"])


def test_set_metrics_score_each_generator_against_the_shared_reals() -> None:
    labels = np.array([0, 0, 1, 1, 1, 1])
    gens = np.array(["", "", "a", "a", "b", "b"])
    scores = np.array([0.1, 0.6, 0.9, 0.8, 0.2, 0.3])
    out = set_metrics("ext", labels, gens, scores, 0.5)
    assert out[column("ext", "accuracy")] == pytest.approx(3 / 6)
    # Generator a: its two fakes beside the two reals, all ranked right.
    assert out[column("ext", "auc", "a")] == 1.0
    assert out[column("ext", "accuracy", "a")] == pytest.approx(3 / 4)
    # Generator b's fakes score below one real: AUC 0.5 (2 of 4 pairs right).
    assert out[column("ext", "auc", "b")] == pytest.approx(0.5)
    assert column("ext", "auc", "b") == "eval_ext__b_auc"
    # Whole-set columns are found by set; generator columns are not mistaken for sets.
    assert set_columns(out, "auc") == {"ext": "eval_ext_auc"}


# -- in training ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("evalsets")
    train_dir = write_cifake_folder(root / "cifake")
    manifest = write_generator_folder(root / "gens")
    return {"train": load_dataset(train_dir, progress=False),
            "gens": load_dataset(manifest, image_size=16, progress=False),
            "train_dir": train_dir, "gens_path": manifest}


def test_an_evaluation_set_is_scored_every_epoch_and_changes_no_training(sets: dict) -> None:
    config = TrainConfig(model="small_cnn", epochs=3, batch_size=16, image_size=16)
    seen: list[dict] = []
    states: list[dict] = []

    def keep(metrics: dict, state) -> None:
        seen.append(metrics)
        states.append(state())

    with_sets = train(config, sets["train"], eval_sets={"gens": sets["gens"]}, on_epoch=keep)
    without = train(config, sets["train"])
    # The same training, validation and test figures to the bit: the set trains nothing and
    # chooses no epoch.
    for key in ("train_loss", "val_loss", "best_epoch", "test_accuracy", "test_auc"):
        assert with_sets[key] == without[key], key
    assert len(seen) == 3
    for metrics in seen:
        for m in ("accuracy", "auc", "ap", "recall", "recall_real"):
            assert math.isfinite(metrics[column("gens", m)])
        for g in ("gen_a", "gen_b"):
            assert math.isfinite(metrics[column("gens", "auc", g)])
    # The reported figures are the best epoch's weights scored as inference scores them.
    state = states[-1]
    detector = Detector.from_state(state)
    scores = detector.scores(sets["gens"].images)
    np.testing.assert_allclose(scores, state["best"]["eval_scores"]["gens"], atol=1e-6)
    assert seen[-1][column("gens", "accuracy")] == pytest.approx(
        float(((scores >= detector.threshold) == sets["gens"].labels).mean()))


# -- in a study -------------------------------------------------------------------------------

def _study(sets: dict, storage: Path, name: str, *extra: str) -> int:
    return main(["--space", "quickstart", "--data", str(sets["train_dir"]), "--storage",
                 str(storage), "--name", name, "--set", "epochs=3", "--set", "image_size=16",
                 "--set", "batch_size=32", "--quiet", *extra])


def test_a_study_ranks_and_stops_trials_on_an_evaluation_set(
        ray_session, sets: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gens = f"gens={sets['gens_path']}"
    assert _study(sets, tmp_path, "ev", "--eval-data", gens, "--metric", "eval:gens/auc") == 0
    tables = load(tmp_path / "ev")
    trials, epochs = tables["trials"], tables["epochs"]
    assert len(trials) == 2 and (trials["status"] == "TERMINATED").all()
    for col in ("eval_gens_auc", "eval_gens_accuracy", "eval_gens__gen_a_auc"):
        assert trials[col].notna().all(), col
    # Every epoch has the set's figures (what ASHA compared at its rung).
    assert epochs["eval_gens_auc"].notna().all()
    # The trial's figures are its best epoch's.
    for _, t in trials.iterrows():
        rows = epochs[epochs["trial_id"] == t["trial_id"]]
        assert rows["eval_gens_auc"].iloc[-1] == t["eval_gens_auc"]
    # One evaluations row per trial, the per-image scores beside it, and they agree.
    ev, preds = tables["evaluations"], tables["eval_predictions"]
    assert sorted(ev["trial_id"]) == sorted(trials["trial_id"])
    assert (ev["weights"] == "best").all() and (ev["eval_set"] == "gens").all()
    assert len(preds) == len(trials) * len(sets["gens"])
    merged = ev.set_index("trial_id")["auc"]
    np.testing.assert_allclose(merged.loc[trials["trial_id"]].to_numpy(),
                               trials["eval_gens_auc"].to_numpy())
    assert set(preds["generator"]) == {"", "gen_a", "gen_b"}
    info = json.loads((tmp_path / "ev" / "study.json").read_text())
    assert info["space"]["metric"] == "eval:gens/auc" and "gens" in info["eval_sets"]
    # Ranked by the worst set: here one set, so the worst is that set's AUC.
    board = leaderboard(tables, by="worst-eval").tables["leaderboard"]
    assert board["worst_eval_auc"].tolist() == sorted(trials["eval_gens_auc"], reverse=True)
    from results.report import sections

    assert "leaderboard by worst_eval_auc" in [r.title for r in sections(tables)]
    capsys.readouterr()
    # A resume must name the same sets.
    code = _study(sets, tmp_path, "ev", "--metric", "eval:gens/auc", "--resume")
    assert code == 2 and "--eval-data gens=PATH" in capsys.readouterr().err
    code = _study(sets, tmp_path, "ev", "--resume")
    err = capsys.readouterr().err
    assert code == 2 and "evaluation sets" in err and "--eval-data" in err


def test_a_metric_on_a_set_that_is_not_given_stops_before_any_work(
        sets: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _study(sets, tmp_path, "x", "--metric", "eval:external/auc") == 2
    err = capsys.readouterr().err
    assert "--eval-data external=PATH" in err
    assert not (tmp_path / "x").exists()


def test_the_training_data_cannot_be_its_own_evaluation_set(
        sets: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _study(sets, tmp_path, "y", "--eval-data", f"self={sets['train_dir']}") == 2
    assert "is the training data, or part of it" in capsys.readouterr().err


def test_leaderboard_by_worst_eval_ranks_by_the_weakest_set() -> None:
    import pandas as pd

    trials = pd.DataFrame({
        "study": "s", "trial_id": ["t1", "t2", "t3"], "model": ["a", "b", "c"],
        "status": "TERMINATED", "stop_reason": "budget", "epochs_run": 3, "epochs": 3,
        "best_epoch": 3, "test_accuracy": [0.99, 0.9, 0.8], "test_auc": 0.9,
        "train_seconds": 1.0,
        "eval_x_auc": [0.95, 0.70, 0.80], "eval_y_auc": [0.55, 0.72, np.nan],
    })
    tables = {"trials": trials}
    worst = leaderboard(tables, by="worst-eval").tables["leaderboard"]
    # t1 is best on CIFAKE and on x but worst on y; t3 lacks y and ranks last.
    assert worst["trial_id"].tolist() == ["t2", "t1", "t3"]
    mean = leaderboard(tables, by="mean-eval").tables["leaderboard"]
    assert mean["trial_id"].tolist() == ["t1", "t2", "t3"]
    assert {"eval_x_auc", "eval_y_auc"} <= set(worst.columns)
    with pytest.raises(ReportError, match="--eval-data"):
        leaderboard({"trials": trials.drop(columns=["eval_x_auc", "eval_y_auc"])},
                    by="worst-eval")


# -- spaces -----------------------------------------------------------------------------------

def test_the_generalise_space_ranks_on_the_external_set() -> None:
    space = get_space("generalise")
    assert space.metric == "eval:external/auc" and space.mode == "max"
    assert space.result_key == "eval_external_auc" == space.metric_column
    assert set(space.params) == {"blur", "jpeg", "rescale"}
    assert space.trial_count() == 8


def test_a_space_on_an_eval_metric_must_maximise_it() -> None:
    space = Space("s", "", {"epochs": grid(2, 4)}, metric="eval:ext/auc", mode="min")
    with pytest.raises(SpaceError, match="mode 'max'"):
        space.validate()


def test_leaderboard_shows_the_clean_test_set_where_the_test_set_leaks() -> None:
    import pandas as pd

    trials = pd.DataFrame({
        "study": "s", "trial_id": ["t1", "t2"], "model": ["a", "b"], "status": "TERMINATED",
        "stop_reason": "budget", "epochs_run": 3, "epochs": 3, "best_epoch": 3,
        "test_accuracy": [0.97, 0.95], "test_auc": 0.9, "train_seconds": 1.0,
        "test_clean_accuracy": [0.93, 0.94], "n_test": 100, "n_test_clean": 96,
    })
    board = leaderboard({"trials": trials}).tables["leaderboard"]
    assert board["test_clean_accuracy"].tolist() == [0.93, 0.94]
    clean = leaderboard({"trials": trials.assign(n_test_clean=100)}).tables["leaderboard"]
    assert "test_clean_accuracy" not in clean.columns


def _report_buffers(config: dict, data, eval_sets) -> None:
    from ray import tune

    images = eval_sets["gens"].images
    tune.report({"writeable": bool(images.flags.writeable),
                 "train_writeable": bool(data.images.flags.writeable),
                 "n": len(images)})


def test_evaluation_sets_reach_trials_as_the_object_stores_one_copy(
        ray_session, sets: dict, tmp_path: Path) -> None:
    """As study.run passes them (tune.with_parameters): put once, mapped read-only by every
    trial, never copied per trial."""
    import sys

    from ray import cloudpickle, tune

    # The workers cannot import this test module: ship the function by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    fn = tune.with_parameters(_report_buffers, data=sets["train"],
                              eval_sets={"gens": sets["gens"]})
    grid = tune.Tuner(fn, param_space={"i": tune.grid_search([0, 1])},
                      run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0)).fit()
    for result in grid:
        assert result.metrics["n"] == len(sets["gens"])
        # A zero-copy view of the object store's shared memory is read-only.
        assert result.metrics["writeable"] is False
        assert result.metrics["train_writeable"] is False
