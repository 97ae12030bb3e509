"""Every analysis command takes a study.train_best checkpoint (--checkpoint) like a trial.

Usage: ``python -m pytest tests/test_checkpoint_commands.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from study.evaluate import main as evaluate_main
from study.explain import main as explain_main
from study.robustness import main as robustness_main
from study.train_best import main as train_best_main


@pytest.fixture(scope="module")
def final_model(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("final")
    assert train_best_main(["--space", "cifake_fast_search", "--data", str(tiny_data),
                            "--set", "epochs=2", "--set", "image_size=16",
                            "--out", str(out)]) == 0
    return out


def test_evaluate_scores_a_checkpoint_and_writes_beside_it(
        final_model: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate_main(["--checkpoint", str(final_model / "checkpoint.pt"), "--data",
                          str(tiny_data), "--name", "again", "--quiet"]) == 0
    ev = pd.read_parquet(final_model / "evaluations.parquet")
    assert ev["trial_id"].tolist() == ["final"] and ev["eval_set"].tolist() == ["again"]
    assert ev["n_images"].iloc[0] == 128
    summary = json.loads((final_model / "summary.json").read_text())
    preds = pd.read_parquet(final_model / "eval_predictions.parquet")
    test = preds[preds["split"] == "test"]
    # The checkpoint's own test images, scored again, give its recorded test accuracy.
    assert (test["label"] == test["predicted"]).mean() == pytest.approx(
        summary["test_accuracy"])


def test_robustness_and_explain_take_a_checkpoint(final_model: Path, tmp_path: Path) -> None:
    ckpt = str(final_model / "checkpoint.pt")
    assert robustness_main(["--checkpoint", ckpt, "--jpeg", "50", "--scales", "--sigmas",
                            "--eps", "2", "--pgd-steps", "2", "--quiet",
                            "--out", str(tmp_path)]) == 0
    rob = pd.read_parquet(final_model / "robustness.parquet")
    clean = rob[rob["perturbation"] == "none"]
    summary = json.loads((final_model / "summary.json").read_text())
    assert clean["accuracy"].iloc[0] == pytest.approx(summary["test_accuracy"])
    out = tmp_path / "cam.png"
    assert explain_main(["--checkpoint", ckpt, "--images", "4", "--out", str(out),
                         "--quiet"]) == 0
    assert out.stat().st_size > 1000


def test_a_checkpoint_and_a_study_together_or_neither_is_an_error(
        final_model: Path, tiny_study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate_main([str(tiny_study), "--checkpoint", str(final_model / "checkpoint.pt"),
                          "--data", "x"]) == 2
    assert "not both" in capsys.readouterr().err
    assert explain_main([]) == 2
    assert "or --checkpoint FILE" in capsys.readouterr().err
    assert evaluate_main(["--checkpoint", str(final_model / "nope.pt"), "--data", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err
