"""The command line end to end through a real local Ray: tables, ASHA, crashes and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import results
from results.schema import EPOCHS, TRIALS
from search_spaces import SPACES, Space, grid
from study.run import main
from trainables.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def test_study_writes_trials_and_epochs_tables_and_asha_stops_some_trials(
    tiny_study: Path,
) -> None:
    tables = results.load(tiny_study)
    trials, epochs = tables["trials"], tables["epochs"]
    assert len(trials) == 6 and trials["trial_id"].is_unique
    assert set(f.name for f in TRIALS) <= set(trials.columns)
    assert set(f.name for f in EPOCHS) <= set(epochs.columns)
    for hp in TrainConfig.fields():
        assert hp in trials.columns
    assert (trials["status"] == "TERMINATED").all()
    # ASHA's rung at epoch 2 stops the worse half of the 3-epoch trials.
    assert (trials["stop_reason"] == "asha").sum() >= 1
    assert set(trials["stop_reason"]) <= {"asha", "budget"}
    stopped = trials[trials["stop_reason"] == "asha"]
    assert (stopped["epochs_run"] < 3).all()
    # One epochs row per trial and epoch run.
    assert len(epochs) == trials["epochs_run"].sum()
    assert trials["test_accuracy"].notna().all() and trials["images_per_second"].gt(0).all()
    assert trials["split_ratio"].isin([0.75, 0.8]).all()
    info = json.loads((tiny_study / "study.json").read_text())
    assert info["space"]["name"] == "quickstart" and info["overrides"]["epochs"] == 3


def test_existing_study_name_without_resume_is_refused(
    tiny_study: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--space", "quickstart", "--data", str(tiny_data),
                 "--storage", str(tiny_study.parent), "--name", "tiny", "--dry-run"])
    assert code == 0  # a dry run touches nothing
    code = main(["--space", "quickstart", "--data", str(tiny_data),
                 "--storage", str(tiny_study.parent), "--name", "tiny"])
    assert code == 2 and "already exists" in capsys.readouterr().err


def test_resume_of_an_older_study_directory_is_refused_with_the_reason(
    ray_session, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old"
    old.mkdir()
    (old / "study.json").write_text(json.dumps({"format": 0, "schema_version": 0}))
    code = main(["--space", "quickstart", "--data", str(tiny_data), "--storage", str(tmp_path),
                 "--name", "old", "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "older version" in err and "another --name" in err


def test_crashed_trial_is_an_error_row_and_the_study_goes_on(
    ray_session, tiny_data: Path, tmp_path: Path
) -> None:
    # lr 1e20 makes SGD diverge in the first epoch: the trial raises FloatingPointError.
    space = Space("crashy", "one sane and one diverging trial",
                  {"lr": grid(0.01, 1e20)},
                  fixed={"model": "small_cnn", "optimizer": "sgd", "epochs": 2,
                         "image_size": 16, "batch_size": 16}, asha=None)
    with SPACES.temporarily("crashy", space):
        code = main(["--space", "crashy", "--data", str(tiny_data), "--storage", str(tmp_path),
                     "--name", "c", "--max-failures", "0", "--quiet"])
    assert code == 0
    trials = results.load(tmp_path / "c")["trials"].set_index("lr")
    assert trials.loc[0.01, "status"] == "TERMINATED" and trials.loc[0.01, "epochs_run"] == 2
    assert trials.loc[1e20, "status"] == "ERROR"
    assert trials.loc[1e20, "stop_reason"] == "error"
    assert "FloatingPointError" in trials.loc[1e20, "error"]
    assert "lower lr" in trials.loc[1e20, "error"]


# The study's driver, in a process of its own, with its storage guard (a Tune callback) holding
# the driver still once the first run completes: it is killed there, mid-study, whatever the
# speed of the machine (a run of the tiny data lasts a few tenths of a second).
_PAUSING_DRIVER = """
import sys, time
from pathlib import Path
import study.run as run
from search_spaces import SPACES, Space

SPACES.add("resumable", Space.from_json({space!r}))
guard = run.storage_guard

def pausing_guard(path):
    callback = guard(path)
    complete = callback.on_trial_complete

    def on_trial_complete(*args, **kwargs):
        complete(*args, **kwargs)
        marker = Path({marker!r})
        if not marker.exists():  # once: the resumed study unpickles this callback too
            marker.touch()
            time.sleep(3600)

    callback.on_trial_complete = on_trial_complete
    return callback

