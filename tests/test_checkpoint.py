"""Checkpoints hold data, never code: round trips, planted pickles, the trust flag.

Usage: ``python -m pytest tests/test_checkpoint.py``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

import results
from study.evaluate import main as evaluate_main
from study.predict import main as predict_main
from study.trials import resolve_trials, trial_checkpoint
from trainables import checkpoint
from trainables.checkpoint import TRUST_ENV, CheckpointError


class Payload:
    """What an attacker plants: unpickling it calls ``Path.touch(marker)``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def plant(path: Path, marker: Path) -> None:
    buf = io.BytesIO()
    torch.save({"format": 2, "config": {}, "best": {"weights": Payload(marker)}}, buf)
    path.write_bytes(buf.getvalue())


def test_state_round_trips_with_numpy_arrays_scalars_and_shared_records(tmp_path: Path) -> None:
    record = {"weights": {"w": torch.arange(6.0).reshape(2, 3)}, "val_loss": np.float64(0.25),
              "test_scores": np.array([0.1, 0.9], dtype=np.float32)}
    state = {"format": 2, "epoch": 3, "best": record, "budget_best": {1: record, 2: record},
             "test_ids": np.array(["test/REAL/a.png", "test/FAKE/b.png"]),
             "test_labels": np.array([0, 1], dtype=np.int8), "nested": [(1, "x"), None]}
    checkpoint.save(state, tmp_path / "c.pt")
    back = checkpoint.load(tmp_path / "c.pt")
    assert back["test_ids"].tolist() == ["test/REAL/a.png", "test/FAKE/b.png"]
    assert back["test_labels"].dtype == np.int8 and back["test_labels"].tolist() == [0, 1]
    best = back["best"]
    assert best["test_scores"].dtype == np.float32
    np.testing.assert_array_equal(best["test_scores"], state["best"]["test_scores"])
    assert isinstance(best["val_loss"], float) and best["val_loss"] == 0.25
    assert torch.equal(best["weights"]["w"], record["weights"]["w"])
    # An unchanged record is one object, stored once, and comes back as one.
    assert back["budget_best"][1] is back["budget_best"][2] is best
    assert back["nested"] == [(1, "x"), None]


def test_a_planted_pickle_is_refused_without_running(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRUST_ENV, raising=False)
    marker = tmp_path / "pwned"
    plant(tmp_path / "c.pt", marker)
    with pytest.raises(CheckpointError, match="--trust-checkpoints") as err:
        checkpoint.load(tmp_path / "c.pt")
    assert "could run code" in str(err.value) and "not loaded" in str(err.value)
    assert not marker.exists()


def test_an_older_pickled_checkpoint_loads_only_when_trusted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = {"format": 2, "test_ids": np.array(["a.png"]), "best": {"threshold": np.float64(0.5)}}
    buf = io.BytesIO()
    torch.save(old, buf)  # how checkpoints were written before: numpy objects pickled
    (tmp_path / "old.pt").write_bytes(buf.getvalue())
    monkeypatch.delenv(TRUST_ENV, raising=False)
    with pytest.raises(CheckpointError, match="older version"):
        checkpoint.load(tmp_path / "old.pt")
    monkeypatch.setenv(TRUST_ENV, "1")
    assert checkpoint.load(tmp_path / "old.pt")["test_ids"].tolist() == ["a.png"]


def test_analysis_commands_refuse_a_planted_checkpoint_in_a_study(
        study_copy: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRUST_ENV, raising=False)
    marker = tmp_path / "pwned"
    (ref,) = resolve_trials(str(study_copy), ["best"])
    plant(Path(trial_checkpoint(ref)) / "checkpoint.pt", marker)
    assert evaluate_main([str(study_copy), "--data", str(tiny_data), "--quiet"]) == 2
    assert "--trust-checkpoints" in capsys.readouterr().err
    assert predict_main([str(tiny_data / "test"), "--study", str(study_copy)]) == 2
    assert "--trust-checkpoints" in capsys.readouterr().err
    assert not marker.exists()
    assert not results.load(study_copy)["evaluations"].shape[0]


def test_study_checkpoints_are_written_in_the_safe_format(tiny_study: Path) -> None:
    (ref,) = resolve_trials(str(tiny_study), ["best"])
    blob = (Path(trial_checkpoint(ref)) / "checkpoint.pt").read_bytes()
    state = torch.load(io.BytesIO(blob), weights_only=True)  # no pickled objects at all
    assert state["epoch"] >= 1 and "weights" in state["best"]
