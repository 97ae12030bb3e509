"""DuckDB over the studies' Parquet files, as read-only views trials, epochs, predictions, ...

Usage:
    con = connect(["studies/a", "studies/b"])
    query(con, "SELECT model, max(test_accuracy) FROM trials GROUP BY model")  # a DataFrame

Each file is checked to be our table at this schema version before a view reads it. With several
study directories the views keep one row per key (``results.schema.KEYS``), the directory named
last winning, exactly as ``results.load`` merges. Remote (URI) directories are read through
``results.load`` and registered as DataFrames.

Queries are read-only over the study's tables and reach nothing else. The tables enter DuckDB as
registered Arrow datasets (read by pyarrow, lazily, only the columns a query uses), and DuckDB
itself runs with ``enable_external_access`` off and its configuration locked, as "Securing
DuckDB" in DuckDB's operations manual advises for SQL one does not write oneself: no
``read_csv('/etc/passwd')``, no ``COPY ... TO`` a file (a study's own table included), no
``ATTACH``, no ``INSTALL``/``LOAD``, no ``SET`` back. ``query`` also admits only SELECT and
EXPLAIN statements (DESCRIBE, SHOW and SUMMARIZE are SELECTs), so each fails with one message.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import duckdb
import pandas as pd
import pyarrow.dataset as pads

from results.schema import KEYS, SCHEMA_VERSION, TABLES
from results.storage import is_file, is_uri, join
from results.tables import SchemaError, empty, load, study_dirs, table_version

READ_ONLY = ("queries are read-only over the study's tables "
             f"({', '.join(TABLES)}): they cannot read, write or attach other files")
# Statement types a query may hold (duckdb.extract_statements): the others create, change,
# copy, attach, install or configure something.
READ_STATEMENTS = frozenset({duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN})
# The connection's settings, fixed when it opens (DuckDB: "Securing DuckDB").
LOCKED = {"enable_external_access": False, "lock_configuration": True}


class ReadOnlyError(ValueError):
    """A query that tried to write, read another file, attach, install or reconfigure."""


def _source_view(name: str, sources: list[str]) -> str:
    if len(sources) == 1:
        return f"SELECT * FROM {sources[0]}"
    union = " UNION ALL BY NAME ".join(
        f"SELECT *, {i} AS _source FROM {s}" for i, s in enumerate(sources))
    keys = ", ".join(KEYS[name])
    return (f"SELECT * EXCLUDE (_source) FROM ({union}) "
            f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY _source DESC) = 1")


def connect(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
            ) -> duckdb.DuckDBPyConnection:
    """An in-memory, locked-down DuckDB connection with one view per table of the study dirs."""
    dirs = study_dirs(paths)
    load(dirs, tables=["studies"])  # refuses two different studies sharing one name
    con = duckdb.connect(config=LOCKED)
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
        if len(files) == 1:
            con.register(name, pads.dataset(files[0], format="parquet"))
        elif files:
            sources = [f"_{name}_{i}" for i in range(len(files))]
            for source, f in zip(sources, files, strict=True):
                con.register(source, pads.dataset(f, format="parquet"))
            con.execute(f"CREATE VIEW {name} AS {_source_view(name, sources)}")
        else:
            con.register(name, empty(name))
    return con


def query(con: duckdb.DuckDBPyConnection, sql: str) -> pd.DataFrame:
    """The result of ``sql`` (its last statement's); ReadOnlyError for anything but reading.

    Other SQL errors (syntax, unknown tables or columns) raise ``duckdb.Error``.
    """
    statements = duckdb.extract_statements(sql)
    if not statements:
        raise duckdb.InvalidInputException("the query holds no SQL statement")
    for statement in statements:
        if statement.type not in READ_STATEMENTS:
            raise ReadOnlyError(f"{READ_ONLY}; not a SELECT: {statement.query.strip()!r}")
    try:
        return con.sql(sql).df()
    except duckdb.PermissionException as exc:  # a file, an extension: external access is off
        raise ReadOnlyError(f"{READ_ONLY} ({exc})") from None
