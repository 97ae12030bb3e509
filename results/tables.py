"""Build, write (atomically), read and merge the studies' Parquet tables.

Usage:
    tables = results.load("studies/my-study")             # one study directory
    tables = results.load(["studies/a", "studies/b"])     # several, merged without duplicates
    tables = results.load("studies")                      # every study directory in a folder
    tables["trials"], tables["epochs"], tables["predictions"], tables["studies"]  # DataFrames
    tables["evaluations"], tables["eval_predictions"], tables["robustness"]  # empty until the
    # analysis commands (study.evaluate, study.robustness) have written them

One job, a little over 450 lines: from trial outcomes to rows, to schema-conformed Parquet
files, and back, merged. Paths go through ``results.storage``, the schema is
``results.schema``'s, Tune is ``study.outcomes``' business.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from results import storage
from results.provenance import study_row
from results.schema import (
    EPOCHS,
    KEYS,
    ORDERED_PREFIX,
    RUN_TABLES,
    SCHEMA_VERSION,
    SCHEMAS,
    TABLE_KEY,
    TABLES,
    TRIALS,
    VERSION_KEY,
    extra_columns,
)
from trainables.config import ConfigError, TrainConfig
from trainables.dataset import ImageSet
from trainables.eval_sets import is_eval_column
from trainables.folding import served_trials, state_of_trial
from trainables.metrics import CLEAN_METRICS, METRIC_NAMES

PathLike = str | os.PathLike[str]


class SchemaError(ValueError):
    """A table that is not one of ours, is corrupt, or is of another schema version."""


class MergeError(ValueError):
    """Tables that must not be merged, such as two different studies sharing one name."""


def _column(values: pd.Series, type_: pa.DataType) -> pa.Array:
    """One column of the declared type; NaN and None become nulls."""
    try:
        return pa.Array.from_pandas(values, type=type_)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        objects = values.astype(object).where(values.notna(), None).tolist()
        return pa.array(objects, type=type_, from_pandas=True)


def to_table(df: pd.DataFrame, name: str) -> pa.Table:
    """Conform ``df`` to the declared schema: missing columns become nulls, types are cast."""
    schema = SCHEMAS[name]
    df = df.reset_index(drop=True)
    # The evaluation sets' metric columns, in their order after the declared ones.
    schema = pa.schema([*schema, *(pa.field(c, pa.float64())
                                   for c in extra_columns(name, list(df.columns)))])
    columns = {}
    for f in schema:
        if f.name in df.columns:
            columns[f.name] = _column(df[f.name], f.type)
        else:
            columns[f.name] = pa.nulls(len(df), type=f.type)
    table = pa.table(columns, schema=schema)
    meta = {VERSION_KEY: str(SCHEMA_VERSION).encode(), TABLE_KEY: name.encode()}
    return table.replace_schema_metadata(meta)


def empty(name: str) -> pd.DataFrame:
    """A table with no rows and every declared column."""
    return SCHEMAS[name].empty_table().to_pandas()


def write_table(df: pd.DataFrame, name: str, study_dir: str) -> str:
    """Write ``<study_dir>/<name>.parquet`` atomically; returns its path.

    Locally: a temporary file in the same folder, then ``os.replace``, so a reader (or a crash)
    sees the old table or the new one, never half of one. On object stores a PUT is atomic.
    """
    table = to_table(df, name)
    study_dir = str(study_dir)
    fs, base = storage.filesystem(study_dir)
    target = f"{base}/{name}.parquet"
    if isinstance(fs, pafs.LocalFileSystem):
        os.makedirs(base, exist_ok=True)
        storage.replace_atomically(target, lambda tmp: pq.write_table(table, tmp))
    else:
        fs.create_dir(base, recursive=True)
        pq.write_table(table, target, filesystem=fs)
    return storage.join(study_dir, f"{name}.parquet")


def table_version(path: str) -> tuple[str, int]:
    """(table name, schema version) from a Parquet file's metadata; SchemaError if not ours."""
    fs, local = storage.filesystem(path)
    try:
        schema = pq.read_schema(local, filesystem=fs)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SchemaError(f"{path} is not a readable Parquet file ({exc}); it may be corrupt "
                          "or still being written: rerun `python -m study.run --resume ...`"
                          ) from None
    meta = schema.metadata or {}
    if VERSION_KEY not in meta:
        raise SchemaError(f"{path} is not a study table (no {VERSION_KEY.decode()} metadata); "
                          "point at a study directory written by study.run")
    try:
        version = int(meta[VERSION_KEY])
    except ValueError:
        raise SchemaError(f"{path} has an unreadable schema version {meta[VERSION_KEY]!r}"
                          ) from None
    return meta.get(TABLE_KEY, b"").decode(), version


