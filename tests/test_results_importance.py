"""Hyperparameter importance over the trials table (Optuna's evaluators).

Usage: ``python -m pytest tests/test_results_importance.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from results.aggregate import ReportError
from results.importance import importances
from results.query import main as query_main


def tables(n: int = 40, seed: int = 0) -> dict[str, pd.DataFrame]:
    """A study where batch size decides the metric and the learning rate barely matters."""
    rng = np.random.default_rng(seed)
    batch = rng.choice([16, 32, 64, 128], n)
    lr = rng.uniform(1e-4, 1e-2, n)
    acc = 0.95 - 0.002 * batch + rng.normal(0, 0.002, n) + 0.1 * lr
    trials = pd.DataFrame({"study": "s", "trial_id": [f"t{i}" for i in range(n)],
                           "status": "TERMINATED", "batch_size": batch, "lr": lr,
                           "model": "small_cnn", "best_val_accuracy": acc})
    space = {"params": {"batch_size": {}, "lr": {}, "model": {}}}
    studies = pd.DataFrame({"study": ["s"], "space_json": [json.dumps(space)]})
    return {"trials": trials, "studies": studies}


@pytest.mark.parametrize("evaluator", ["fanova", "ped", "mdi"])
def test_the_hyperparameter_that_decides_the_metric_ranks_first(evaluator: str) -> None:
    got = importances(tables(), evaluator=evaluator).set_index("parameter")["importance"]
    assert got.index[0] == "batch_size"
    assert "model" not in got.index  # one value: explains nothing
    assert got["batch_size"] > got["lr"]


def test_too_few_trials_is_a_clear_error() -> None:
    with pytest.raises(ReportError, match="at least 3 finished trials"):
        importances(tables(n=2))


def test_the_query_command_prints_importance_of_a_real_study(
        tiny_study, capsys: pytest.CaptureFixture[str]) -> None:
    assert query_main(["importance", str(tiny_study), "--evaluator", "mdi"]) == 0
    out = capsys.readouterr().out
    assert "batch_size" in out and "importance" in out
