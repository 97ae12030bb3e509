"""From Ray Tune's results to this project's trial outcomes: ``outcome_from_result(result)``.

Usage: ``outcomes = [outcome_from_result(r) for r in tuner.fit()]``, then
``results.tables.write_study_tables(study_dir, name, outcomes)``.

The one place that reads Tune's ``Result``: its metrics history (with Tune's ``time_total_s``
renamed to the tables' ``wall_seconds``), its checkpoint and its error, unwrapped from Ray's
exception types. ``results/`` then knows nothing of Tune.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from results.tables import TrialOutcome

# Stop reasons of a trial that ended on its own (its budget, or patience); a TERMINATED trial
# with any other was stopped by the scheduler (ASHA).
NATURAL_ENDS = ("budget", "early_stopping")
# Tune's names of reported columns -> the tables' names.
TUNE_COLUMNS = {"time_total_s": "wall_seconds"}


def error_message(error: BaseException | None) -> str | None:
    """The root cause of a trial error, without Ray's wrapping, for the ``error`` column."""
    if error is None:
        return None
    cause = getattr(error, "cause", None) or error.__cause__ or error
    text = f"{type(cause).__name__}: {cause}"
    return text.strip()[:4000]


def outcome_from_result(result: Any) -> TrialOutcome:
    """The outcome of one Tune trial from its ``ray.tune.Result``."""
    metrics = result.metrics or {}
    trial_id = metrics.get("trial_id") or Path(result.path).name
    history = result.metrics_dataframe
    if history is not None:
        history = history.rename(columns=TUNE_COLUMNS)
    checkpoint = result.checkpoint
    return TrialOutcome(trial_id, result.config or {}, history, error_message(result.error),
                        checkpoint.path if checkpoint else None,
                        getattr(checkpoint, "filesystem", None) if checkpoint else None)