def read_raw(path: str) -> pd.DataFrame:
    """The whole Parquet file as a DataFrame, whatever its version; SchemaError if corrupt."""
    fs, local = storage.filesystem(path)
    try:
        return pq.read_table(local, filesystem=fs).to_pandas()
    except (pa.ArrowInvalid, OSError) as exc:
        raise SchemaError(f"{path} is corrupt ({exc}); rewrite it with `python -m study.run "
                          "--resume --name <study>`") from None


def read_table(path: str, name: str | None = None) -> pd.DataFrame:
    """One table file, checked to be ours, of this schema version and (if given) named ``name``."""
    table_name, version = table_version(path)
    if version != SCHEMA_VERSION:
        hint = (f"upgrade it with `python -m results.migrate {Path(path).parent}`"
                if version < SCHEMA_VERSION else "read it with the newer version that wrote it")
        raise SchemaError(f"{path} has result schema v{version}; this version reads "
                          f"v{SCHEMA_VERSION}: {hint}")
    if name and table_name != name:
        raise SchemaError(f"{path} holds the {table_name!r} table, not {name!r}")
    return read_raw(path)


# ---------------------------------------------------------------------------------------------
# Loading and merging several studies


def study_dirs(paths: PathLike | Sequence[PathLike]) -> list[str]:
    """Study directories among ``paths``: each is one, or a folder whose children are."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[str] = []
    for raw in paths:
        path = str(raw)
        if storage.is_file(storage.join(path, "trials.parquet")):
            out.append(path)
            continue
        if not storage.is_dir(path):
            raise FileNotFoundError(f"{path} does not exist")
        found = [storage.join(path, c) for c in storage.subfolders(path)
                 if storage.is_file(storage.join(path, c, "trials.parquet"))]
        if not found:
            raise FileNotFoundError(
                f"{path} holds no trials.parquet, nor do its subfolders; is it a study directory "
                "(or a folder of them)? Tables are written when a study ends or is resumed")
        out.extend(found)
    return out


def merge(name: str, parts: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate tables, keeping the last row of each key (a later study copy wins)."""
    parts = [p for p in parts if p is not None and len(p)]
    if not parts:
        return empty(name)
    df = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    keys = list(KEYS[name])
    df = df.drop_duplicates(keys, keep="last")
    # Predictions keep the checkpoint's image order within a trial (see ORDERED_PREFIX).
    order = keys[: ORDERED_PREFIX.get(name, len(keys))]
    return df.sort_values(order, kind="stable", ignore_index=True)


def _check_same_study(studies: pd.DataFrame) -> None:
    started = studies.dropna(subset=["started"]).groupby("study")["started"].nunique()
    clash = started[started > 1]
    if len(clash):
        name = clash.index[0]
        times = sorted(studies.loc[studies["study"] == name, "started"].astype(str).unique())
        raise MergeError(f"two different studies are both named {name!r} (started {times}); "
                         "load them separately: rows are merged by (study, trial_id)")


