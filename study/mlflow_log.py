"""Log a study's runs to MLflow, live: ``python -m study.run ... --mlflow [URI]``.

Usage (by study.run, when ``--mlflow`` is given; needs ``pip install ".[mlflow]"``):
    callback = mlflow_callback(args.mlflow, "studies/grid1", "grid1", space)
    tune.RunConfig(callbacks=[callback, ...])
    # meanwhile, in another shell:
    #   mlflow ui --backend-store-uri sqlite:///studies/grid1/mlflow.db

Ray's own ``MLflowLoggerCallback`` does the work (the experiment, the run of each Tune trial
and its lifecycle), with the changes this project's studies need: each run's metrics are logged
at step = its epoch, in one batch per epoch (Ray logs key by key, a database transaction each,
on the driver: 0.4-0.8 s a result against 10-26 ms, ``benchmarks/mlflow_log.py``); the
artifact is the run's last checkpoint (``checkpoint/checkpoint.pt``: the best weights and test
scores so far), not the whole trial folder; a SQLite store keeps its artifacts beside itself
instead of under the current directory; and a resumed study continues its runs instead of
opening new ones.

One MLflow run per Tune run, named by the tables' ``trial_id`` (also its ``trial_id`` tag):
its params are the run's config, its metrics what the trainable reports every epoch, and its
``stop_reason`` tag says how it ended (``asha`` when the scheduler cut it). A folded run
(``trainables.folding``) serves several epoch budgets but is one MLflow run: its params say
``epochs`` = the largest budget and ``budgets`` = all of them, its ``served_trials`` tag names
the tables' trials it serves, and the trial of a smaller budget ``b`` (``<trial_id>-e<b>``) is
its metrics up to step ``b``.

The default store (``--mlflow`` without a URI) is ``sqlite:///<study dir>/mlflow.db``, with the
artifacts in ``<study dir>/mlartifacts``; a remote study directory has no default, as MLflow's
SQLite store needs a local file, so it says so and logs nothing unless a URI is given.
"""

from __future__ import annotations

import math
import numbers
import time
from pathlib import Path
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.result import AUTO_RESULT_KEYS

from results import storage
from search_spaces.base import Space
from study.cli import StudyError
from study.interrupt import InterruptLedger
from trainables.folding import served_trials

DB_FILE = "mlflow.db"  # inside the study directory
ARTIFACTS_DIR = "mlartifacts"  # beside a SQLite store, as `mlflow server` puts them
INSTALL_HINT = 'pip install ".[mlflow]"'
# What Tune adds to every result; the tables keep none of it but the wall time (``TUNE_COLUMNS``).
SKIPPED_KEYS = frozenset(AUTO_RESULT_KEYS) - {"time_total_s"} | {"done", "trial_id"}


def tracking_uri(flag: str | None, study_dir: str) -> str | None:
    """The tracking URI of ``--mlflow`` (``""`` when given without a value), or None for off."""
    if flag is None:
        return None
    if flag:
        return flag
    if storage.is_uri(study_dir):
        print("notice: the study directory is remote, so MLflow logging is off; pass --mlflow "
              "with a tracking URI (a server, or sqlite:///grid1.db) to log the study")
        return None
    return "sqlite:///" + str(Path(study_dir).resolve() / DB_FILE)


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps artifacts: beside a SQLite file, else the store's default."""
    if uri.startswith("sqlite:///"):
        return str(Path(uri.removeprefix("sqlite:///")).resolve().parent / ARTIFACTS_DIR)
    return None


def mlflow_callback(flag: str | None, study_dir: str, study_name: str, space: Space
                    ) -> StudyMLflowCallback | None:
    """The callback that logs the study to MLflow, or None when ``--mlflow`` is off."""
    uri = tracking_uri(flag, study_dir)
    if uri is None:
        return None
    try:
        import mlflow  # noqa: F401  (Ray's callback imports it when built)
    except ImportError as exc:
        raise StudyError(f"--mlflow needs MLflow, which is not installed: {INSTALL_HINT}"
                         ) from exc
    return StudyMLflowCallback(uri, study_name, space)


def epoch_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The numbers of one reported epoch, as the tables' epochs rows hold them."""
    return {("wall_seconds" if key == "time_total_s" else key): float(value)
            for key, value in result.items()
            if key not in SKIPPED_KEYS and isinstance(value, numbers.Real)
            and not isinstance(value, bool)}


class StudyMLflowCallback(MLflowLoggerCallback):
    def __init__(self, uri: str, study_name: str, space: Space) -> None:
        super().__init__(tracking_uri=uri, experiment_name=study_name,
                         tags={"study": study_name, "space": space.name,
                               "metric": space.metric})
        self.space_name = space.name

    def setup(self, *args: Any, **kwargs: Any) -> None:
        """Ray's setup, plus the artifact location of a new experiment."""
        import mlflow

        self.mlflow_util.setup_mlflow(tracking_uri=self.tracking_uri,
                                      experiment_name=self.experiment_name,
                                      artifact_location=artifact_location(self.tracking_uri))
        self.tags = dict(self.tags or {})
        self._trial_runs = {}
        self.client = mlflow.MlflowClient(self.tracking_uri)

    def __getstate__(self) -> dict[str, Any]:  # Tune saves its callbacks with the experiment
        return {k: v for k, v in self.__dict__.items() if k not in ("client", "_trial_runs")}

    def log_trial_start(self, trial: Any) -> None:
        if trial in self._trial_runs:
            return
        from mlflow.entities import Param

        tid = trial.trial_id
        found = self.client.search_runs([self.mlflow_util.experiment_id],
                                        filter_string=f"tags.trial_id = '{tid}'", max_results=1)
        if found:  # a resumed study: the run goes on where it stopped
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            self._trial_runs[trial] = run_id
            return
        served = ",".join(served_trials(tid, trial.config).values())
        tags = {**self.tags, "trial_id": tid, "trial_name": str(trial), "served_trials": served}
        run = self.client.create_run(self.mlflow_util.experiment_id, run_name=tid, tags=tags)
        self._trial_runs[trial] = run.info.run_id
        params = [Param(k, str(v)) for k, v in _flat(trial.config).items()]
        self.client.log_batch(run.info.run_id, params=params)

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        step = int(result.get("epoch") or result.get("training_iteration") or iteration)
        stamp = int(time.time() * 1000)
        metrics = [Metric(k, v, stamp, step) for k, v in epoch_metrics(result).items()
                   if not math.isinf(v)]  # MLflow refuses infinities; NaN it stores
        self.client.log_batch(self._trial_runs[trial], metrics=metrics)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        run_id = self._trial_runs.get(trial)
        if run_id is None:
            return
        interrupted = InterruptLedger.current().interrupted
        # As the tables say it (results.tables): a run that its budget or patience did not end
        # was cut by the scheduler, unless Ctrl-C stopped it (a resume continues it).
        reason = ("error" if failed else "interrupted" if interrupted
                  else (trial.last_result or {}).get("stop_reason") or "asha")
        self.client.set_tag(run_id, "stop_reason", reason)
        checkpoint = trial.checkpoint
        if checkpoint is not None:
            # as_directory: the folder itself when local, a downloaded copy when remote.
            with checkpoint.as_directory() as folder:
                self.client.log_artifacts(run_id, folder, artifact_path="checkpoint")
        self.client.set_terminated(run_id, status="FAILED" if failed else "KILLED"
                                   if interrupted else "FINISHED")
        del self._trial_runs[trial]


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out
