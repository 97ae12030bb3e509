"""Result tables of studies: schema, atomic writes, loading and merging, queries and reports.

Usage: ``tables = results.load("studies/grid1")`` -> {"trials", "epochs", "predictions",
"studies"} as pandas DataFrames; ``python -m results.query --help``; ``python -m results.report``.
"""

from __future__ import annotations

from results.tables import MergeError, SchemaError, load

__all__ = ["MergeError", "SchemaError", "load"]