def load(paths: PathLike | Sequence[PathLike], tables: Sequence[str] | None = None
         ) -> dict[str, pd.DataFrame]:
    """The tables of one or several study directories (or folders of them), merged.

    Returns every table in ``tables`` (default: all); a table no directory holds is empty.
    Rows are de-duplicated on ``results.schema.KEYS``: the same study seen twice (a copy and its
    resumed original) contributes each trial once, the later directory given winning.
    """
    names = list(tables or TABLES)
    unknown = sorted(set(names) - set(TABLES))
    if unknown:
        raise KeyError(f"unknown table(s) {unknown}; tables: {', '.join(TABLES)}")
    parts: dict[str, list[pd.DataFrame]] = {n: [] for n in {*names, "studies"}}
    for study_dir in study_dirs(paths):
        for name in parts:
            path = storage.join(study_dir, f"{name}.parquet")
            if storage.is_file(path):
                parts[name].append(read_table(path, name))
    studies = merge("studies", []) if not parts["studies"] else pd.concat(
        parts["studies"], ignore_index=True)
    _check_same_study(studies)
    return {name: merge(name, parts[name]) for name in names}


# ---------------------------------------------------------------------------------------------
# From trial outcomes to rows


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def config_key(hyperparameters: dict[str, Any]) -> str:
    """A short hash of every hyperparameter but the seed (equal for repeats over seeds)."""
    values = {k: v for k, v in hyperparameters.items() if k != "seed"}
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _hyperparameters(config: dict[str, Any]) -> dict[str, Any]:
    """Every TrainConfig field, typed as declared (so equal configurations hash equally)."""
    known = {k: v for k, v in config.items() if k in TrainConfig.fields()}
    try:
        return TrainConfig.from_dict(known).asdict()
    except (ConfigError, KeyError):  # e.g. the trial failed on this very config: keep it raw
        return {k: getattr(v, "item", lambda v=v: v)() if not isinstance(v, str) else v
                for k, v in {**TrainConfig().asdict(), **known}.items()}


