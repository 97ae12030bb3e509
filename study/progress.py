"""One progress line per interval, for terminals and log files alike.

Usage (by study.run, unless --quiet): ``tune.RunConfig(callbacks=[ProgressLine(space), ...])``

    [14:02:31] 12 s  runs: 3 done (2 cut by ASHA, 0 failed), 2 running, 7 pending;
    best val_accuracy 0.9125 (a1b2c_00004, epoch 8)        <- one line, wrapped here

A run is one Tune trial: with folded budgets it serves several trials of the tables. The line
replaces Tune's status table, whose redraws do not read well in a log file.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
import time
from typing import Any, TextIO

from ray import tune

from search_spaces.base import Space
from study.outcomes import NATURAL_ENDS


class ProgressLine(tune.Callback):
    def __init__(self, space: Space, interval_s: float = 30.0, stream: TextIO | None = None
                 ) -> None:
        self.metric = space.metric_column
        self.label = space.metric
        self.higher = space.mode == "max"
        self.interval_s = interval_s
        self.stream = stream
        self.started = time.monotonic()
        self.last = -math.inf

    def __getstate__(self) -> dict[str, Any]:  # Tune saves its callbacks with the experiment
        return {**self.__dict__, "stream": None}

    def line(self, trials: list) -> str:
        counts = {"TERMINATED": 0, "ERROR": 0, "RUNNING": 0, "PENDING": 0, "PAUSED": 0}
        cut = 0
        best: tuple[float, str, int] | None = None
        for t in trials:
            counts[t.status] = counts.get(t.status, 0) + 1
            result = t.last_result or {}
            if t.status == "TERMINATED" and result.get("stop_reason") not in NATURAL_ENDS:
                cut += 1
            value = result.get(self.metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                key = value if self.higher else -value
                if best is None or key > best[0]:
                    best = (key, t.trial_id, int(result.get("best_epoch") or 0))
        done = counts["TERMINATED"] + counts["ERROR"]
        text = (f"[{dt.datetime.now():%H:%M:%S}] {time.monotonic() - self.started:.0f} s  runs: "
                f"{done} done ({cut} cut by ASHA, {counts['ERROR']} failed), "
                f"{counts['RUNNING']} running, {counts['PENDING'] + counts['PAUSED']} pending")
        if best is not None:
            value = best[0] if self.higher else -best[0]
            text += f"; best {self.label} {value:.4f} ({best[1]}, epoch {best[2]})"
        return text

    def emit(self, trials: list) -> None:
        self.last = time.monotonic()
        print(self.line(trials), file=self.stream or sys.stdout, flush=True)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self.last >= self.interval_s:
            self.emit(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.emit(trials)
