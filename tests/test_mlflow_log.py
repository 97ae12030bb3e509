"""MLflow logging of a study (``--mlflow``): the store read back by MLflow's client equals the
study's tables, run by run and epoch by epoch, with each run's checkpoint as an artifact.

Usage: ``python -m pytest tests/test_mlflow_log.py`` (one real tiny Ray study: two folded runs).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

import results
from results.tables import checkpoint_location
from search_spaces import get_space
from study.cli import StudyError
from study.mlflow_log import ARTIFACTS_DIR, DB_FILE, mlflow_callback, tracking_uri
from study.run import main
from trainables.folding import split_trial_id


@pytest.fixture(scope="module")
def mlflow_study(ray_session, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory
                 ) -> Path:
    """quickstart at one batch size: epochs {4, 8} fold, so 2 Tune runs serve 4 trials."""
    pytest.importorskip("mlflow", reason='MLflow is not installed (pip install ".[mlflow]")')
    storage = tmp_path_factory.mktemp("mlflow")
    assert main(["--space", "quickstart", "--data", str(tiny_data), "--storage", str(storage),
                 "--name", "ml", "--set", "image_size=16", "--set", "batch_size=64",
                 "--no-optuna", "--quiet", "--mlflow"]) == 0
    return storage / "ml"


def logged_runs(study_dir: Path, name: str | None = None) -> tuple[Any, dict[str, Any]]:
    """(the client, trial_id -> run) of the study's MLflow store, read as a user would."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{study_dir / DB_FILE}")
    experiment = client.get_experiment_by_name(name or study_dir.name)
    runs = client.search_runs([experiment.experiment_id])
    return client, {r.data.tags["trial_id"]: r for r in runs}


def test_each_run_holds_its_params_per_epoch_metrics_and_checkpoint(mlflow_study: Path,
                                                                     tmp_path: Path) -> None:
    tables = results.load(mlflow_study)
    trials, epochs = tables["trials"].set_index("trial_id"), tables["epochs"]
    client, runs = logged_runs(mlflow_study)
    assert set(runs) == {t for t in trials.index if split_trial_id(t)[1] is None}
    for trial_id, run in runs.items():
        row = trials.loc[trial_id]
        assert run.info.run_name == trial_id and run.info.status == "FINISHED"
        assert run.data.tags["stop_reason"] == row["stop_reason"]
        params = run.data.params
        assert int(params["batch_size"]) == row["batch_size"] == 64
        assert float(params["split_ratio"]) == pytest.approx(row["split_ratio"])
        assert int(params["epochs"]) == row["epochs"] == 8
        assert params["model"] == row["model"] and float(params["lr"]) == row["lr"]
        rows = epochs[epochs["trial_id"] == trial_id].set_index("epoch")
        assert len(rows) == row["epochs_run"]
        curves = rows.select_dtypes("number").columns
        assert len(curves) > 20 and set(curves) <= set(run.data.metrics)
        for name in curves:  # every number of every epochs row
            history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, name)}
            assert history == pytest.approx(rows[name].to_dict()), name
        # The artifact is the checkpoint the trials table records, byte for byte.
        assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")] == [
            "checkpoint/checkpoint.pt"]
        got = Path(client.download_artifacts(run.info.run_id, "checkpoint/checkpoint.pt",
                                             str(tmp_path)))
        recorded = Path(checkpoint_location(str(mlflow_study), row["checkpoint"]))
        assert got.read_bytes() == (recorded / "checkpoint.pt").read_bytes()
    # Artifacts stay inside the study directory (not ./mlruns under the current directory).
    assert list((mlflow_study / ARTIFACTS_DIR).rglob("checkpoint.pt"))