def trial_rows(
    study: str, trial_id: str, config: dict[str, Any], history: pd.DataFrame | None,
    error: str | None, finished: bool = True, budget: int | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One trials row and its epochs rows from a trial's config, reported history and error.

    With ``budget``, the trial with that many epochs that a folded run served
    (``trainables.folding``): the run's config and history up to that epoch.
    """
    if budget is not None:
        config = {**config, "epochs": budget}
    hp = _hyperparameters(config)
    row: dict[str, Any] = {"study": study, "trial_id": trial_id, "config_key": config_key(hp),
                           **hp, "restarts": 0}
    epochs: list[dict[str, Any]] = []
    if history is not None and "epoch" in history.columns:
        # A trial restarted from a checkpoint reports its later epochs again: keep the last.
        history = history.drop_duplicates("epoch", keep="last").sort_values("epoch")
        if budget is not None:
            history = history[history["epoch"] <= budget]
    else:
        history = None
    reached = False  # a folded budget the run trained through, whatever happened later
    if history is not None and len(history):
        last = history.iloc[-1].to_dict()
        reached = budget is not None and int(last["epoch"]) == budget
        # Evaluation sets: every metric in the trial's row, the whole-set ones per epoch.
        extra = [c for c in history.columns if is_eval_column(c)]
        per_epoch = [c for c in extra if "__" not in c]
        for rec in history.to_dict("records"):
            epochs.append({"study": study, "trial_id": trial_id,
                           **{f.name: _clean(rec.get(f.name)) for f in EPOCHS
                              if f.name not in ("study", "trial_id")},
                           **{c: _clean(rec.get(c)) for c in per_epoch}})
        # The test metrics are the best epoch's, computed at that epoch's threshold.
        best = history[history["epoch"] == last.get("best_epoch")]
        threshold = (best.iloc[-1] if len(best) else history.iloc[-1]).get("threshold")
        row.update({
            "epochs_run": int(last["epoch"]),
            "best_epoch": last.get("best_epoch"),
            "best_val_loss": last.get("best_val_loss"),
            **{f"best_val_{m}": last.get(f"best_val_{m}") for m in METRIC_NAMES},
            **{f"test_{m}": last.get(f"test_{m}") for m in METRIC_NAMES},
            **{f"final_test_{m}": last.get(f"final_test_{m}") for m in METRIC_NAMES},
            **{f"test_clean_{m}": last.get(f"test_clean_{m}") for m in CLEAN_METRICS},
            "n_test_clean": last.get("n_test_clean"),
            "threshold": threshold,
            "train_seconds": last.get("train_seconds"),
            "compile_seconds": last.get("compile_seconds", 0.0 if not hp["compile"] else None),
            "wall_seconds": last.get("wall_seconds"),
            "images_per_second": float(history["images_per_second"].median()),
            **{k: last.get(k) for k in ("num_params", "n_train", "n_val", "n_test", "node",
                                        "device")},
            "restarts": int(last.get("restarts", 0) or 0),
            **{c: last.get(c) for c in extra},
        })
        reason = last.get("stop_reason") or ("budget" if reached else "")
    else:
        row["epochs_run"] = 0
        reason = ""
    if error and not reached:
        row["status"], row["stop_reason"] = "ERROR", "error"
        row["error"] = error
    else:
        # Cut short by an interrupted study: INTERRUPTED once it had trained, else PENDING.
        row["status"] = ("TERMINATED" if finished or reached else
                         "INTERRUPTED" if len(epochs) else "PENDING")
        # Neither its budget nor patience ended it, so the scheduler did.
        row["stop_reason"] = reason or ("asha" if finished else "interrupted")
    return {k: _clean(v) for k, v in row.items()}, epochs


def frames(rows: list[tuple[dict[str, Any], list[dict[str, Any]]]]
           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    trial_rows_ = [r for r, _ in rows]
    epoch_rows = [e for _, es in rows for e in es]
    trials = pd.DataFrame(trial_rows_, columns=_columns("trials", TRIALS, trial_rows_))
    epochs = pd.DataFrame(epoch_rows, columns=_columns("epochs", EPOCHS, epoch_rows))
    return trials.sort_values("trial_id", ignore_index=True), epochs.sort_values(
        ["trial_id", "epoch"], ignore_index=True)


def _columns(name: str, schema: pa.Schema, rows: list[dict[str, Any]]) -> list[str]:
    """The declared columns, then the evaluation-set columns any row has, in first-seen order."""
    seen = list(dict.fromkeys(k for r in rows for k in r))
    return [*schema.names, *extra_columns(name, seen)]


@dataclass
class TrialOutcome:
    """What a study knows of one trial (a run, for folded budgets) when it ends: the input of
    every table. ``study.outcomes`` builds it from a Tune result."""

    trial_id: str
    config: dict[str, Any]
    history: pd.DataFrame | None  # one row per reported epoch, with the epochs table's columns
    error: str | None
    checkpoint_dir: str | None  # the trial's last checkpoint folder (model, best test scores)
    checkpoint_fs: pafs.FileSystem | None = None  # where checkpoint_dir lives; None = local/URI
    finished: bool = True  # False: the study was interrupted while this trial ran
    unreadable: str | None = None  # set by read_checkpoint: the checkpoint file it could not read

    def checkpoint_column(self, study_dir: str) -> str | None:
        """The checkpoint folder as the trials table records it: relative to the study
        directory when inside it (so a copied or moved study keeps working), else as given."""
        if not self.checkpoint_dir:
            return None
        return storage.relative_to(self.checkpoint_dir, study_dir) or self.checkpoint_dir

    def read_checkpoint(self) -> dict[str, Any] | None:
        """The trial's last checkpoint state, or None (with a warning) when it cannot be read."""
        if not self.checkpoint_dir:
            return None
        try:
            return read_checkpoint(self.checkpoint_dir, self.checkpoint_fs)
        except Exception as exc:  # any unreadable checkpoint: warn, go on
            path = self.checkpoint_dir.rstrip("/") + "/" + storage.CHECKPOINT_FILE
            self.unreadable = path
            warnings.warn(f"trial {self.trial_id}: cannot read its checkpoint {path} "
                          f"({type(exc).__name__}: {exc}); it gets no predictions rows",
                          stacklevel=2)
            return None


def checkpoint_location(study_dir: str, recorded: str) -> str:
    """The checkpoint folder a trials row records, as a path or URI to read it at."""
    if storage.is_uri(recorded) or os.path.isabs(recorded):
        return recorded
    return storage.join(study_dir, recorded)


def read_checkpoint(checkpoint_dir: str, fs: pafs.FileSystem | None = None) -> dict[str, Any]:
    """The state in ``<checkpoint_dir>/checkpoint.pt`` (local, URI, or a path on ``fs``)."""
    from trainables.train import load_state  # late: it imports torch

    path = checkpoint_dir.rstrip("/") + "/" + storage.CHECKPOINT_FILE
    return load_state(storage.read_bytes(path, fs))


def prediction_frame(study: str, trial_id: str, state: dict[str, Any]) -> pd.DataFrame:
    """The ``predictions`` rows of one trial from its checkpoint state (empty if none)."""
    best = state.get("best") or {}
    scores = best.get("test_scores")
    ids = state.get("test_ids")
    if scores is None or ids is None or len(scores) != len(ids):
        return empty("predictions")
    scores = np.asarray(scores, dtype=np.float32)
    labels = state.get("test_labels")
    threshold = float(best.get("threshold", 0.5))
    return pd.DataFrame({
        "study": study,
        "trial_id": trial_id,
        "image_id": np.asarray(ids).astype(str),
        # Checkpoints written before test_labels existed leave the label unknown (null).
        "label": (np.asarray(labels, dtype=np.int8) if labels is not None
                  else pd.array([pd.NA] * len(scores), dtype="Int8")),
        "score": scores,
        "predicted": (scores >= threshold).astype(np.int8),
    })


def evaluation_frames(study: str, trial_id: str, eval_set: str, model: str | None,
                      weights: str, data: ImageSet, scores: np.ndarray, threshold: float
                      ) -> tuple[dict[str, Any], pd.DataFrame]:
    """(``evaluations`` row, ``eval_predictions`` rows) of one trial's ``scores`` of every
    image of ``data``, at the trial's own ``threshold``: what ``study.evaluate`` and a study's
    evaluation sets both write."""
    from trainables.metrics import classification_metrics

    scores = np.asarray(scores, dtype=np.float32)
    labels = data.labels
    row = {
        "study": study, "trial_id": trial_id, "eval_set": eval_set, "model": model,
        "weights": weights, "data_source": data.source, "data_fingerprint": data.fingerprint,
        "data_layout": data.layout, "image_size": int(data.images.shape[1]),
        "n_images": len(labels), "n_real": int((labels == 0).sum()),
        "n_fake": int((labels == 1).sum()), "threshold": threshold,
        **classification_metrics(labels, scores, threshold),
        "evaluated": dt.datetime.now().replace(microsecond=0),
    }
    manifest = data.manifest
    preds = pd.DataFrame({
        "study": study, "trial_id": trial_id, "eval_set": eval_set,
        "image_id": manifest["path"].astype(str).to_numpy(),
        "generator": manifest["generator"].astype(str).to_numpy(),
        "split": manifest["split"].astype(str).to_numpy(),
        "label": labels.astype(np.int8), "score": scores,
        "predicted": (scores >= threshold).astype(np.int8),
    })
    return row, preds


def eval_set_frames(study: str, trial_id: str, state: dict[str, Any],
                    eval_sets: dict[str, ImageSet]) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """(``evaluations`` rows, ``eval_predictions`` rows) of one trial from its checkpoint's
    scores of the study's evaluation sets (``study.run --eval-data``), best weights."""
    best = state.get("best") or {}
    threshold = float(best.get("threshold", 0.5))
    model = (state.get("config") or {}).get("model")
    rows, preds = [], []
    for name, scores in (best.get("eval_scores") or {}).items():
        data = eval_sets.get(name)
        if data is None or len(scores) != len(data):
            continue  # a set this study no longer names, or another version of it
        row, pred = evaluation_frames(study, trial_id, name, model, "best", data, scores,
                                      threshold)
        rows.append(row)
        preds.append(pred)
    return rows, (pd.concat(preds, ignore_index=True) if preds else empty("eval_predictions"))


def _existing(study_dir: str, name: str) -> pd.DataFrame | None:
    path = storage.join(study_dir, f"{name}.parquet")
    if not storage.is_file(path):
        return None
    try:
        return read_table(path, name)
    except SchemaError as exc:
        warnings.warn(f"replacing {path}: {exc}", stacklevel=3)
        return None


def write_study_tables(
    study_dir: str, study: str, outcomes: list[TrialOutcome], *,
    info: dict[str, Any] | None = None, ended: dt.datetime | None = None,
    hardware_info: dict[str, Any] | None = None, revision: str | None = None,
    merge_existing: bool = True, eval_sets: dict[str, ImageSet] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Build and atomically write every table of a study; returns (trials, written paths).

    ``info`` defaults to the directory's ``study.json``; ``hardware_info`` and ``revision``
    override what is detected (see ``results.provenance``). With ``merge_existing`` the rows of
    tables already in ``study_dir`` are kept unless ``outcomes`` replace them (same key), so a
    resumed study that reports only some trials loses none. ``eval_sets`` are the study's
    evaluation sets: their scores in each checkpoint become ``evaluations`` and
    ``eval_predictions`` rows (a trial's rows replace its earlier ones).
    """
    study_dir = str(study_dir)
    rows, predictions = [], []
    evaluations: list[dict[str, Any]] = []
    eval_predictions: list[pd.DataFrame] = []
    for o in outcomes:
        # A folded run is one trial per budget it served (trainables.folding).
        served = served_trials(o.trial_id, o.config)
        checkpoint = o.checkpoint_column(study_dir)
        for budget, tid in served.items():
            row, epochs = trial_rows(study, tid, o.config, o.history, o.error, o.finished,
                                     budget=budget)
            rows.append(({**row, "checkpoint": checkpoint}, epochs))
        state = o.read_checkpoint()
        if state is not None:
            for tid in served.values():
                view = state_of_trial(state, tid)
                predictions.append(prediction_frame(study, tid, view))
                if eval_sets:
                    found, preds = eval_set_frames(study, tid, view, eval_sets)
                    evaluations += found
                    eval_predictions.append(preds)
    trials, epochs = frames(rows)
    new = {"trials": trials, "epochs": epochs, "predictions": merge("predictions", predictions)}
    if merge_existing:
        new = {name: merge(name, [_existing(study_dir, name), df]) for name, df in new.items()}
    row = study_row(study_dir, study, new["trials"][new["trials"]["study"] == study], info=info,
                    ended=ended, hardware_info=hardware_info, revision=revision)
    studies = pd.DataFrame([row], columns=[f.name for f in TABLES["studies"]])
    if merge_existing:
        studies = merge("studies", [_existing(study_dir, "studies"), studies])
    new["studies"] = studies
    # Only the tables a run owns: evaluations and robustness rows survive a resume untouched.
    paths = [write_table(new[name], name, study_dir) for name in RUN_TABLES]
    if evaluations:
        by = ("study", "trial_id", "eval_set")
        paths.append(replace_rows(study_dir, "eval_predictions",
                                  merge("eval_predictions", eval_predictions), by))
        paths.append(replace_rows(study_dir, "evaluations", pd.DataFrame(evaluations), by))
    return new["trials"], paths


def replace_rows(study_dir: str, name: str, df: pd.DataFrame, by: Sequence[str]) -> str:
    """Write table ``name`` of a study with ``df`` replacing every row that shares its ``by``.

    E.g. ``by=("study", "trial_id", "eval_set")`` makes evaluating a trial on a set again replace
    that evaluation's rows instead of adding to them. Returns the table's path.
    """
    study_dir = str(study_dir)
    old = _existing(study_dir, name)
    if old is not None and len(old) and len(df):
        keys = df[list(by)].drop_duplicates().assign(_replaced=True)
        hit = old[list(by)].merge(keys, on=list(by), how="left")["_replaced"].notna()
        old = old[~hit.to_numpy()]
    return write_table(merge(name, [old, df]), name, study_dir)
