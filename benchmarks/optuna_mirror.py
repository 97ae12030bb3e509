"""What the live Optuna mirror costs the study's driver per reported result.

Usage: ``python benchmarks/optuna_mirror.py [--trials 50] [--epochs 20]``

Feeds the mirror the events Tune would (trial start, one result per epoch, completion) for
``--trials`` trials of a two-parameter grid and times, per result, what the driver's thread
spends in the callback: the mirror's background writer (the default) against writing each
result to the journal file on the driver's thread (the baseline). It then waits for the
writer to drain and reports that too, so the writes are not hidden, only moved off the driver.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table
from search_spaces.base import Asha, Space, grid
from study.optuna_mirror import OptunaMirror


@dataclass
class Trial:
    """The attributes of a Tune trial the mirror reads."""

    trial_id: str
    config: dict[str, Any]
    last_result: dict[str, Any] = field(default_factory=dict)


def feed(mirror: OptunaMirror, trials: int, epochs: int, synchronous: bool) -> list[float]:
    """Per-result seconds on the calling thread."""
    if synchronous:  # the baseline: every write on this thread, as it is made
        mirror.writer.put = lambda job: job()  # type: ignore[method-assign]
    per_result = []
    for i in range(trials):
        t = Trial(f"run_{i:05d}", {"batch_size": (16, 32)[i % 2], "lr": 1e-3, "epochs": epochs})
        mirror.on_trial_start(0, [], t)
        for e in range(1, epochs + 1):
            result = {"epoch": e, "val_accuracy": 0.5 + e / (2 * epochs),
                      "best_val_accuracy": 0.5 + e / (2 * epochs),
                      "stop_reason": "budget" if e == epochs else ""}
            start = time.perf_counter()
            mirror.on_trial_result(0, [], t, result)
            per_result.append(time.perf_counter() - start)
            t.last_result = result
        mirror.on_trial_complete(0, [], t)
    return per_result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--epochs", type=int, default=20)
    args = p.parse_args()
    space = Space("bench", "two batch sizes", {"batch_size": grid(16, 32)},
                  fixed={"lr": 1e-3}, asha=Asha())
    rows = []
    for label, synchronous in (("journal write on the driver (baseline)", True),
                               ("background writer (the mirror)", False)):
        with tempfile.TemporaryDirectory() as folder:
            mirror = OptunaMirror(str(Path(folder) / "optuna.log"), "bench", space)
            mirror.setup()
            start = time.perf_counter()
            times = feed(mirror, args.trials, args.epochs, synchronous)
            fed = time.perf_counter() - start
            errors = mirror.close()
            drained = time.perf_counter() - start
            assert not errors, errors
            rows.append([label, statistics.median(times) * 1e3,
                         sorted(times)[int(0.99 * len(times))] * 1e3, fed, drained])
    base = rows[0][1]
    for row in rows:
        row.insert(3, base / row[1] if row[1] else float("inf"))
    print_table(f"Optuna mirror: {args.trials} trials x {args.epochs} results",
                ["writes", "median ms/result", "p99 ms/result", "driver speed-up",
                 "driver s", "s until written"], rows)


if __name__ == "__main__":
    main()
