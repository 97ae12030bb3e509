"""Upgrade a study's tables to this schema version, in place.

Usage: ``python -m results.migrate studies/grid1 [studies/grid2 ...]``

v2 -> v3: ``trials`` gains the training-recipe hyperparameters added with ``cifake_fast``
(``flip``, ``translate``, ``schedule``, ``warmup``, ``ema``, ``tta``) at their defaults, which are
exactly how v2 trained, and ``config_key`` is recomputed over the full set of hyperparameters.

v1 -> v2: ``trials`` gains ``config_key`` (computed from its hyperparameter columns), a ``studies``
row is built from ``study.json`` (code revision unknown: ""), and ``predictions`` is written empty
(v1 studies stored no test labels; rerun ``python -m study.run --resume --name <study>`` with this
version to fill it from the trials' checkpoints). ``study.json`` records the new schema version so
the study can be resumed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

import pandas as pd

from results.provenance import STUDY_FILE, read_study_file, study_row
from results.schema import HYPERPARAMETER_NAMES, SCHEMA_VERSION, TABLES
from results.tables import (
    SchemaError,
    _is_file,
    _join,
    config_key,
    empty,
    filesystem,
    read_raw,
    table_version,
    write_table,
)
from trainables.config import TrainConfig


def _with_config_keys(df: pd.DataFrame) -> pd.DataFrame:
    """``config_key`` computed from the trials' hyperparameter columns."""
    hp = df[[c for c in HYPERPARAMETER_NAMES if c in df.columns]]
    return df.assign(config_key=[config_key(r) for r in hp.to_dict("records")])


def _v1_to_v2(name: str, df: pd.DataFrame) -> pd.DataFrame:
    return _with_config_keys(df) if name == "trials" else df


def _v2_to_v3(name: str, df: pd.DataFrame) -> pd.DataFrame:
    if name == "trials":
        df = df.copy()
        for key, default in TrainConfig().asdict().items():
            if key not in df.columns:
                df[key] = default
        return _with_config_keys(df)
    return df


# from version -> the function bringing a table of that version to the next one
MIGRATIONS: dict[int, Callable[[str, pd.DataFrame], pd.DataFrame]] = {1: _v1_to_v2, 2: _v2_to_v3}


def migrate_study(study_dir: str) -> list[str]:
    """Rewrite every older table of ``study_dir`` at this schema version; returns what changed."""
    study_dir = str(study_dir)
    if not _is_file(_join(study_dir, "trials.parquet")):
        raise FileNotFoundError(f"{study_dir} holds no trials.parquet; not a study directory")
    changed = []
    frames: dict[str, pd.DataFrame] = {}
    for name in TABLES:
        path = _join(study_dir, f"{name}.parquet")
        if not _is_file(path):
            continue
        table_name, version = table_version(path)
        if table_name != name:
            raise SchemaError(f"{path} holds the {table_name!r} table, not {name!r}")
        if version > SCHEMA_VERSION:
            raise SchemaError(f"{path} has schema v{version}, newer than this version "
                              f"(v{SCHEMA_VERSION}); it needs no migration here")
        df = read_raw(path)
        for v in range(version, SCHEMA_VERSION):
            df = MIGRATIONS[v](name, df)
        frames[name] = df
        if version < SCHEMA_VERSION:
            changed.append(write_table(df, name, study_dir))
    if "predictions" not in frames:
        changed.append(write_table(empty("predictions"), "predictions", study_dir))
    info = read_study_file(study_dir)
    if "studies" not in frames:
        study = str(frames["trials"]["study"].iloc[0]) if len(frames["trials"]) else ""
        row = study_row(study_dir, info.get("name", study), frames["trials"], info=info,
                        revision="", hardware_info={"cpu_count": None, "gpu_count": None,
                                       "gpu_names": ""})  # unknown: not this machine's
        changed.append(write_table(pd.DataFrame([row]), "studies", study_dir))
    if info and info.get("schema_version", SCHEMA_VERSION) < SCHEMA_VERSION:
        fs, base = filesystem(study_dir)
        with fs.open_output_stream(f"{base}/{STUDY_FILE}") as f:
            f.write(json.dumps({**info, "schema_version": SCHEMA_VERSION}, indent=1).encode())
        changed.append(_join(study_dir, STUDY_FILE))
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m results.migrate", description=__doc__.split(
        "\n")[0])
    p.add_argument("study_dirs", nargs="+")
    args = p.parse_args(argv)
    for study_dir in args.study_dirs:
        try:
            changed = migrate_study(study_dir)
        except (SchemaError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"{study_dir}: " + (", ".join(changed) if changed else "already v"
                                  f"{SCHEMA_VERSION}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

