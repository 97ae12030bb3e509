"""The one function that turns a ``Space`` into Ray Tune's param_space, scheduler and searcher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from search_spaces.base import Param, Space
from trainables.folding import fold_param_space


@dataclass
class TuneSetup:
    param_space: dict[str, Any]
    scheduler: TrialScheduler
    search_alg: Any  # a Searcher, or None for Tune's grid/random variant generator
    num_samples: int
    metric: str
    mode: str


class FollowModel:
    """``tune.sample_from`` callable: the value for the trial's (already resolved) model."""

    def __init__(self, table: dict[str, Any]) -> None:
        self.table = table

    def __call__(self, config: Any) -> Any:
        # Ray >= 2.50 passes the trial's config; older versions the spec dict around it.
        model = config["model"] if "model" in config else config["config"]["model"]
        return self.table[model]

    def __repr__(self) -> str:
        return f"FollowModel({self.table!r})"


def _domain(p: Param) -> Any:
    if p.kind == "per_model":
        return tune.sample_from(FollowModel(dict(p.values)))
    if p.kind == "grid":
        return tune.grid_search(list(p.values))
    if p.kind == "choice":
        return tune.choice(list(p.values))
    if p.kind == "uniform":
        return tune.uniform(p.low, p.high)
    if p.kind == "loguniform":
        return tune.loguniform(p.low, p.high)
    return tune.randint(int(p.low), int(p.high))


def to_tune(space: Space, seed: int = 0, fold: bool = True) -> TuneSetup:
    """Tune's view of ``space``; with ``fold``, one run per group of grid configurations that
    differ only in a foldable ``epochs`` budget (``Space.folded_budgets``): the run trains to the
    largest budget and carries its budgets in its config, and the study's tables hold a trial per
    budget (``trainables.folding``)."""
    space.validate()
    param_space = {**space.fixed, **{k: _domain(p) for k, p in space.params.items()}}
    param_space = fold_param_space(param_space, space.folded_budgets() if fold else [])
    # The seed is a hyperparameter like any other; a space may vary it to repeat trials.
    param_space.setdefault("seed", seed)
    scheduler: TrialScheduler
    if space.asha is not None:
        scheduler = ASHAScheduler(
            time_attr="epoch",
            max_t=space.max_epochs(),
            grace_period=space.asha.grace_period,
            reduction_factor=space.asha.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    search_alg = None
    if space.search == "optuna_tpe":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=seed))
    elif space.search == "random":
        from ray.tune.search import BasicVariantGenerator

        search_alg = BasicVariantGenerator(random_state=seed)
    return TuneSetup(param_space, scheduler, search_alg, space.num_samples, space.result_key,
                     space.mode)
