"""Studies on a real multi-node Ray cluster survive faults: a lost node, a crashing trial, storage
that fills; and trials pack onto (declared) GPUs as asked.

Each ``cluster`` test runs one scenario of ``tests/cluster_scenarios.py`` in its own process
(this process holds the session's Ray, and a process joins one cluster only) and asserts on the
verdict it writes and on the real Parquet tables of its study. The machine has no GPU: the
worker nodes declare one each, the scheduler honours the declaration, and the trials find no
CUDA and train on the CPU. All nodes run on this host, so they share one host name.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import results
from study.plan import resume_command
from study.run import parse_args
from study.storage_guard import (
    STORAGE_EXIT,
    rescue_dir,
    rescue_state,
    restore_rescued_state,
    storage_problem,
)

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "tests" / "cluster_scenarios.py"
SCENARIO_TIMEOUT_S = 420  # each takes about a minute on 2 busy cores


@pytest.fixture(scope="module")
def cluster_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two CIFAKE-layout folders, ingested once here so every scenario reads the cache."""
    from helpers import write_cifake_folder

    from trainables.ingest import load_dataset

    root = tmp_path_factory.mktemp("cluster-data")
    folders = {"small": write_cifake_folder(root / "small", n_train=48),
               "large": write_cifake_folder(root / "large", n_train=400)}
    for folder in folders.values():
        load_dataset(folder, progress=False)
    return folders


def run_scenario(name: str, workdir: Path, data: Path) -> dict[str, Any]:
    log = workdir / f"{name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(SCENARIOS), name, str(workdir), str(data)],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            proc.wait(timeout=SCENARIO_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"scenario {name} ran over {SCENARIO_TIMEOUT_S} s:\n"
                        + log.read_text()[-3000:])
    assert proc.returncode == 0, f"scenario {name} failed:\n" + log.read_text()[-3000:]
    return json.loads((workdir / "verdict.json").read_text())


