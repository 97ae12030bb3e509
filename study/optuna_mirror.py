"""Mirror a running study into an Optuna study, live, for optuna-dashboard.

Usage (by study.run; on by default for local study directories):
    mirror = OptunaMirror(journal_storage("studies/grid1/optuna.log"), "grid1", space)
    tune.RunConfig(callbacks=[mirror, ...])
    # meanwhile, in another shell:
    #   optuna-dashboard studies/grid1/optuna.log

Every trial of the study's tables becomes one Optuna trial, as it runs: its varied
hyperparameters, the study metric at every epoch (intermediate values), its state (RUNNING,
PRUNED when ASHA stopped it, COMPLETE when its budget or patience ended it, FAIL on an error)
and, once finished, its best value of the metric, which is what the tables rank by. A folded
run (``trainables.folding``) appears as the trials it serves, one per budget, each complete
when the run passes its budget. Each Optuna trial carries the table's ``trial_id`` as a user
attribute, so a resumed study continues its Optuna trials instead of adding new ones, and the
journal can be joined with ``trials.parquet``.

Writes go to a background thread, so a result costs the driver a queue put (measured by
``benchmarks/optuna_mirror.py``). Spaces searched by Optuna's TPE keep the searcher's own
study in memory: the mirror is the only study written, because only it knows which trials ASHA
pruned and which budgets a folded run served.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState
from ray import tune

from results import storage
from search_spaces.base import Param, Space
from study.interrupt import InterruptLedger
from study.outcomes import NATURAL_ENDS
from trainables.folding import budgets_of, served_trials

JOURNAL_FILE = "optuna.log"  # inside the study directory


def journal_storage(location: str) -> optuna.storages.BaseStorage:
    """An Optuna storage: a journal file path, or a database URL (sqlite:///..., mysql://...)."""
    if storage.is_uri(location):
        return optuna.storages.RDBStorage(location)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(location))


def distribution(p: Param) -> BaseDistribution:
    """Optuna's distribution of one varied hyperparameter of a space."""
    if p.kind in ("grid", "choice"):
        return CategoricalDistribution(tuple(p.values))
    if p.kind == "per_model":
        return CategoricalDistribution(tuple(dict.fromkeys(v for _, v in p.values)))
    if p.kind == "randint":
        return IntDistribution(int(p.low), int(p.high) - 1)
    return FloatDistribution(float(p.low), float(p.high), log=p.kind == "loguniform")


class _Writer:
    """Applies storage writes in order on one background thread."""

    def __init__(self) -> None:
        self.jobs: queue.Queue[Callable[[], Any] | None] = queue.Queue()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, name="optuna-mirror", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                job()
            except Exception as exc:  # a mirror must never stop the study
                if len(self.errors) < 20:
                    self.errors.append(f"{type(exc).__name__}: {exc}")

    def put(self, job: Callable[[], Any]) -> None:
        self.jobs.put(job)

    def close(self, timeout: float = 60.0) -> None:
        self.jobs.put(None)
        self.thread.join(timeout)


