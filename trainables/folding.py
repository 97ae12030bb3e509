"""Folded budgets: one run to a grid's largest epoch budget serves every smaller budget.

Usage:
    budgets = foldable_budgets("grid", "grid", [40, 60, 80], ["exponential"])  # [40, 60, 80]
    param_space = fold_param_space(param_space, budgets)   # epochs=80, budgets=[40, 60, 80]
    records = BudgetRecords(budgets_of(config), resumed_state)   # in the trainable
    records.record(epoch, best)                              # after every epoch
    served_trials("a1b2_00003", config)   # {40: "a1b2_00003-e40", 60: ..., 80: "a1b2_00003"}
    state_at_budget(state, 40)            # the checkpoint the 40-epoch trial ends with

Configurations of a grid that differ only in ``epochs`` train identically up to the smaller
budget when the learning-rate schedule does not depend on the budget: every epoch's shuffle,
augmentation and dropout are seeded by the seed and the epoch, and patience looks only back. One
run to the largest budget then yields each smaller budget's trial exactly, from the metrics and
best weights it had at that epoch. This module is the one place that knows how: the space asks
it which budgets fold, Tune's param space carries them under ``BUDGETS_KEY``, the trainable
records each budget's best-so-far state under ``BUDGET_BEST`` in its checkpoint, and the tables
cut one trial per budget from the run, ``<run id>-e<budget>`` (the largest keeps the run's id).
It imports neither Ray nor torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

BUDGETS_KEY = "budgets"  # config key of a folded run: the epoch budgets it serves
BUDGET_BEST = "budget_best"  # checkpoint key: a folded run's best-so-far record per budget
BUDGET_SEP = "-e"  # <Tune trial id>-e<budget>: a budget a folded run served (Tune ids have no -)


def foldable_budgets(search: str, epochs_kind: str | None, epoch_values: Sequence[Any],
                     schedules: Iterable[str]) -> list[int]:
    """The epoch budgets one run can serve, or [] when each needs its own run.

    Only a grid over at least two distinct ``epochs`` values folds, and never with the
    one-cycle schedule, which spans the whole budget (so a shorter budget trains differently).
    """
    if (search != "grid" or epochs_kind != "grid"
            or not 2 <= len(set(epoch_values)) == len(epoch_values)):
        return []
    if "onecycle" in set(schedules):
        return []
    return sorted({int(v) for v in epoch_values})


def fold_param_space(param_space: dict[str, Any], budgets: Sequence[int]) -> dict[str, Any]:
    """Tune's param space of a folded study: each run trains to the largest budget and
    carries the budgets it serves in its config."""
    if not budgets:
        return param_space
    return {**param_space, "epochs": max(budgets), BUDGETS_KEY: sorted(budgets)}


def budgets_of(config: Mapping[str, Any]) -> list[int]:
    """The budgets a run's config says it serves ([] for an ordinary run)."""
    return [int(b) for b in config.get(BUDGETS_KEY) or ()]


def without_budgets(config: Mapping[str, Any]) -> dict[str, Any]:
    """The training configuration of a run, without the folding bookkeeping."""
    return {k: v for k, v in config.items() if k != BUDGETS_KEY}


def budget_trial_id(run_id: str, budget: int, budgets: Sequence[int]) -> str:
    """The trial id of ``budget`` within a folded run: the run's own id for its largest
    budget (the run is that trial), ``<run id>-e<budget>`` for the others."""
    return run_id if budget == max(budgets) else f"{run_id}{BUDGET_SEP}{budget}"


def split_trial_id(trial_id: str) -> tuple[str, int | None]:
    """(the run that trained it, the budget it was folded at or None) of a trial id."""
    run_id, sep, budget = trial_id.rpartition(BUDGET_SEP)
    if sep and run_id and budget.isdigit():
        return run_id, int(budget)
    return trial_id, None


def served_trials(run_id: str, config: Mapping[str, Any]) -> dict[int | None, str]:
    """Budget -> trial id of every trial a run serves; ``{None: run_id}`` for an ordinary run."""
    budgets = budgets_of(config)
    return {b: budget_trial_id(run_id, b, budgets) for b in budgets} or {None: run_id}


class BudgetRecords:
    """A folded run's best-so-far record at each of its smaller budgets, for its checkpoint.

    Records that did not change between budgets are one object, which the checkpoint stores
    once. The largest budget needs no record: it is the run's own best.
    """

    def __init__(self, budgets: Sequence[int], resumed: Mapping[str, Any] | None = None
                 ) -> None:
        self.budgets = sorted(budgets)
        self.records: dict[int, Any] = dict((resumed or {}).get(BUDGET_BEST, {}))

    def record(self, epoch: int, best: Any) -> None:
        """Keep ``best`` as the record of the budget ``epoch``, if it is one."""
        if epoch in self.budgets[:-1]:
            self.records[epoch] = best

    def checkpoint_entries(self) -> dict[str, Any]:
        """What the run's checkpoint stores for its budgets."""
        return {BUDGET_BEST: self.records}

    def clear(self) -> None:
        self.records.clear()


def state_at_budget(state: dict[str, Any], budget: int) -> dict[str, Any]:
    """The checkpoint of the trial with ``budget`` epochs that a folded run's ``state`` serves.

    Its best record (weights, test scores, threshold) is the one the run had at that epoch, or
    the run's own when it ended sooner (early stopping or the scheduler); its config names the
    budget. The last weights and optimizer are the run's: resume the run, not this view.
    """
    best = state.get(BUDGET_BEST, {}).get(budget, state["best"])
    return {**state, "best": best, "config": {**state.get("config", {}), "epochs": budget},
            "epoch": min(state.get("epoch", budget), budget)}


def state_of_trial(state: dict[str, Any], trial_id: str) -> dict[str, Any]:
    """The checkpoint view of ``trial_id`` in the state of the run that trained it."""
    _, budget = split_trial_id(trial_id)
    return state if budget is None else state_at_budget(state, budget)
