"""study.predict: P(FAKE) of image files from a trained trial, and its clear errors.

Usage: ``python -m pytest tests/test_predict.py``
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import results
from results.tables import write_table
from study.predict import main, predict
from study.trials import best_trial, resolve_trials, trial_checkpoint
from trainables.train import save_state


def test_folder_prediction_matches_the_study_test_scores_and_writes_csv(
    study_copy: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "predictions.csv"
    assert main([str(tiny_data / "test"), "--study", str(study_copy), "--out", str(csv)]) == 0
    out = capsys.readouterr().out
    table = pd.read_csv(csv)
    assert list(table.columns) == ["path", "p_fake", "label"] and len(table) == 32
    assert set(table["label"]) <= {"REAL", "FAKE"}
    assert "32 image(s)" in out and "threshold 0.5" in out and "P(FAKE)" in out
    # The same images, scored through the file path, as the study scored them at its end.
    tables = results.load(study_copy)
    best = best_trial(tables["trials"])["trial_id"]
    stored = tables["predictions"][tables["predictions"]["trial_id"] == best]
    table["image_id"] = [str(Path(p).relative_to(tiny_data)) for p in table["path"]]
    both = table.merge(stored, on="image_id")
    assert len(both) == 32
    np.testing.assert_allclose(both["p_fake"], both["score"], atol=1e-5)
    assert ((both["label_x"] == "FAKE") == (both["predicted"] == 1)).all()


def test_a_single_file_of_another_size_is_cropped_and_resized_as_at_ingest(
    study_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    photo = tmp_path / "wide photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 64, 3), np.uint8)).save(photo)
    assert main([str(photo), "--study", str(study_copy)]) == 0
    out = capsys.readouterr().out
    assert "wide photo.png" in out and "1 image(s)" in out


def test_an_unreadable_file_is_named_and_can_be_skipped(
    study_copy: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "photos"
    shutil.copytree(tiny_data / "test" / "REAL", folder)
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    assert main([str(folder), "--study", str(study_copy)]) == 2
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "could not be read" in err and "--skip-bad" in err
    assert main([str(folder), "--study", str(study_copy), "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert "16 image(s)" in captured.out and "skipped" in captured.err
    assert "broken.jpg" in captured.err


def test_a_trial_without_a_checkpoint_says_so_and_how_to_get_one(
    study_copy: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trial_id = results.load(study_copy)["trials"]["trial_id"].iloc[-1]
    folder = trial_checkpoint(resolve_trials(str(study_copy), [trial_id])[0])
    for checkpoint in Path(folder).parent.glob("checkpoint_*"):
        shutil.rmtree(checkpoint)
    assert main([str(tiny_data / "test"), "--study", str(study_copy), "--trial", trial_id]) == 2
    err = capsys.readouterr().err
    assert f"trial {trial_id} has no checkpoint" in err and "--resume" in err


def test_a_missing_path_or_an_empty_folder_is_a_clear_error(
    study_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path / "nope.jpg"), "--study", str(study_copy)]) == 2
    assert "nope.jpg does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--study", str(study_copy)]) == 2
    assert "holds no image files" in capsys.readouterr().err


def test_an_anomaly_detector_prints_its_score_not_a_probability(
    trained_states: dict, tiny_data: Path, tmp_path: Path
) -> None:
    study = tmp_path / "vae_study"  # laid out as Tune lays out a study, with one trial
    folder = study / "trainable_vae01_00000_0_x" / "checkpoint_000002"
    folder.mkdir(parents=True)
    save_state(trained_states["vae_detector"], str(folder / "checkpoint.pt"))
    trials = pd.DataFrame({"study": ["v"], "trial_id": ["vae01_00000"],
                           "status": ["TERMINATED"], "best_val_accuracy": [0.9],
                           "best_val_loss": [1.0],
                           "checkpoint": ["trainable_vae01_00000_0_x/checkpoint_000002"]})
    write_table(trials, "trials", str(study))
    table, detector, trial_id, bad = predict(str(tiny_data / "test"), str(study), "best")
    assert trial_id == "vae01_00000" and detector.anomaly and not bad
    assert list(table.columns) == ["path", "anomaly_score", "label"]
    assert table["anomaly_score"].max() > 1  # a negative ELBO, not a probability
