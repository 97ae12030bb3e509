"""Tell a study cut short by Ctrl-C from one that ended: ``ledger = InterruptLedger()``.

Usage (by study.run):
    ledger = InterruptLedger()
    tune.RunConfig(callbacks=[ledger, ...])
    tuner.fit()
    ledger.interrupted, ledger.finished        # was SIGINT received; which trials had ended

Ray Tune handles SIGINT (Ctrl-C) gracefully: it saves the experiment state with the running
trials still running, so a resume continues them, and then stops them, which marks them
TERMINATED like any trial a scheduler stopped. The tables must not take those for finished
trials. This callback wraps Tune's own SIGINT handler (it does not replace it, so the graceful
stop and the saved state are Tune's) to note the interruption, and records which trials had
ended before it.
"""

from __future__ import annotations

import signal
from typing import Any

from ray import tune

INTERRUPTED_EXIT = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C
_DONE = ("TERMINATED", "ERROR")


class InterruptLedger(tune.Callback):
    """``InterruptLedger.current()`` is the ledger of this process's study: the one created
    for a new study, or, after ``Tuner.restore`` (which reuses the callbacks saved with the
    experiment), the one unpickled from it."""

    _current: InterruptLedger | None = None

    def __init__(self) -> None:
        self.interrupted = False
        self.finished: set[str] = set()
        self._wrapped = False
        InterruptLedger._current = self

    def __getstate__(self) -> dict[str, Any]:  # Tune saves its callbacks with the experiment
        return {**self.__dict__, "_wrapped": False}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A resumed study starts afresh: nothing is interrupted or finished in this run yet.
        self.__dict__.update({**state, "interrupted": False, "finished": set()})
        InterruptLedger._current = self

    @classmethod
    def current(cls) -> InterruptLedger:
        return cls._current or cls()

    def _wrap_sigint(self) -> None:
        tune_handler = signal.getsignal(signal.SIGINT)
        if not callable(tune_handler):
            return

        def note_and_stop(sig: int, frame: Any) -> None:
            self.interrupted = True
            tune_handler(sig, frame)

        try:
            signal.signal(signal.SIGINT, note_and_stop)
        except ValueError:  # not the main thread: Tune installed no handler either
            return
        self._wrapped = True

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if not self._wrapped:  # Tune installs its handler once the run has started
            self._wrap_sigint()
            # Trials a resumed study had finished before: they are not run again.
            self.finished |= {t.trial_id for t in trials if t.status in _DONE}

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not self.interrupted:
            self.finished.add(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not self.interrupted:
            self.finished.add(trial.trial_id)
