"""What MLflow logging (``--mlflow``) costs the study's driver per reported result.

Usage: ``python benchmarks/mlflow_log.py [--trials 4] [--epochs 10]`` (needs ``.[mlflow]``)

Feeds the same results, with as many numbers as the trainable reports per epoch (about 75, plus
Tune's own keys), to Ray's ``MLflowLoggerCallback`` as it comes (a transaction per metric) and
to this project's subclass (``study/mlflow_log.py``: one batch per result), both writing to a
SQLite store, and times each result on the driver's thread.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ray.air.integrations.mlflow import MLflowLoggerCallback

from benchmarks.common import print_table
from search_spaces import get_space
from study.mlflow_log import mlflow_callback

REPORTED = 75  # numbers per epoch of a trial: losses, val_/test_/best_val_ metrics, timings


class Trial:
    """The attributes of a Tune trial the callbacks read."""

    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id
        self.config = {"model": "small_cnn", "batch_size": 64, "lr": 1e-3, "epochs": 10}
        self.last_result: dict[str, Any] = {"stop_reason": "budget"}
        self.checkpoint = None

    def __str__(self) -> str:
        return f"trainable_{self.trial_id}"


def feed(callback: Any, trials: int, epochs: int) -> list[float]:
    """Per-result seconds on the calling thread."""
    per_result = []
    for i in range(trials):
        trial = Trial(f"run_{i:05d}")
        callback.log_trial_start(trial)
        for e in range(1, epochs + 1):
            result = {f"metric_{k:02d}": k / (e + 1) for k in range(REPORTED)}
            result.update({"epoch": e, "training_iteration": e, "time_this_iter_s": 0.5,
                           "time_total_s": 0.5 * e, "config": trial.config, "stop_reason": ""})
            start = time.perf_counter()
            callback.log_trial_result(e, trial, result)
            per_result.append(time.perf_counter() - start)
        callback.log_trial_end(trial)
    return per_result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=10)
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        ours = mlflow_callback("", folder, "ours", get_space("quickstart"))
        ray_own = MLflowLoggerCallback(tracking_uri=ours.tracking_uri, experiment_name="ray")
        for label, callback in (("Ray's MLflowLoggerCallback (baseline)", ray_own),
                                ("one batch per result (--mlflow)", ours)):
            callback.setup()
            times = feed(callback, args.trials, args.epochs)
            rows.append([label, statistics.median(times) * 1e3,
                         sorted(times)[int(0.99 * len(times))] * 1e3])
    base = rows[0][1]
    for row in rows:
        row.append(base / row[1] if row[1] else float("inf"))
    print_table(f"MLflow logging, SQLite store: {args.trials} trials x {args.epochs} results",
                ["writes", "median ms/result", "p99 ms/result", "driver speed-up"], rows)


if __name__ == "__main__":
    main()
