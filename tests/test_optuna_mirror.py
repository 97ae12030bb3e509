"""The live Optuna mirror of a study: the journal read back by Optuna equals the trials table,
a resume adds no duplicates, and optuna-dashboard serves it.

Usage: ``python -m pytest tests/test_optuna_mirror.py`` (the session's tiny Ray study).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

import results
from study.optuna_mirror import journal_storage
from study.run import main


def mirrored(study_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name=study_dir.name,
                             storage=journal_storage(str(study_dir / "optuna.log")))


def test_the_journal_holds_the_trials_of_the_tables_with_their_states_and_curves(
        tiny_study: Path) -> None:
    tables = results.load(tiny_study)
    trials = tables["trials"].set_index("trial_id")
    study = mirrored(tiny_study)
    by_id = {t.user_attrs["trial_id"]: t for t in study.get_trials(deepcopy=False)}
    assert set(by_id) == set(trials.index)  # folded budgets appear as the tables' trials
    epochs = tables["epochs"]
    for trial_id, t in by_id.items():
        row = trials.loc[trial_id]
        assert set(t.params) == {"batch_size", "split_ratio"}  # what quickstart varies
        assert t.params["batch_size"] == row["batch_size"]
        assert t.params["split_ratio"] == pytest.approx(row["split_ratio"])
        expected = (optuna.trial.TrialState.PRUNED if row["stop_reason"] == "asha"
                    else optuna.trial.TrialState.COMPLETE)
        assert t.state == expected, (trial_id, row["stop_reason"])
        if expected == optuna.trial.TrialState.COMPLETE:
            assert t.value == pytest.approx(row["best_val_accuracy"])
        curve = epochs[epochs["trial_id"] == trial_id].set_index("epoch")["val_accuracy"]
        assert t.intermediate_values == pytest.approx(curve.to_dict())
    assert study.user_attrs["metric"] == "val_accuracy"


def test_folded_budgets_are_mirrored_as_one_trial_per_budget(
        ray_session, tiny_data: Path, tmp_path: Path) -> None:
    assert main(["--space", "quickstart", "--data", str(tiny_data), "--storage", str(tmp_path),
                 "--name", "q", "--set", "image_size=16", "--set", "batch_size=64", "--set",
                 "split_ratio=0.8", "--quiet"]) == 0
    trials = results.load(tmp_path / "q")["trials"].set_index("trial_id")
    assert len(trials) == 2  # epochs {4, 8} of one configuration: one run
    study = mirrored(tmp_path / "q")
    got = {t.user_attrs["trial_id"]: t for t in study.trials}
    assert set(got) == set(trials.index)
    for trial_id, t in got.items():
        assert t.params["epochs"] == trials.loc[trial_id, "epochs"]
        assert max(t.intermediate_values) == trials.loc[trial_id, "epochs_run"]


def test_a_resumed_study_adds_no_duplicate_optuna_trials(study_copy: Path, tiny_data: Path
                                                         ) -> None:
    before = len(mirrored(study_copy).trials)
    assert main(["--space", "quickstart", "--data", str(tiny_data), "--storage",
                 str(study_copy.parent), "--name", "tiny", "--set", "epochs=3", "--set",
                 "image_size=16", "--quiet", "--resume"]) == 0
    assert len(mirrored(study_copy).trials) == before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("optuna-dashboard") is None and not Path(
    sys.executable).with_name("optuna-dashboard").exists(),
    reason="optuna-dashboard is not installed (pip install '.[test]')")
def test_optuna_dashboard_serves_the_study_over_http(tiny_study: Path) -> None:
    exe = shutil.which("optuna-dashboard") or str(Path(sys.executable).with_name(
        "optuna-dashboard"))
    port = _free_port()
    server = subprocess.Popen([exe, str(tiny_study / "optuna.log"), "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies",
                                            timeout=5) as r:
                    studies = json.loads(r.read())["study_summaries"]
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                assert time.time() < deadline, "optuna-dashboard did not answer in 60 s"
                time.sleep(0.5)
        (summary,) = studies
        assert summary["study_name"] == "tiny"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/"
                                    f"{summary['study_id']}", timeout=10) as r:
            detail = json.loads(r.read())
        n_trials = len(results.load(tiny_study)["trials"])
        assert len(detail["trials"]) == n_trials
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_progress_lines_count_runs_and_name_the_best_and_quiet_stays_quiet(
        ray_session, tiny_data: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import re

    args = ["--space", "quickstart", "--data", str(tiny_data), "--storage", str(tmp_path),
            "--set", "epochs=2", "--set", "image_size=16", "--no-optuna"]
    assert main([*args, "--name", "loud", "--progress-interval", "0"]) == 0
    out = capfd.readouterr().out
    stamp = re.compile(r"\[\d\d:\d\d:\d\d\] \d+ s  runs:")
    lines = [line for line in out.splitlines() if stamp.match(line)]
    assert lines, out[-2000:]
    assert re.search(r"runs: 6 done \(\d cut by ASHA, 0 failed\), 0 running, 0 pending; "
                     r"best val_accuracy \d\.\d{4} \(\w+_\d{5}, epoch \d\)", lines[-1])
    assert main([*args, "--name", "quiet", "--quiet"]) == 0
    assert "runs:" not in capfd.readouterr().out
