"""study.evaluate and the analysis tables: scoring a trial's checkpoint on any data set.

Usage: ``python -m pytest tests/test_evaluate.py`` (the tiny Ray study, ~1 min once per session).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from helpers import outcome, write

import results
from results.migrate import main as migrate_main
from results.schema import ROBUSTNESS, SCHEMA_VERSION, TABLES, VERSION_KEY
from results.tables import replace_rows
from study.evaluate import main
from study.trials import TrialError, best_trial, load_trial_state, resolve_trials, trial_checkpoint


def evaluate(study: Path, *args: str) -> int:
    return main([str(study), *args, "--quiet"])


def test_evaluation_appends_metrics_and_predictions_tagged_with_the_eval_set(
    study_copy: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert evaluate(study_copy, "--trial", "best", "--data", str(tiny_data), "--name", "a") == 0
    out = capsys.readouterr().out
    assert "study's own data" in out and "evaluations.parquet" in out
    tables = results.load(study_copy)
    best = best_trial(tables["trials"])["trial_id"]
    ev, preds = tables["evaluations"], tables["eval_predictions"]
    assert list(ev["trial_id"]) == [best] and list(ev["eval_set"]) == ["a"]
    row = ev.iloc[0]
    assert (row["n_images"], row["n_real"], row["n_fake"]) == (128, 64, 64)  # both splits
    assert row["weights"] == "best" and row["model"] == "small_cnn"
    assert len(preds) == 128 and set(preds["split"]) == {"train", "test"}
    assert row["accuracy"] == pytest.approx((preds["label"] == preds["predicted"]).mean())
    assert row["tp"] + row["fn"] == 64
    # Every table keeps its declared schema and version.
    for name in ("evaluations", "eval_predictions"):
        stored = pq.read_schema(study_copy / f"{name}.parquet")
        assert stored.remove_metadata().equals(TABLES[name])
        assert stored.metadata[VERSION_KEY] == str(SCHEMA_VERSION).encode()


def test_evaluating_the_same_trial_on_the_same_set_again_replaces_its_rows(
    study_copy: Path, tiny_data: Path
) -> None:
    for _ in range(2):
        assert evaluate(study_copy, "--data", str(tiny_data), "--name", "a") == 0
    tables = results.load(study_copy)
    assert len(tables["evaluations"]) == 1 and len(tables["eval_predictions"]) == 128
    trials = tables["trials"]["trial_id"].tolist()
    assert evaluate(study_copy, "--trial", trials[0], trials[1], "--data", str(tiny_data),
                    "--name", "b") == 0
    tables = results.load(study_copy)
    assert len(tables["evaluations"]) == 3 and len(tables["eval_predictions"]) == 3 * 128
    for name in ("evaluations", "eval_predictions"):
        assert not tables[name].duplicated(list(results.tables.KEYS[name])).any()
    # Loading twice, or the study with a copy of itself, adds nothing.
    again = results.load([study_copy, study_copy])
    assert len(again["eval_predictions"]) == 3 * 128


def test_scores_on_the_study_test_split_equal_the_stored_test_predictions(
    study_copy: Path, tiny_data: Path
) -> None:
    """The best weights, preprocessing and threshold are those the test metrics came from."""
    assert evaluate(study_copy, "--trial", "all", "--data", str(tiny_data)) == 0
    tables = results.load(study_copy)
    ev = tables["eval_predictions"]
    ev = ev[ev["split"] == "test"]
    both = ev.merge(tables["predictions"], on=["study", "trial_id", "image_id"])
    assert len(both) == len(ev) == len(tables["predictions"]) == 6 * 32
    np.testing.assert_allclose(both["score_x"], both["score_y"], atol=1e-5)
    assert (both["predicted_x"] == both["predicted_y"]).all()


def test_best_is_the_terminated_trial_with_the_highest_validation_accuracy() -> None:
    trials = pd.DataFrame({
        "trial_id": ["a", "b", "c", "d", "e"],
        "status": ["ERROR", "TERMINATED", "TERMINATED", "TERMINATED", "PENDING"],
        "best_val_accuracy": [0.99, 0.9, 0.9, 0.8, 0.95],
        "best_val_loss": [0.1, 0.4, 0.3, 0.1, 0.1],
    })
    assert best_trial(trials)["trial_id"] == "c"  # b ties on accuracy, c has the lower loss
    with pytest.raises(TrialError, match="no TERMINATED trial"):
        best_trial(trials[trials["status"] != "TERMINATED"])


def test_unknown_trial_error_lists_the_study_trials(
    tiny_study: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert evaluate(tiny_study, "--trial", "nope", "--data", str(tiny_data)) == 2
    err = capsys.readouterr().err
    known = results.load(tiny_study)["trials"]["trial_id"].iloc[0]
    assert "no trial 'nope'" in err and known in err and "'best'" in err


def test_trial_without_checkpoint_says_so_and_how_to_get_one(
    study_copy: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (ref,) = resolve_trials(str(study_copy), ["best"])
    folder = trial_checkpoint(ref)
    for checkpoint in Path(folder).parent.glob("checkpoint_*"):
        shutil.rmtree(checkpoint)
    assert not (Path(folder) / "checkpoint.pt").exists()
    assert evaluate(study_copy, "--trial", "best", "--data", str(tiny_data)) == 2
    err = capsys.readouterr().err
    assert f"trial {ref.trial_id} has no checkpoint" in err
    assert "--resume" in err and "another trial" in err
    assert not (study_copy / "evaluations.parquet").exists()


def test_a_folder_that_is_not_a_study_and_bad_data_are_clear_errors(
    study_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert evaluate(tmp_path, "--data", str(tmp_path)) == 2
    assert "holds no trials.parquet" in capsys.readouterr().err
    assert evaluate(study_copy, "--data", str(tmp_path / "missing")) == 2
    assert "does not exist" in capsys.readouterr().err


def test_trials_record_their_checkpoint_relative_to_the_study_directory(study_copy: Path
                                                                        ) -> None:
    """The driver knows each checkpoint: a copied study finds its own, no folder scanning."""
    trials = results.load(study_copy)["trials"]
    assert trials["checkpoint"].notna().all()
    for recorded in trials["checkpoint"]:
        assert not Path(recorded).is_absolute() and Path(recorded).name.startswith("checkpoint_")
        assert (study_copy / recorded / "checkpoint.pt").is_file()
    for ref in resolve_trials(str(study_copy), ["all"]):
        assert str(trial_checkpoint(ref)).startswith(str(study_copy))
        assert load_trial_state(ref)["test_ids"] is not None


def test_migrating_an_older_study_finds_checkpoints_in_renamed_tune_folders(
    study_copy: Path
) -> None:
    """A v3 study recorded no checkpoint: migrate finds it from Tune's folder names, and from
    result.json where a folder was renamed."""
    path = study_copy / "trials.parquet"
    table = pq.read_table(path)
    expected = dict(zip(table["trial_id"].to_pylist(), table["checkpoint"].to_pylist(),
                        strict=True))
    meta = {**table.schema.metadata, VERSION_KEY: b"3"}
    pq.write_table(table.drop(["checkpoint"]).replace_schema_metadata(meta), path)
    for i, recorded in enumerate(sorted({c.split("/")[0] for c in expected.values()})[:1]):
        (study_copy / recorded).rename(study_copy / f"renamed{i}")
        expected = {t: c.replace(recorded, f"renamed{i}", 1) for t, c in expected.items()}
    with pytest.raises(results.SchemaError, match=r"results\.migrate"):
        results.load(study_copy)
    assert migrate_main([str(study_copy)]) == 0
    trials = results.load(study_copy)["trials"]
    assert dict(zip(trials["trial_id"], trials["checkpoint"], strict=True)) == expected
    for ref in resolve_trials(str(study_copy), ["all"]):
        assert load_trial_state(ref)["test_ids"] is not None


def test_a_resumed_study_keeps_its_analysis_tables(tmp_path: Path) -> None:
    """study.run rewrites only its own tables; evaluations and robustness survive a resume."""
    study = tmp_path / "s"
    write(study, "s", [outcome(tmp_path, "t1")])
    rows = pd.DataFrame({"study": ["s"], "trial_id": ["t1"], "eval_set": ["x"],
                         "accuracy": [0.5], "tp": [3]})
    replace_rows(str(study), "evaluations", rows, ("study", "trial_id", "eval_set"))
    robust = pd.DataFrame({"study": "s", "trial_id": "t1", "perturbation": ["none", "jpeg"],
                           "strength": [0.0, 90.0], "accuracy": [0.75, 0.5]})
    replace_rows(str(study), "robustness", robust, ("study", "trial_id"))
    write(study, "s", [outcome(tmp_path, "t1", epochs=4)])  # the resumed study's write
    tables = results.load(study)
    assert tables["evaluations"]["eval_set"].tolist() == ["x"]
    assert tables["robustness"]["perturbation"].tolist() == ["none", "jpeg"]  # kept in order
    assert pq.read_schema(study / "robustness.parquet").remove_metadata().equals(ROBUSTNESS)
    assert tables["trials"]["epochs_run"].item() == 4


def test_a_study_without_analysis_tables_loads_them_empty(tmp_path: Path) -> None:
    write(tmp_path / "s", "s", [outcome(tmp_path, "t1")])
    tables = results.load(tmp_path / "s")
    for name in ("evaluations", "eval_predictions", "robustness"):
        assert len(tables[name]) == 0 and list(tables[name].columns) == TABLES[name].names
