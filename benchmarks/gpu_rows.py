"""The file a GPU-check stage writes and its driver reads: ``Rows(path, deadline).row(...)``.

Usage:
    rows = Rows(path, deadline)            # in a stage's process
    with rows.unit("small_cnn fp32"):      # an exception becomes this unit's error
        rows.row(model="small_cnn", images_per_s=812.0)
    found, errors, done = read_rows(path)  # in the driver, after the process ended or was killed

One JSON object a line, flushed at once, because the driver may kill the stage at its budget:
``{"row": {...}}`` a figure, ``{"error": "..."}`` a unit that raised, ``{"done": true}`` the
stage's last line. A line the kill cut short is skipped.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

NA = "n/a on CPU"  # the cell of a figure only a GPU has


class Rows:
    """A stage's output: one JSON object a line, flushed at once (the driver may kill us)."""

    def __init__(self, path: Path, deadline: float | None) -> None:
        self.file = open(path, "a", buffering=1)
        self.deadline = deadline or math.inf

    def row(self, **values: Any) -> None:
        print(json.dumps({"row": values}, default=_jsonable), file=self.file, flush=True)

    def error(self, unit: str, exc: BaseException) -> None:
        print(json.dumps({"error": f"{unit}: {type(exc).__name__}: {exc}"}), file=self.file,
              flush=True)

    def done(self) -> None:
        print(json.dumps({"done": True}), file=self.file, flush=True)

    def left(self) -> float:
        """Seconds until the stage's deadline (its budget less the driver's kill grace)."""
        return self.deadline - time.time()

    @contextlib.contextmanager
    def unit(self, name: str) -> Iterator[None]:
        """One unit of a stage: an exception is recorded as the unit's error and the stage
        goes on with its next unit."""
        try:
            yield
        except Exception as exc:
            self.error(name, exc)


def read_rows(path: Path) -> tuple[list[dict[str, Any]], list[str], bool]:
    """The rows, the errors and whether the stage wrote its last line, from ``path`` (which
    may not exist: the stage died before its first line)."""
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    done = False
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the kill
        if "row" in record:
            rows.append(record["row"])
        if "error" in record:
            errors.append(record["error"])
        done = done or bool(record.get("done"))
    return rows, errors, done


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # a numpy or torch scalar
        return value.item()
    return str(value)
