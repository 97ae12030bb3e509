"""Upgrade a study's tables to this schema version, in place.

Usage: ``python -m results.migrate studies/grid1 [studies/grid2 ...]``

v4 -> v5: ``trials`` gains the degradation hyperparameters (``blur``, ``blur_sigma``, ``jpeg``,
``rescale``, off) and ``deterministic`` (``False``) at their defaults, which is how v4 trained
(``config_key`` is recomputed), and ``compile_seconds``: 0 for trials without ``compile``, null
for those with it, whose compile time v4 counted in ``train_seconds`` (its first epoch) without
telling it apart. The final-epoch, clean-test-set and training metrics are null: v4 did not
measure them.

v3 -> v4: ``trials`` gains ``normalize`` (at ``"model"``, how v3 trained; ``config_key`` is
recomputed) and ``checkpoint``, each trial's newest checkpoint folder relative to the
study directory. Newer studies record it as they end; for older ones it is found here, once, from
Tune's folder layout (``<trainable>_<run id>_<n>_<params>_<date>/checkpoint_<NNNNNN>/``, or the
trial id that a folder's ``result.json`` reports when the folder was renamed).

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
import re
import sys
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow.fs as pafs

from results import storage
from results.provenance import study_row
from results.schema import HYPERPARAMETER_NAMES, SCHEMA_VERSION, TABLES
from results.tables import (
    SchemaError,
    config_key,
    empty,
    read_raw,
    table_version,
    write_table,
)
from trainables.config import TrainConfig
from trainables.folding import split_trial_id

CHECKPOINT_DIR = re.compile(r"^checkpoint_(\d+)$")  # Tune's numbering of a trial's checkpoints


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


def _reported_trial_id(fs: pafs.FileSystem, folder: str) -> str | None:
    """The ``trial_id`` a Tune trial folder's result.json reports on its first line."""
    path = f"{folder}/result.json"
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        first = f.read(1 << 20).split(b"\n", 1)[0]
    try:
        return str(json.loads(first).get("trial_id") or "") or None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None


def find_checkpoint(study_dir: str, run_id: str) -> str | None:
    """The newest checkpoint folder of Tune trial ``run_id`` in a study directory, relative
    to it, from Tune's folder layout alone; None when it has none. Every checkpoint holds the
    best weights and test scores so far, so the newest is the one to use."""
    fs, base = storage.filesystem(study_dir)
    children = [i for i in fs.get_file_info(pafs.FileSelector(base))
                if i.type == pafs.FileType.Directory]
    mine = [c for c in children if f"_{run_id}_" in c.base_name]
    if not mine:  # a folder renamed or named otherwise: ask each trial's result.json
        mine = [c for c in children if _reported_trial_id(fs, c.path) == run_id]
    found = []
    for folder in mine:
        for entry in fs.get_file_info(pafs.FileSelector(folder.path)):
            match = CHECKPOINT_DIR.match(entry.base_name)
            if (entry.type == pafs.FileType.Directory and match and storage.is_file(
                    f"{entry.path}/{storage.CHECKPOINT_FILE}", fs)):
                found.append((int(match.group(1)), entry.path))
    return storage.relative_to(max(found)[1], study_dir) if found else None


def _v3_to_v4(name: str, df: pd.DataFrame, study_dir: str) -> pd.DataFrame:
    if name != "trials":
        return df
    # New hyperparameters (normalize) at their defaults, which are how v3 trained.
    df = _v2_to_v3(name, df)
    # A folded budget's trial (<run>-e<budget>) lives in its run's checkpoint.
    runs = {split_trial_id(t)[0] for t in df["trial_id"]}
    found = {r: find_checkpoint(study_dir, r) for r in runs}
    return df.assign(checkpoint=[found[split_trial_id(t)[0]] for t in df["trial_id"]])


def _v4_to_v5(name: str, df: pd.DataFrame) -> pd.DataFrame:
    if name != "trials":
        return df
    # The new hyperparameters (degradations, deterministic) at their defaults, which are how
    # v4 trained; the new metric columns stay empty: v4 did not measure them.
    df = _v2_to_v3(name, df)
    if "compile_seconds" not in df.columns:
        unknown = df["compile"].eq(True) if "compile" in df.columns else False
        df = df.assign(compile_seconds=np.where(unknown, np.nan, 0.0))
    return df


# from version -> the function bringing a table of that version to the next one (given the
# table's name, the table and the study directory)
MIGRATIONS: dict[int, Callable[[str, pd.DataFrame, str], pd.DataFrame]] = {
    1: lambda name, df, _: _v1_to_v2(name, df),
    2: lambda name, df, _: _v2_to_v3(name, df),
    3: _v3_to_v4,
    4: lambda name, df, _: _v4_to_v5(name, df),
}


def migrate_study(study_dir: str) -> list[str]:
    """Rewrite every older table of ``study_dir`` at this schema version; returns what changed."""
    study_dir = str(study_dir)
    if not storage.is_file(storage.join(study_dir, "trials.parquet")):
        raise FileNotFoundError(f"{study_dir} holds no trials.parquet; not a study directory")
    changed = []
    frames: dict[str, pd.DataFrame] = {}
    for name in TABLES:
        path = storage.join(study_dir, f"{name}.parquet")
        if not storage.is_file(path):
            continue
        table_name, version = table_version(path)
        if table_name != name:
            raise SchemaError(f"{path} holds the {table_name!r} table, not {name!r}")
        if version > SCHEMA_VERSION:
            raise SchemaError(f"{path} has schema v{version}, newer than this version "
                              f"(v{SCHEMA_VERSION}); it needs no migration here")
        df = read_raw(path)
        for v in range(version, SCHEMA_VERSION):
            df = MIGRATIONS[v](name, df, study_dir)
        frames[name] = df
        if version < SCHEMA_VERSION:
            changed.append(write_table(df, name, study_dir))
    if "predictions" not in frames:
        changed.append(write_table(empty("predictions"), "predictions", study_dir))
    info = storage.read_study_file(study_dir) or {}
    if "studies" not in frames:
        study = str(frames["trials"]["study"].iloc[0]) if len(frames["trials"]) else ""
        row = study_row(study_dir, info.get("name", study), frames["trials"], info=info,
                        revision="", hardware_info={"cpu_count": None, "gpu_count": None,
                                       "gpu_names": ""})  # unknown: not this machine's
        changed.append(write_table(pd.DataFrame([row]), "studies", study_dir))
    if info and info.get("schema_version", SCHEMA_VERSION) < SCHEMA_VERSION:
        changed.append(storage.write_study_file(
            study_dir, {**info, "schema_version": SCHEMA_VERSION}))
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