def test_a_folded_run_is_one_mlflow_run_that_serves_each_budgets_trial(mlflow_study: Path
                                                                      ) -> None:
    tables = results.load(mlflow_study)
    trials, epochs = tables["trials"].set_index("trial_id"), tables["epochs"]
    assert len(trials) == 4  # 2 split ratios x epochs {4, 8}
    client, runs = logged_runs(mlflow_study)
    assert len(runs) == 2
    for trial_id, run in runs.items():
        served = run.data.tags["served_trials"].split(",")
        assert sorted(served) == sorted([f"{trial_id}-e4", trial_id])
        assert run.data.params["budgets"] == "[4, 8]"
        short = epochs[epochs["trial_id"] == f"{trial_id}-e4"].set_index("epoch")
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id,
                                                                      "val_loss")}
        assert {s: v for s, v in history.items() if s <= 4} == pytest.approx(
            short["val_loss"].to_dict())


class FakeTrial:
    """What the callback reads of a Tune trial."""

    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id
        self.config = {"model": "small_cnn", "batch_size": 32, "epochs": 2}
        self.last_result = {"stop_reason": "budget"}
        self.checkpoint = None

    def __str__(self) -> str:
        return f"trainable_{self.trial_id}"


def test_a_resumed_study_continues_its_runs_instead_of_opening_new_ones(tmp_path: Path
                                                                        ) -> None:
    pytest.importorskip("mlflow", reason='MLflow is not installed (pip install ".[mlflow]")')
    import cloudpickle

    space = get_space("quickstart")
    callback = mlflow_callback("", str(tmp_path), "resumed", space)
    saved = cloudpickle.dumps(callback)  # as Tune keeps it in the experiment's state
    callback.setup()
    trial = FakeTrial("abc12_00000")
    callback.log_trial_start(trial)
    callback.log_trial_result(1, trial, {"epoch": 1, "val_loss": 0.5, "stop_reason": ""})
    # Ctrl-C here: the run is left RUNNING. The resumed study's callback is the saved one.
    resumed = cloudpickle.loads(saved)
    resumed.setup()
    trial = FakeTrial("abc12_00000")  # Tune's restored trial is a new object
    resumed.log_trial_start(trial)
    resumed.log_trial_result(2, trial, {"epoch": 2, "val_loss": 0.25, "stop_reason": "budget"})
    resumed.log_trial_end(trial)
    client, runs = logged_runs(tmp_path, "resumed")
    (run,) = runs.values()
    assert run.info.status == "FINISHED" and run.data.tags["stop_reason"] == "budget"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_loss")
            ] == [(1, 0.5), (2, 0.25)]


def test_the_default_store_is_a_sqlite_file_in_the_study_directory(tmp_path: Path) -> None:
    assert tracking_uri("", str(tmp_path)) == f"sqlite:///{tmp_path.resolve() / DB_FILE}"
    assert tracking_uri("http://mlflow:5000", str(tmp_path)) == "http://mlflow:5000"
    assert tracking_uri(None, str(tmp_path)) is None


def test_a_remote_study_without_a_tracking_uri_says_logging_is_off(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert tracking_uri("", "s3://bucket/studies/grid1") is None
    assert "MLflow logging is off; pass --mlflow with a tracking URI" in capsys.readouterr().out
    assert tracking_uri("http://mlflow:5000", "s3://b/s") == "http://mlflow:5000"


def test_without_mlflow_installed_the_error_names_the_extra(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    with pytest.raises(StudyError, match=r'pip install "\.\[mlflow\]"'):
        mlflow_callback("", str(tmp_path), "s", get_space("quickstart"))
    assert mlflow_callback(None, str(tmp_path), "s", get_space("quickstart")) is None


def test_the_flag_takes_an_optional_uri() -> None:
    from study.run import parse_args

    base = ["--space", "quickstart"]
    assert parse_args(base).mlflow is None
    assert parse_args([*base, "--mlflow"]).mlflow == ""
    assert parse_args([*base, "--mlflow", "--quiet"]).mlflow == ""
    assert parse_args([*base, "--mlflow", "sqlite:///x.db"]).mlflow == "sqlite:///x.db"
