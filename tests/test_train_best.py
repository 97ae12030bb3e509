"""study.train_best: retrain a chosen or best configuration on the whole pool, then predict.

Usage: ``python -m pytest tests/test_train_best.py`` (the tiny Ray study, once per session).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from study.predict import main as predict_main
from study.train_best import main as train_best_main


def test_train_best_retrains_on_the_whole_pool_and_predict_loads_it(
        tiny_data: Path, tiny_study: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "model"
    code = train_best_main(["--space", "cifake_fast_search", "--data", str(tiny_data),
                            "--set", "epochs=2", "--set", "image_size=16",
                            "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "scored on the data's own test split" in printed
    curve = pd.read_parquet(out / "curve.parquet")
    assert curve["epoch"].tolist() == [1, 2]
    assert (curve["wall_seconds"].diff().dropna() > 0).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_val"] == 0 and summary["n_train"] == 96 and summary["n_test"] == 32
    assert summary["config"]["split_ratio"] == 1.0
    assert summary["test_accuracy"] == pytest.approx(curve["test_accuracy"].iloc[-1])
    assert predict_main([str(tiny_data / "test" / "FAKE"), "--checkpoint",
                         str(out / "checkpoint.pt")]) == 0
    assert "16 image(s)" in capsys.readouterr().out
    # --study: the best trial of a finished study, with a validation set kept on request.
    code = train_best_main(["--study", str(tiny_study), "--data", str(tiny_data),
                            "--set", "epochs=1", "--validation", "0.25",
                            "--out", str(tmp_path / "from_study")])
    assert code == 0
    summary = json.loads((tmp_path / "from_study" / "summary.json").read_text())
    assert "best trial" in summary["origin"] and summary["n_val"] == 24


def test_train_best_errors_name_the_fix(tiny_data: Path, capsys: pytest.CaptureFixture) -> None:
    assert train_best_main(["--space", "quickstart", "--data", str(tiny_data)]) == 2
    assert "no chosen configuration yet" in capsys.readouterr().err
    assert train_best_main(["--space", "cifake_fast_search", "--data", str(tiny_data),
                            "--validation", "1.5"]) == 2
    assert "--validation 1.5 must lie in [0, 1)" in capsys.readouterr().err
