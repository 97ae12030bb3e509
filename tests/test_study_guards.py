"""A study refuses what would merge, mix or hang: one claim per name, resumes that differ,
resources no node has.

Usage: ``python -m pytest tests/test_study_guards.py`` (uses the session's tiny Ray study).
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from results import storage
from study.run import main


def test_only_one_of_many_simultaneous_claims_of_a_study_directory_wins(tmp_path: Path) -> None:
    wins, losses = [], []
    start = threading.Barrier(8)

    def claim(i: int) -> None:
        start.wait()
        try:
            storage.claim_study_file(str(tmp_path / "s"), {"seed": i})
            wins.append(i)
        except storage.AlreadyClaimed:
            losses.append(i)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(wins) == 1 and len(losses) == 7
    assert json.loads((tmp_path / "s" / "study.json").read_text()) == {"seed": wins[0]}
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["study.json"]  # no temp file left


@pytest.mark.parametrize(("extra", "named"), [
    (["--seed", "7"], "another --seed (it used 0, not 7)"),
    (["--set", "lr=0.01"], "other --set values"),
    (["--samples", "2"], "another space"),
])
def test_resume_with_other_settings_is_refused_naming_what_differs(
        study_copy: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str],
        extra: list[str], named: str) -> None:
    before = (study_copy / "trials.parquet").read_bytes()
    code = main(["--space", "quickstart", "--data", str(tiny_data), "--storage",
                 str(study_copy.parent), "--name", "tiny", "--set", "epochs=3", "--set",
                 "image_size=16", "--quiet", "--resume", *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert "was started with other settings" in err and named in err
    assert (study_copy / "trials.parquet").read_bytes() == before


def test_a_study_copied_to_another_name_is_not_resumed_there(
        study_copy: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = shutil.copytree(study_copy, study_copy.parent / "tiny-copy")
    code = main(["--space", "quickstart", "--data", str(tiny_data), "--storage",
                 str(copy.parent), "--name", "tiny-copy", "--set", "epochs=3", "--set",
                 "image_size=16", "--quiet", "--resume"])
    assert code == 2
    assert "it is the study 'tiny', copied or moved" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "named"), [
    (["--cpus-per-trial", "100"], "asks for 100 CPU and 0 GPU"),
    (["--gpus-per-trial", "0.5"], "asks for 1 CPU and 0.5 GPU"),
])
def test_resources_no_node_can_offer_stop_the_study_at_once(
        ray_session, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        flags: list[str], named: str) -> None:
    code = main(["--space", "quickstart", "--data", str(tiny_data), "--storage", str(tmp_path),
                 "--name", "big", "--quiet", *flags])
    assert code == 2
    err = capsys.readouterr().err
    assert named in err and "largest node of this cluster has 2 CPU and 0 GPU" in err
    assert "lower --cpus-per-trial" in err
    assert not list((tmp_path / "big").glob("*/result.json"))  # no trial ran


_DRIVER = """
import sys
import study.run as run
from search_spaces import SPACES, Space

SPACES.add("slow", Space.from_json({space!r}))
sys.exit(run.main(sys.argv[1:]))
"""


def test_ctrl_c_records_unfinished_trials_exits_130_and_gives_the_resume_command(
        ray_session, tiny_data: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    import results
    from search_spaces.base import Space, grid

    # Four runs of many short epochs, one at a time: Ctrl-C lands while the first trains.
    space = Space("slow", "four long runs, one at a time", {"batch_size": grid(8, 16, 24, 32)},
                  fixed={"model": "small_cnn", "image_size": 16, "epochs": 400}, asha=None)
    address = ray_session.get_runtime_context().gcs_address
    driver = subprocess.Popen(
        [sys.executable, "-c", _DRIVER.format(space=space.to_json()), "--space", "slow",
         "--address", address, "--data", str(tiny_data), "--storage", str(tmp_path),
         "--name", "cut", "--max-concurrent", "1", "--quiet"],
        cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 240
        # Only the newest two checkpoints are kept, so checkpoint_000002 exists for a moment:
        # wait for any checkpoint past it, which stays until the trial ends.
        while not any(int(c.name.split("_")[-1]) >= 2
                      for c in (tmp_path / "cut").glob("*/checkpoint_*")):
            assert driver.poll() is None, driver.communicate()[1][-3000:]
            assert time.time() < deadline, "no trial reached its second epoch"
            time.sleep(0.2)
        os.kill(driver.pid, signal.SIGINT)
        out, err = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 130, err[-3000:]
    assert "interrupted" in err and "--resume" in err and "--name cut" in err
    assert "Tuner.restore" not in out + err
    trials = results.load(tmp_path / "cut")["trials"]
    assert len(trials) >= 1
    assert not (trials["status"] == "TERMINATED").any()  # nothing finished 400 epochs
    assert set(trials["status"]) <= {"INTERRUPTED", "PENDING"}
    assert set(trials["stop_reason"]) == {"interrupted"}
    assert (trials.loc[trials["status"] == "INTERRUPTED", "epochs_run"] >= 2).all()


def test_a_deleted_checkpoint_restarts_its_trial_from_epoch_one_instead_of_failing(
        tmp_path: Path) -> None:
    from ray import tune

    from trainables.tune_adapter import resumable_state

    folder = tmp_path / "checkpoint_000003"
    folder.mkdir()
    (folder / "checkpoint.pt").write_bytes(b"truncated")
    unreadable = tune.Checkpoint.from_directory(str(folder))
    with pytest.warns(UserWarning, match="starts again from epoch 1"):
        assert resumable_state(unreadable) is None
    shutil.rmtree(folder)
    with pytest.warns(UserWarning, match="cannot read the checkpoint"):
        assert resumable_state(unreadable) is None


def test_restart_errored_needs_resume(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--space", "quickstart", "--restart-errored"])
    assert "use it with --resume" in capsys.readouterr().err


def test_a_finished_trial_whose_checkpoint_was_deleted_is_named_with_a_rerun_command(
        study_copy: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shlex

    import results
    from study.trials import resolve_trials, trial_checkpoint

    args = ["--space", "quickstart", "--data", str(tiny_data), "--storage",
            str(study_copy.parent), "--set", "epochs=3", "--set", "image_size=16", "--quiet"]
    (ref,) = resolve_trials(str(study_copy), ["best"])
    lost = Path(trial_checkpoint(ref)).parent
    for folder in lost.glob("checkpoint_*"):
        shutil.rmtree(folder)
    assert main([*args, "--name", "tiny", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "lost their checkpoint" in err and str(lost) in err
    reruns = [line.strip() for line in err.splitlines() if f"-rerun-{ref.trial_id}" in line]
    assert reruns, err
    command = shlex.split(reruns[0])
    assert command[:3] == ["python", "-m", "study.run"]
    assert main(command[3:]) == 0
    again = results.load(study_copy.parent / f"tiny-rerun-{ref.trial_id}")
    (row,) = again["trials"].to_dict("records")
    assert row["config_key"] == ref.row["config_key"] and row["status"] == "TERMINATED"
    assert len(again["predictions"]) == ref.row["n_test"]
