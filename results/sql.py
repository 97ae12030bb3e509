"""DuckDB over the studies' Parquet files, as views trials, epochs, predictions and studies.

Usage:
    con = connect(["studies/a", "studies/b"])
    con.sql("SELECT model, max(test_accuracy) FROM trials GROUP BY model").df()

Each file is checked to be our table at this schema version before a view reads it. With several
study directories the views keep one row per key (``results.schema.KEYS``), the directory named
last winning, exactly as ``results.load`` merges. Remote (URI) directories are read through
``results.load`` and registered as DataFrames.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import duckdb

from results.schema import KEYS, SCHEMA_VERSION, TABLES
from results.storage import is_file, is_uri, join
from results.tables import SchemaError, empty, load, study_dirs, table_version


def _quote(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


def _view_sql(name: str, files: list[str]) -> str:
    if len(files) == 1:
        return f"SELECT * FROM read_parquet({_quote(files[0])})"
    union = " UNION ALL BY NAME ".join(
        f"SELECT *, {i} AS _source FROM read_parquet({_quote(f)})" for i, f in enumerate(files))
    keys = ", ".join(KEYS[name])
    return (f"SELECT * EXCLUDE (_source) FROM ({union}) "
            f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY _source DESC) = 1")


def connect(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
            ) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with one view per table over the given study dirs."""
    dirs = study_dirs(paths)
    load(dirs, tables=["studies"])  # refuses two different studies sharing one name
    con = duckdb.connect()
    if any(is_uri(d) for d in dirs):
        for name, df in load(dirs).items():
            con.register(name, df)
        return con
    for name in TABLES:
        files = [f for f in (join(d, f"{name}.parquet") for d in dirs) if is_file(f)]
        for f in files:
            table_name, version = table_version(f)
            if version != SCHEMA_VERSION or table_name != name:
                raise SchemaError(f"{f} holds {table_name!r} at schema v{version}, not {name!r} "
                                  f"at v{SCHEMA_VERSION}; see `python -m results.migrate`")
        if files:
            con.execute(f"CREATE VIEW {name} AS {_view_sql(name, files)}")
        else:
            con.register(name, empty(name))
    return con