@pytest.fixture(scope="module")
def spread_run(cluster_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[Path, dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("spread")
    return workdir, run_scenario("spread", workdir, cluster_data["small"])


def workers(verdict: dict[str, Any]) -> set[str]:
    return {node for node, role in verdict["roles"].items() if role == "worker"}


@pytest.mark.cluster
def test_trials_spread_over_gpu_nodes_two_per_gpu_and_train_on_the_cpu(
    spread_run: tuple[Path, dict[str, Any]],
) -> None:
    workdir, verdict = spread_run
    assert verdict["code"] == 0, verdict["stderr"]
    trials = results.load(workdir / "studies" / "spread")["trials"]
    assert len(trials) == 4 and trials["trial_id"].is_unique
    ok = trials[trials["lr"] < 1]
    assert (ok["status"] == "TERMINATED").all() and (ok["epochs_run"] == 2).all()
    # Given half a GPU each, on a machine without one: they said so and trained on the CPU.
    assert (ok["device"] == "cpu").all()
    assert (ok["node"] == socket.gethostname()).all()  # simulated nodes share the host name
    ran = [t for t in verdict["trials"].values() if t["lr"] < 1]
    assert all(verdict["gpu_warning"][str(pid)] for t in ran for pid in t["pids"])
    # Every trial asked for the share it was given, and only worker nodes held one.
    assert [json.loads(b) for b in verdict["bundles"]] == [{"CPU": 0.5, "GPU": 0.5}]
    assert set(verdict["group_nodes"]) == workers(verdict)
    # Trials ran on both workers (the Ray node each result was reported from)...
    assert {node for t in ran for node in t["nodes"]} == workers(verdict)
    # ... and never more than two at once on a 1-GPU node, though its CPUs allowed four:
    # Ray's placement groups, and the lifetimes of the trials' actors in Ray's actor table,
    # both sampled while the study ran.
    assert verdict["reported_actors_seen"] == verdict["reported_actors"] >= 2
    assert verdict["groups_at_once_per_node"] == dict.fromkeys(workers(verdict), 2)
    assert verdict["groups_at_once"] == 4
    assert set(verdict["actors_at_once_per_node"]) <= workers(verdict)
    assert max(verdict["actors_at_once_per_node"].values()) <= 2


@pytest.mark.cluster
def test_crashing_trial_is_retried_then_an_error_row_and_the_study_goes_on(
    spread_run: tuple[Path, dict[str, Any]],
) -> None:
    workdir, verdict = spread_run
    assert verdict["code"] == 0, verdict["stderr"]
    trials = results.load(workdir / "studies" / "spread")["trials"].set_index("lr")
    crashed = trials.loc[1e20]
    assert crashed["status"] == "ERROR" and crashed["stop_reason"] == "error"
    assert "FloatingPointError" in crashed["error"] and "lower lr" in crashed["error"]
    assert (trials.drop(index=1e20)["status"] == "TERMINATED").all()
    # --max-failures 1: it ran twice. Tune counted two failures in its experiment state, and
    # logged both in the trial's error.txt.
    state = {s["config"]["lr"]: s for s in verdict["experiment_state"].values()}
    assert state[1e20]["num_failures"] == 2 and state[1e20]["status"] == "ERROR"
    assert all(state[lr]["num_failures"] == 0 for lr in state if lr < 1)
    logged = {t["lr"]: t["failures_logged"] for t in verdict["trials"].values()}
    assert logged[1e20] == 2
    assert verdict["trial_actors"] >= 4  # a retry may get a new actor or a finished trial's


@pytest.mark.cluster
def test_trials_of_a_lost_worker_node_resume_from_their_checkpoint_on_another(
    cluster_data: dict[str, Path], tmp_path: Path,
) -> None:
    verdict = run_scenario("node_loss", tmp_path, cluster_data["large"])
    assert verdict["code"] == 0, verdict["stderr"]
    gone = verdict["removed"].get("node")
    assert gone, "the scenario found no busy worker node to remove"
    survivor = workers(verdict) - {gone}
    assert len(survivor) == 1
    tables = results.load(tmp_path / "studies" / "loss")
    trials, epochs = tables["trials"].set_index("trial_id"), tables["epochs"]
    assert len(trials) == 2 and (trials["status"] == "TERMINATED").all()
    assert (trials["epochs_run"] == 6).all()
    # A trial that ran on the removed node either finished there before it went (a busy node
    # may hold one finished and one running trial) or was moved to the other node.
    ran_there = {t["trial_id"]: t for t in verdict["trials"].values() if gone in t["nodes"]}
    moved = {i: t for i, t in ran_there.items() if set(t["nodes"]) != {gone}}
    assert moved, f"no trial was running on the removed node when it went: {ran_there}"
    for trial_id, log in ran_there.items():
        if trial_id not in moved:  # it finished on that node, untouched by the loss
            assert log["epochs_reported"] == list(range(1, 7))
    for trial_id, log in moved.items():
        assert trials.loc[trial_id, "restarts"] >= 1
        assert verdict["experiment_state"][trial_id]["num_failures"] == 1
        # After the loss it reported from the other node, continuing past epoch 1: it started
        # from its checkpoint, not afresh.
        after = [e for e, n in zip(log["epochs_reported"], log["nodes"], strict=True)
                 if n != gone]
        assert after and min(after) > 1
        assert set(log["nodes"]) - {gone} == survivor
    for trial_id in set(trials.index) - set(moved):
        assert trials.loc[trial_id, "restarts"] == 0
    # One epochs row per trial and epoch, whatever was run twice.
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert sorted(epochs.groupby("trial_id")["epoch"].apply(list).sum()) == sorted(
        list(range(1, 7)) * 2)


@pytest.mark.cluster
def test_storage_that_fills_stops_the_study_and_the_printed_resume_finishes_it(
    cluster_data: dict[str, Path], tmp_path: Path,
) -> None:
    verdict = run_scenario("storage", tmp_path, cluster_data["large"])
    if "skipped" in verdict:
        pytest.skip(verdict["skipped"])
    assert "No space left" in verdict["filled"]["error"]
    first = verdict["first"]
    assert first["code"] == STORAGE_EXIT, first["stderr"]
    assert "error: the study's storage failed" in first["stderr"]
    assert "No space left on device" in first["stderr"]
    assert verdict["store"] in first["stderr"] and "--resume" in first["stderr"]
    assert not first["tables_written"]
    # Tune rewrites its state files in place, so the write that hit the full disk may have
    # left the copy in the storage unreadable; the driver's own copy was kept on this machine,
    # from before any trial was marked ERROR: they are unfinished, so a resume runs them.
    assert first["rescued"] and first["rescued"] in first["stderr"]
    assert first["rescued_state"] and "unreadable" not in first["rescued_state"]
    # A trial that started seconds before the other (its worker was up first) may have trained
    # through its six epochs before the storage filled: that one is kept as finished.
    state = first["rescued_state"]
    cut = {t for t, s in state.items() if s["status"] != "TERMINATED"}
    assert cut, f"every trial finished before the storage filled: {state}"
    assert {state[t]["status"] for t in cut} <= {"RUNNING", "PENDING"}
    resumed = verdict["resume"]
    assert resumed["command"] and resumed["code"] == 0, resumed.get("stderr")
    assert "restored the experiment state" in resumed["stdout"]
    assert not verdict["rescue_left"]
    tables = results.load(tmp_path / "studies" / "full")
    trials, epochs = tables["trials"], tables["epochs"]
    assert len(trials) == 2 and (trials["status"] == "TERMINATED").all()
    assert (trials["epochs_run"] == 6).all()
    # The cut trials ran again from their checkpoints; a finished one was not run again.
    restarts = trials.set_index("trial_id")["restarts"]
    assert (restarts[sorted(cut)] >= 1).all() and (restarts.drop(sorted(cut)) == 0).all()
    assert not epochs.duplicated(["trial_id", "epoch"]).any() and len(epochs) == 12


def test_storage_check_names_a_study_directory_that_disappeared(tmp_path: Path) -> None:
    study = tmp_path / "s"
    study.mkdir()
    (study / "study.json").write_text("{}")
    assert storage_problem(str(study)) is None
    assert list(study.iterdir()) == [study / "study.json"]  # the probe cleans up
    (study / "study.json").unlink()
    problem = storage_problem(str(study), write=False)
    assert problem and str(study) in problem and "disappeared" in problem


def test_printed_resume_command_parses_to_the_same_study() -> None:
    argv = ["--space", "quickstart", "--data", "/data/my cifake.zip", "--image-size", "32",
            "--storage", "s3://bucket/studies", "--address", "auto", "--gpus-per-trial", "0.5",
            "--set", "epochs=5", "--max-failures", "2"]
    args = parse_args(argv)
    words = shlex.split(resume_command(args, "grid1"))
    assert words[:3] == ["python", "-m", "study.run"]
    again = parse_args(words[3:])
    assert again.resume and again.name == "grid1"
    for key in ("space", "data", "image_size", "storage", "address", "gpus_per_trial", "set"):
        assert getattr(again, key) == getattr(args, key), key


def test_resume_puts_back_the_state_rescued_when_the_storage_failed(tmp_path: Path) -> None:
    # The disk filled while Tune rewrote its state in place: the copy in storage is cut short.
    study = tmp_path / "store" / "s"
    (study / "trial_0").mkdir(parents=True)
    (study / "experiment_state-x.json").write_text('{"trial_data": [["tr')
    (study / "trial_0" / "checkpoint_000001").mkdir()
    staging = tmp_path / "driver_artifacts"
    (staging / "trial_0").mkdir(parents=True)
    (staging / "experiment_state-x.json").write_text('{"trial_data": []}')
    (staging / "trial_0" / "result.json").write_text('{"epoch": 1}\n')
    rescued = rescue_state(str(study), str(staging))
    assert rescued == rescue_dir(str(study)) and rescued.is_dir()
    assert restore_rescued_state(str(study)) == rescued
    assert json.loads((study / "experiment_state-x.json").read_text()) == {"trial_data": []}
    assert (study / "trial_0" / "result.json").exists()
    assert (study / "trial_0" / "checkpoint_000001").is_dir()  # checkpoints are left alone
    assert not rescued.exists() and restore_rescued_state(str(study)) is None