class OptunaMirror(tune.Callback):
    def __init__(self, location: str, study_name: str, space: Space) -> None:
        self.location = location
        self.study_name = study_name
        self.space = space
        self.writer: _Writer | None = None

    def setup(self, **info: Any) -> None:
        """Open the storage when the experiment starts (a new one, or a resumed one)."""
        if self.writer is None:
            self._open()

    def _open(self) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per created study
        self.storage = journal_storage(self.location)
        direction = (optuna.study.StudyDirection.MAXIMIZE if self.space.mode == "max"
                     else optuna.study.StudyDirection.MINIMIZE)
        try:
            self.study_id = self.storage.create_new_study([direction], self.study_name)
            self.storage.set_study_user_attr(self.study_id, "metric", self.space.metric)
            self.storage.set_study_user_attr(self.study_id, "fixed",
                                             {k: _plain(v) for k, v in self.space.fixed.items()})
        except optuna.exceptions.DuplicatedStudyError:
            self.study_id = self.storage.get_study_id_from_name(self.study_name)
        self.distributions = {k: distribution(p) for k, p in self.space.params.items()}
        # table trial id -> (Optuna trial id, finished?)
        self.known: dict[str, tuple[int, bool]] = {}
        for t in self.storage.get_all_trials(self.study_id, deepcopy=False):
            if "trial_id" in t.user_attrs:
                self.known[t.user_attrs["trial_id"]] = (t._trial_id, t.state.is_finished())
        self.best: dict[str, float] = {}  # table trial id -> best metric so far
        self.writer = _Writer()

    def __getstate__(self) -> dict[str, Any]:  # Tune saves its callbacks with the experiment
        return {"location": self.location, "study_name": self.study_name, "space": self.space}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({**state, "writer": None})

    # -- Tune's events ------------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        config = trial.config
        for budget, tid in served_trials(trial.trial_id, config).items():
            if tid in self.known:
                continue
            params = {k: config.get(k) for k in self.distributions}
            if budget is not None and "epochs" in params:
                params["epochs"] = budget
            self.known[tid] = (-1, False)  # the id arrives when the writer has created it
            self.writer.put(lambda tid=tid, params=params: self._create(tid, params))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        value = result.get(self.space.result_key)
        epoch = int(result.get("epoch", 0) or 0)
        if value is None or not epoch:
            return
        best = result.get(self.space.metric_column, value)
        budgets = budgets_of(trial.config)
        for budget, tid in served_trials(trial.trial_id, trial.config).items():
            if budget is not None and epoch > budget:
                continue
            if self.known.get(tid, (0, False))[1]:
                continue
            self.best[tid] = best
            self.writer.put(lambda tid=tid, e=epoch, v=value: self._intermediate(tid, e, v))
            ended = result.get("stop_reason") in NATURAL_ENDS
            if ended or (budget is not None and epoch == budget and budget < max(budgets)):
                self._finish(tid, TrialState.COMPLETE)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if InterruptLedger.current().interrupted:
            return  # Ctrl-C: the trials stay RUNNING, as they are unfinished
        reason = (trial.last_result or {}).get("stop_reason")
        state = TrialState.COMPLETE if reason in NATURAL_ENDS else TrialState.PRUNED
        for tid in served_trials(trial.trial_id, trial.config).values():
            self._finish(tid, state)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for tid in served_trials(trial.trial_id, trial.config).values():
            self._finish(tid, TrialState.FAIL)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.close()

    def close(self) -> list[str]:
        """Wait for the pending writes; returns the errors the writer met (at most 20)."""
        if self.writer is None:
            return []
        self.writer.close()
        return self.writer.errors

    # -- storage writes, on the writer thread -----------------------------------------------
    def _finish(self, tid: str, state: TrialState) -> None:
        if self.known.get(tid, (0, True))[1]:
            return
        self.known[tid] = (self.known[tid][0], True)
        value = self.best.get(tid)
        self.writer.put(lambda: self._state(tid, state, value))

    def _create(self, tid: str, params: dict[str, Any]) -> None:
        trial_id = self.storage.create_new_trial(self.study_id)
        for name, value in params.items():
            dist = self.distributions[name]
            try:
                internal = dist.to_internal_repr(_plain(value))
            except ValueError:  # e.g. a value outside a range after --set: keep it as text
                self.storage.set_trial_user_attr(trial_id, f"param_{name}", str(value))
                continue
            self.storage.set_trial_param(trial_id, name, internal, dist)
        self.storage.set_trial_user_attr(trial_id, "trial_id", tid)
        self.known[tid] = (trial_id, self.known[tid][1])

    def _intermediate(self, tid: str, epoch: int, value: float) -> None:
        trial_id = self.known[tid][0]
        if trial_id >= 0 and _finite(value):
            self.storage.set_trial_intermediate_value(trial_id, epoch, float(value))

    def _state(self, tid: str, state: TrialState, value: float | None) -> None:
        trial_id = self.known[tid][0]
        if trial_id < 0:
            return
        values = [float(value)] if state == TrialState.COMPLETE and _finite(value) else None
        if state == TrialState.COMPLETE and values is None:
            state = TrialState.FAIL  # Optuna needs a value to call a trial complete
        self.storage.set_trial_state_values(trial_id, state, values)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
