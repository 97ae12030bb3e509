"""SQL over a study's tables: ordinary queries work, and nothing but reading them is possible.

Usage: ``python -m pytest tests/test_results_sql.py`` (no Ray; a real study directory).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from helpers import outcome, write

from results.query import main as query_main
from results.sql import ReadOnlyError, connect, query


@pytest.fixture
def study(tmp_path: Path) -> Path:
    write(tmp_path / "s", "s", [outcome(tmp_path, "t1"), outcome(tmp_path, "t2", epochs=2)])
    return tmp_path / "s"


def sql(capsys: pytest.CaptureFixture[str], statement: str, study: Path) -> tuple[int, str]:
    code = query_main(["sql", statement, str(study), "--format", "csv"])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_selects_group_bys_and_joins_over_the_tables_work(study: Path) -> None:
    con = connect(study)
    got = query(con, "SELECT t.trial_id, count(*) AS n, any_value(s.space) AS space "
                     "FROM trials t JOIN epochs e USING (study, trial_id) "
                     "JOIN predictions p USING (study, trial_id) JOIN studies s USING (study) "
                     "GROUP BY 1 ORDER BY 1")
    # t1: 3 epochs x 8 predictions, t2: 2 x 8
    assert got.to_dict("records") == [{"trial_id": "t1", "n": 24, "space": "unit"},
                                      {"trial_id": "t2", "n": 16, "space": "unit"}]
    assert list(query(con, "DESCRIBE trials")["column_name"][:2]) == ["study", "trial_id"]
    assert "explain_value" in query(con, "EXPLAIN SELECT * FROM trials").columns


# Each tries to leave the study's tables: read another file, write one (the study's own table
# included), attach a database, install an extension, or switch the lock-down off.
ESCAPES = {
    "read a file": "SELECT * FROM read_csv('/etc/passwd', sep = ':')",
    "list files": "SELECT * FROM glob('/etc/*')",
    "write a file": "COPY (SELECT 1 AS x) TO '{target}'",
    "overwrite the study's table": "COPY (SELECT 1 AS x) TO '{trials}' (FORMAT parquet)",
    "attach a database": "ATTACH '{db}' AS other",
    "export the database": "EXPORT DATABASE '{folder}'",
    "install an extension": "INSTALL httpfs",
    "load an extension": "LOAD httpfs",
    "switch access back on": "SET enable_external_access = true",
    "unlock the configuration": "RESET lock_configuration",
    "create a table": "CREATE TABLE t AS SELECT 1",
    "hide a write after a select": "SELECT 1; COPY (SELECT 1 AS x) TO '{target}'",
}


@pytest.mark.parametrize("statement", ESCAPES.values(), ids=ESCAPES.keys())
def test_a_query_that_leaves_the_tables_is_refused_and_changes_nothing(
    study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], statement: str
) -> None:
    trials = study / "trials.parquet"
    before = trials.read_bytes()
    targets = {"target": tmp_path / "anywhere.csv", "db": tmp_path / "x.db",
               "folder": tmp_path / "exported", "trials": trials}
    code, output = sql(capsys, statement.format(**targets), study)
    assert code == 2
    assert output.startswith("error: queries are read-only over the study's tables")
    assert trials.read_bytes() == before
    assert [p for k, p in targets.items() if k != "trials" and p.exists()] == []


def test_the_connection_itself_refuses_files_and_reconfiguration(study: Path,
                                                                 tmp_path: Path) -> None:
    # Without query()'s statement check, DuckDB's own lock-down still holds.
    con = connect(study)
    with pytest.raises(duckdb.PermissionException):
        con.sql("SELECT * FROM read_text('/etc/hostname')").fetchall()
    with pytest.raises(duckdb.PermissionException):
        con.execute(f"COPY (SELECT 1) TO '{tmp_path / 'anywhere.csv'}'")
    with pytest.raises(duckdb.InvalidInputException, match="locked"):
        con.execute("SET enable_external_access = true")
    assert not (tmp_path / "anywhere.csv").exists()
    with pytest.raises(ReadOnlyError, match="read-only"):
        query(con, "SELECT * FROM read_text('/etc/hostname')")


def test_a_file_named_as_a_table_is_no_table(study: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    # DuckDB reads a quoted file name as a table only with external access on.
    code, output = sql(capsys, "SELECT * FROM '/etc/passwd'", study)
    assert code == 2 and "does not exist" in output and "root:" not in output


def test_several_studies_are_read_only_too(study: Path, tmp_path: Path) -> None:
    write(tmp_path / "b", "b", [outcome(tmp_path, "t1")])
    con = connect([study, tmp_path / "b"])
    assert query(con, "SELECT count(*) AS n FROM trials")["n"].item() == 3
    with pytest.raises(ReadOnlyError):
        query(con, f"COPY trials TO '{tmp_path / 'b' / 'trials.parquet'}'")
    assert query(connect(tmp_path / "b"), "SELECT count(*) AS n FROM trials")["n"].item() == 1


def test_a_syntax_error_is_still_an_sql_error(study: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, output = sql(capsys, "SELEKT 1", study)
    assert code == 2 and output.startswith("error: SQL error")
