"""Search spaces as validated plain data that round-trips through JSON.

A ``Space`` names the hyperparameters it varies (``params``), the ones it fixes (``fixed``), how it
searches (full grid, random sampling, or Optuna's TPE) and its ASHA early-stopping schedule.
Every key is a ``TrainConfig`` field and every value is checked by building a ``TrainConfig``.
A ``per_model`` value follows the trial's model (e.g. ImageNet weights only for the models that
have them); it is not a dimension of the search and adds no trials.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from trainables.config import ConfigError, TrainConfig
from trainables.eval_sets import EvalSetError, is_eval_column, metric_key, parse_eval_metric
from trainables.folding import foldable_budgets

KINDS = ("grid", "choice", "uniform", "loguniform", "randint", "per_model")
SEARCHES = ("grid", "random", "optuna_tpe")


class SpaceError(ValueError):
    """A space that cannot run; the message names the key and the fix."""


@dataclass(frozen=True)
class Param:
    """One varied hyperparameter: ``grid``/``choice`` over ``values``, or a numeric range.

    ``per_model`` holds ``(model, value)`` pairs in ``values``: the value follows the model.
    """

    kind: str
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None

    def candidates(self) -> list[Any]:
        """Values worth validating: every listed value, or the ends of a range."""
        if self.kind in ("grid", "choice"):
            return list(self.values)
        if self.kind == "per_model":
            return [value for _, value in self.values]
        return [self.low, self.high if self.kind != "randint" else int(self.high) - 1]


def grid(*values: Any) -> Param:
    return Param("grid", tuple(values))


def choice(*values: Any) -> Param:
    return Param("choice", tuple(values))


def uniform(low: float, high: float) -> Param:
    return Param("uniform", low=low, high=high)


def loguniform(low: float, high: float) -> Param:
    return Param("loguniform", low=low, high=high)


def randint(low: int, high: int) -> Param:
    """Integers in [low, high)."""
    return Param("randint", low=low, high=high)


def per_model(values: dict[str, Any]) -> Param:
    """A value chosen by the trial's model, e.g. ``per_model({"resnet18": True, "iacob_cnn":
    False})`` for ``pretrained``; every model the space can pick needs an entry."""
    return Param("per_model", tuple(sorted(values.items())))


@dataclass(frozen=True)
class Asha:
    """ASHA on ``Space.metric`` at rungs grace_period * reduction_factor**k epochs.

    A trial's ``epochs`` is its own budget: it ends there even if ASHA would let it go on, and
    ASHA compares trials only at rungs (in epochs) they have reached; max_t is the largest
    ``epochs`` in the space.
    """

    grace_period: int = 1
    reduction_factor: int = 2

    def rungs(self, max_t: int) -> list[int]:
        out, r = [], self.grace_period
        while r < max_t:
            out.append(r)
            r *= self.reduction_factor
        return out


@dataclass(frozen=True)
class Space:
    name: str
    description: str
    params: dict[str, Param]
    fixed: dict[str, Any] = field(default_factory=dict)
    search: str = "grid"
    num_samples: int = 1  # grid: repeats of the whole grid; random/TPE: trials drawn
    metric: str = "val_accuracy"
    mode: str = "max"
    asha: Asha | None = field(default_factory=Asha)
    paper: str = ""  # the seed paper (and table) this space reproduces, if any
    # Default data for the space ("sample", or a description of what to pass with --data).
    data_hint: str = "sample"
    # The configuration a finished study of this space chose (varied keys; ``fixed`` fills in
    # the rest): what ``python -m study.train_best --space <name>`` retrains. Empty: none yet.
    chosen: dict[str, Any] = field(default_factory=dict)

    # -- the metric ---------------------------------------------------------------------------
    @property
    def result_key(self) -> str:
        """The key every epoch reports the metric under (what ASHA and the searcher read)."""
        return metric_key(self.metric)

    @property
    def metric_column(self) -> str:
        """The trials table's column of the metric: the best epoch's validation figure
        (``best_val_*``), or an evaluation set's figure (``eval_*``, of the same epoch)."""
        key = self.result_key
        return key if is_eval_column(key) or key.startswith("best_") else f"best_{key}"

    # -- validation ---------------------------------------------------------------------------
    def validate(self) -> Space:
        def fail(msg: str) -> None:
            raise SpaceError(f"space {self.name!r}: {msg}")

        fields = set(TrainConfig.fields())
        for key in (*self.params, *self.fixed):
            if key not in fields:
                fail(f"unknown hyperparameter {key!r}; valid ones: {', '.join(sorted(fields))}")
        both = set(self.params) & set(self.fixed)
        if both:
            fail(f"{sorted(both)} are both varied and fixed; keep one")
        if self.search not in SEARCHES:
            fail(f"search {self.search!r} is not one of {SEARCHES}")
        if self.mode not in ("min", "max"):
            fail(f"mode {self.mode!r} must be 'min' or 'max'")
        try:
            if parse_eval_metric(self.metric) and self.mode != "max":
                fail(f"metric {self.metric} is higher-is-better: set mode 'max'")
        except EvalSetError as exc:
            fail(str(exc))
        if self.num_samples < 1:
            fail("num_samples must be at least 1")
        for key, p in self.params.items():
            if p.kind not in KINDS:
                fail(f"{key}: kind {p.kind!r} is not one of {KINDS}")
            if p.kind in ("grid", "choice") and not p.values:
                fail(f"{key}: {p.kind} needs at least one value")
            if p.kind in ("uniform", "loguniform", "randint"):
                if p.low is None or p.high is None or not p.low < p.high:
                    fail(f"{key}: a range needs low < high, got [{p.low}, {p.high}]")
                if p.kind == "loguniform" and p.low <= 0:
                    fail(f"{key}: loguniform needs low > 0")
            if p.kind == "per_model":
                self._check_per_model(key, p)
                continue
            if self.search != "grid" and p.kind == "grid":
                fail(f"{key}: grid values need search='grid'; use choice() with {self.search}")
            if self.search == "grid" and p.kind != "grid":
                fail(f"{key}: search='grid' enumerates grid() values only; use grid() or "
                     "search='random'")
            for value in p.candidates():
                self._check({**self.fixed, key: value})
        self._check(dict(self.fixed))
        if self.chosen:
            self._check(self.chosen_config())
        self._check_pretrained()
        if self.asha is not None:
            if self.asha.grace_period < 1 or self.asha.reduction_factor < 2:
                fail("ASHA needs grace_period >= 1 and reduction_factor >= 2")
            if self.asha.grace_period >= self.max_epochs():
                fail(f"ASHA grace_period {self.asha.grace_period} is not below the largest "
                     f"epochs budget {self.max_epochs()}; lower grace_period")
        return self

    def _check_per_model(self, key: str, p: Param) -> None:
        def fail(msg: str) -> None:
            raise SpaceError(f"space {self.name!r}: {key}: {msg}")

        if key == "model":
            fail("per_model cannot choose the model itself; use grid() or choice()")
        if self.search == "optuna_tpe":
            # Optuna's search space has no values that depend on other values.
            fail("per_model needs search='grid' or 'random'; fix the value or use choice()")
        table = dict(p.values)
        if not table or len(table) != len(p.values):
            fail("per_model needs one entry per model, each model once")
        models = self.models()
        missing = [m for m in models if m not in table]
        if missing:
            fail(f"per_model has no value for model(s) {missing}; give one for each of {models}")
        extra = sorted(set(table) - set(models))
        if extra:
            fail(f"per_model names model(s) {extra} that the space never picks; remove them")
        for model in models:
            self._check({**self.fixed, "model": model, key: table[model]})

    def _check_pretrained(self) -> None:
        """ImageNet weights only for models that have them (a trial would fail at its start)."""
        from trainables.models import model_spec  # late: models import torch

        for model in self.models():
            wanted = self.values_for(model, "pretrained")
            if any(bool(v) for v in wanted) and not model_spec(model).pretrained:
                raise SpaceError(
                    f"space {self.name!r}: model {model!r} has no pretrained weights but "
                    "pretrained=True can reach it; set pretrained per model with "
                    "per_model({...}) or fix pretrained=False")

    def values_for(self, model: str, key: str) -> list[Any]:
        """The values ``key`` can take in trials of ``model``."""
        p = self.params.get(key)
        if p is None:
            return [self.fixed.get(key, getattr(TrainConfig, key))]
        if p.kind == "per_model":
            return [dict(p.values)[model]]
        return p.candidates()

    def _check(self, values: dict[str, Any]) -> None:
        try:
            config = TrainConfig.from_dict(values)
        except (ConfigError, KeyError) as exc:
            raise SpaceError(f"space {self.name!r}: {exc}") from None
        if config.split_ratio >= 1.0:
            raise SpaceError(f"space {self.name!r}: split_ratio=1 leaves no validation set to "
                             "rank trials on; use a ratio below 1 (retrain the winner on the "
                             "whole pool with python -m study.train_best)")

    def with_overrides(self, overrides: dict[str, Any]) -> Space:
        """This space with ``overrides`` fixed (and no longer varied), validated."""
        if not overrides:
            return self
        params = {k: p for k, p in self.params.items() if k not in overrides}
        fixed = {**self.fixed, **overrides}
        if "model" in overrides:
            # One model left: a value that followed the model is now a constant.
            for key, p in list(params.items()):
                table = dict(p.values) if p.kind == "per_model" else {}
                if overrides["model"] in table:
                    fixed[key] = table[overrides["model"]]
                    del params[key]
        space = dataclasses.replace(self, params=params, fixed=fixed)
        if space.asha and space.asha.grace_period >= space.max_epochs():
            space = dataclasses.replace(space, asha=None)  # budgets end before the first rung
        return space.validate()

    # -- derived facts ------------------------------------------------------------------------
    def chosen_config(self) -> dict[str, Any]:
        """The full configuration ``chosen`` names (fixed values filled in)."""
        if not self.chosen:
            raise SpaceError(f"space {self.name!r} has no chosen configuration yet; run the "
                             "study and pass its directory with --study")
        return {**self.fixed, **self.chosen}

    def epoch_values(self) -> list[int]:
        p = self.params.get("epochs")
        if p is None:
            return [int(self.fixed.get("epochs", TrainConfig.epochs))]
        if p.kind in ("grid", "choice"):
            return sorted(int(v) for v in p.values)
        return [int(p.low), int(p.high)]

    def max_epochs(self) -> int:
        return max(self.epoch_values())

    def folded_budgets(self) -> list[int]:
        """The epoch budgets one run can serve, or [] when each needs its own run
        (``trainables.folding``: a grid over ``epochs`` without the one-cycle schedule)."""
        p = self.params.get("epochs")
        schedules = (self.params["schedule"].candidates() if "schedule" in self.params
                     else [self.fixed.get("schedule", TrainConfig.schedule)])
        return foldable_budgets(self.search, p.kind if p else None,
                                list(p.values) if p and p.values else [], schedules)

    def run_count(self, fold: bool = True) -> int:
        """Runs a study of this space starts: trials, less those folded into a longer run."""
        budgets = self.folded_budgets() if fold else []
        return self.trial_count() // len(budgets) if budgets else self.trial_count()

    def trial_count(self) -> int:
        if self.search == "grid":
            return math.prod(len(p.values) for p in self.params.values()
                             if p.kind == "grid") * self.num_samples
        return self.num_samples

    def grid_configs(self) -> list[dict[str, Any]]:
        """Every configuration of a grid space (used by dry runs and the tests)."""
        if self.search != "grid":
            raise SpaceError(f"space {self.name!r} samples with {self.search}; it has no grid")
        keys = [k for k, p in self.params.items() if p.kind == "grid"]
        follow = {k: dict(p.values) for k, p in self.params.items() if p.kind == "per_model"}
        combos = itertools.product(*(self.params[k].values for k in keys))
        configs = [{**self.fixed, **dict(zip(keys, c, strict=True))} for c in combos]
        for config in configs:
            model = config.get("model", TrainConfig.model)
            config.update({k: table[model] for k, table in follow.items()})
        return configs

    def models(self) -> list[str]:
        p = self.params.get("model")
        if p is not None and p.kind in ("grid", "choice"):
            return list(p.values)
        return [self.fixed.get("model", TrainConfig.model)]

    # -- JSON ---------------------------------------------------------------------------------
    def to_json(self) -> str:
        d = asdict(self)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Space:
        d = json.loads(text)
        d["params"] = {
            k: Param(p["kind"], tuple(tuple(v) if isinstance(v, list) else v
                                      for v in p["values"]), p["low"], p["high"])
            for k, p in d["params"].items()}
        d["asha"] = Asha(**d["asha"]) if d["asha"] else None
        return cls(**d).validate()