run.storage_guard = pausing_guard
sys.exit(run.main(sys.argv[1:]))
"""


def test_resume_after_driver_is_killed_finishes_without_losing_or_duplicating_trials(
    ray_session, tiny_data: Path, tmp_path: Path
) -> None:
    # Eight trials in four folded runs (budgets 2 and 3), run one at a time; the driver is
    # killed once the first run has completed, and the resumed study finishes the rest.
    space = Space("resumable", "eight short trials in four folded runs, one at a time",
                  {"batch_size": grid(8, 16, 24, 32), "epochs": grid(2, 3)},
                  fixed={"model": "small_cnn", "image_size": 16}, asha=None)
    args = ["--data", str(tiny_data), "--storage", str(tmp_path), "--name", "r",
            "--max-concurrent", "1", "--quiet"]
    address = ray_session.get_runtime_context().gcs_address
    # The driver runs in its own process (joining this session's Ray) so it can be killed.
    marker = tmp_path / "first-run-complete"
    script = _PAUSING_DRIVER.format(space=space.to_json(), marker=str(marker))
    driver = subprocess.Popen([sys.executable, "-c", script, "--space", "resumable",
                               "--address", address, *args], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.time() + 240
    while not marker.exists() and time.time() < deadline:
        assert driver.poll() is None, "the driver ended before it could be killed"
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    assert (tmp_path / "r" / "study.json").exists()
    assert not (tmp_path / "r" / "trials.parquet").exists()

    with SPACES.temporarily("resumable", space):
        assert main(["--space", "resumable", "--resume", *args]) == 0
    tables = results.load(tmp_path / "r")
    trials = tables["trials"]
    assert len(trials) == 8 and trials["trial_id"].is_unique
    pairs = sorted(zip(trials["batch_size"], trials["epochs"], strict=True))
    assert pairs == [(b, e) for b in (8, 16, 24, 32) for e in (2, 3)]
    assert (trials["status"] == "TERMINATED").all()
    assert (trials["epochs_run"] == trials["epochs"]).all()
    assert (trials["best_epoch"] <= trials["epochs"]).all()
    epochs = tables["epochs"]
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert len(epochs) == 4 * (2 + 3)
    # Every trial, the budget-2 ones included, has its own test predictions.
    assert tables["predictions"].groupby("trial_id").size().to_dict() == dict.fromkeys(
        trials["trial_id"], len(tables["predictions"]) // 8)


def test_tables_are_replaced_atomically(study_copy: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    import io

    import pyarrow.parquet as pq

    from results.tables import write_table

    trials = results.load(study_copy)["trials"]
    before = (study_copy / "trials.parquet").read_bytes()
    real_write_table = pq.write_table

    def write_half_then_fail(table, where, *args, **kwargs) -> None:
        """A write cut short (a full disk, a crash): half the file, then an error."""
        buf = io.BytesIO()
        real_write_table(table, buf, *args, **kwargs)
        with open(where, "wb") as f:
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError("No space left on device")

    # Rewriting the table with one row fewer fails half-way: the old table stays, whole.
    monkeypatch.setattr(pq, "write_table", write_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        write_table(trials.iloc[1:], "trials", str(study_copy))
    monkeypatch.undo()
    assert (study_copy / "trials.parquet").read_bytes() == before
    assert results.load(study_copy)["trials"].equals(trials)
    assert [p.name for p in study_copy.iterdir() if p.name.endswith(".tmp")] == []

    write_table(trials, "trials", str(study_copy))
    leftovers = [p.name for p in study_copy.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    assert pd.read_parquet(study_copy / "trials.parquet").shape == trials.shape


def test_folded_budgets_give_exactly_the_trials_that_separate_runs_give_on_the_cpu(
    ray_session, tiny_data: Path, tmp_path: Path
) -> None:
    """A folded run's smaller budgets are the separate runs, epoch for epoch: as exact as a
    resume, so on the CPU (these trials'); on CUDA with deterministic=True."""
    import numpy as np

    from study.trials import TrialRef, load_trial_state

    space = Space("folding", "two configurations x budgets 1 and 3",
                  {"batch_size": grid(16, 32), "epochs": grid(1, 3)},
                  fixed={"model": "small_cnn", "image_size": 16, "lr": 3e-3}, asha=None)
    tables = {}
    with SPACES.temporarily("folding", space):
        for name, extra in (("folded", []), ("separate", ["--no-fold"])):
            assert main(["--space", "folding", "--data", str(tiny_data), "--storage",
                         str(tmp_path), "--name", name, "--quiet", *extra]) == 0
            tables[name] = results.load(tmp_path / name)
    # Two Tune runs serve four trials; separately there is a run per trial.
    assert len(list((tmp_path / "folded").glob("*/result.json"))) == 2
    assert len(list((tmp_path / "separate").glob("*/result.json"))) == 4
    folded, separate = (tables[n]["trials"].set_index("config_key") for n in tables)
    assert len(folded) == 4 and set(folded.index) == set(separate.index)
    same = ["epochs", "batch_size", "epochs_run", "stop_reason", "status", "best_epoch"]
    assert folded[same].sort_index().equals(separate[same].sort_index())
    close = ["best_val_loss", "best_val_accuracy", "test_accuracy", "test_auc", "threshold"]
    np.testing.assert_allclose(folded[close].sort_index().to_numpy(float),
                               separate[close].sort_index().to_numpy(float), atol=1e-5)
    # The stored predictions of each folded trial are those of its separate twin.
    preds = {n: tables[n]["predictions"].merge(tables[n]["trials"][["trial_id", "config_key"]])
             .sort_values(["config_key", "image_id"]) for n in tables}
    assert len(preds["folded"]) == len(preds["separate"]) > 0
    np.testing.assert_allclose(preds["folded"]["score"], preds["separate"]["score"], atol=1e-5)
    # The 1-epoch trial's checkpoint view holds its own best weights and its budget.
    key = folded.index[(folded["epochs"] == 1) & (folded["batch_size"] == 16)][0]
    states = {n: load_trial_state(TrialRef(str(tmp_path / n), n, t.loc[key, "trial_id"],
                                           t.loc[key]))
              for n, t in (("folded", folded), ("separate", separate))}
    assert folded.loc[key, "trial_id"].endswith("-e1")
    assert states["folded"]["config"]["epochs"] == 1 and states["folded"]["best"]["epoch"] == 1
    for k, w in states["separate"]["best"]["weights"].items():
        np.testing.assert_allclose(states["folded"]["best"]["weights"][k].numpy(), w.numpy(),
                                   atol=1e-6)
