"""Resolve ``--trial <id|best>`` in a study directory to its checkpoint, and reload its data.

Usage (by the analysis commands study.evaluate, study.robustness, study.explain, study.predict):
    ref = resolve_trials("studies/grid1", ["best"])[0]   # TrialRef: study, trial_id, trials row
    state = load_trial_state(ref)                        # the checkpoint (best weights, threshold)
    images, labels, ids = study_test_set(ref.study_dir, state)   # the common test set

'best' is the TERMINATED trial with the highest best_val_accuracy (ties: lower best_val_loss,
then trial id): chosen on validation, never on the test set it is then scored on.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from results.provenance import read_study_file
from results.tables import (
    SchemaError,
    _is_file,
    _join,
    read_checkpoint_file,
    read_table,
    split_trial_id,
    trial_checkpoint,
)
from trainables.config import ConfigError
from trainables.data import DataError, ImageSet, fingerprint_of, load_dataset
from trainables.registry import UnknownNameError


class TrialError(RuntimeError):
    """A trial that cannot be used as asked; the message says why and what to do."""


@dataclass(frozen=True)
class TrialRef:
    study_dir: str
    study: str
    trial_id: str
    row: pd.Series  # the trial's row of trials.parquet


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu",
                   help="cpu (default), cuda or mps; cuda falls back to the CPU without a GPU")


def trials_table(study_dir: str) -> pd.DataFrame:
    path = _join(str(study_dir), "trials.parquet")
    if not _is_file(path):
        raise TrialError(f"{study_dir} holds no trials.parquet: is it a study directory "
                         "(<storage>/<name>)? Its tables are written when `python -m study.run` "
                         "ends; resume an interrupted study with --resume to write them")
    return read_table(path, "trials")


def best_trial(trials: pd.DataFrame) -> pd.Series:
    done = trials[(trials["status"] == "TERMINATED") & trials["best_val_accuracy"].notna()]
    if not len(done):
        raise TrialError("the study has no TERMINATED trial with a validation accuracy, so "
                         "there is no 'best'; name a trial with --trial <id>")
    ranked = done.sort_values(["best_val_accuracy", "best_val_loss", "trial_id"],
                              ascending=[False, True, True], kind="stable")
    return ranked.iloc[0]


def resolve_trials(study_dir: str, refs: Sequence[str]) -> list[TrialRef]:
    """``refs`` are trial ids, 'best' or 'all' (every TERMINATED trial); duplicates collapse."""
    study_dir = str(study_dir)
    trials = trials_table(study_dir)
    rows: list[pd.Series] = []
    for ref in refs:
        if ref == "best":
            rows.append(best_trial(trials))
        elif ref == "all":
            rows.extend(r for _, r in trials[trials["status"] == "TERMINATED"].iterrows())
        else:
            hit = trials[trials["trial_id"] == ref]
            if not len(hit):
                known = ", ".join(trials["trial_id"].head(30))
                raise TrialError(f"no trial {ref!r} in {study_dir}; its trials: {known}"
                                 f"{' ...' if len(trials) > 30 else ''} (or 'best', 'all')")
            rows.append(hit.iloc[0])
    out: dict[str, TrialRef] = {}
    for row in rows:
        out.setdefault(row["trial_id"], TrialRef(study_dir, str(row["study"]),
                                                 str(row["trial_id"]), row))
    return list(out.values())


def load_trial_state(ref: TrialRef) -> dict[str, Any]:
    """The trial's newest checkpoint state; TrialError saying how to get one if there is none."""
    # A trial that a folded run served (<run>-e<budget>) lives in that run's checkpoint.
    run_id, budget = split_trial_id(ref.trial_id)
    found = trial_checkpoint(ref.study_dir, run_id)
    if found is None:
        status = ref.row.get("status")
        why = (f"it ended with an error ({str(ref.row.get('error') or '').splitlines()[0]})"
               if status == "ERROR" else f"its status is {status}")
        raise TrialError(
            f"trial {ref.trial_id} has no checkpoint in {ref.study_dir} (looked for "
            f"<trial folder>/checkpoint_<n>/checkpoint.pt; {why}). A trial saves one at the end "
            "of every epoch, so it failed before its first epoch ended, or its folders were "
            "deleted or not copied from the cluster's storage. Copy the trial folder back, "
            "resume an unfinished study (`python -m study.run --space <space> --name <name> "
            "--resume`), or use another trial (--trial best)")
    folder, fs = found
    try:
        state = read_checkpoint_file(folder, fs)
    except Exception as exc:  # a truncated or foreign file: say which one
        raise TrialError(f"cannot read the checkpoint of trial {ref.trial_id} at {folder}/"
                         f"checkpoint.pt ({type(exc).__name__}: {exc})") from None
    if budget is None:
        return state
    from trainables.train import state_at_budget

    return state_at_budget(state, budget)


def study_info(study_dir: str) -> dict[str, Any]:
    return read_study_file(str(study_dir))


def ingest_size(info: dict[str, Any]) -> int | None:
    """The pixel size the study's images had after ingest (centre crop and resize)."""
    size = (info.get("data_report") or {}).get("image_size")
    return int(size) if size else None


def resolve_source(arg: str) -> str:
    """A data argument: a path, or 'sample' for the embedded sample data."""
    if arg == "sample":
        from trainables.sample import build_sample

        return str(build_sample())
    return arg


def load_study_data(study_dir: str, data: str | None = None, progress: bool = True
                    ) -> ImageSet:
    """The study's data set, from study.json's data_source (or ``data``), as it was ingested.

    The ingest options (image size, --skip-bad) are not in study.json, so the candidates are
    matched against the study's data fingerprint without decoding; a source that has changed
    since is read anyway, with a warning (its images are then matched to the checkpoint by path).
    """
    info = study_info(study_dir)
    source = resolve_source(data) if data else info.get("data_source")
    if not source:
        raise TrialError(f"{study_dir} has no study.json naming its data; pass --data PATH")
    if not Path(source).expanduser().exists():
        raise TrialError(f"the study's data {source} is not there (moved, or the study ran on "
                         "another machine); pass --data PATH with the same images")
    report = info.get("data_report") or {}
    skip = bool(report.get("skipped_bad_files"))
    size = ingest_size(info)
    candidates = [(None, skip), (size, skip)]
    wanted = info.get("data_fingerprint")
    for image_size, skip_bad in candidates:
        if fingerprint_of(source, image_size, skip_bad) == wanted:
            return load_dataset(source, image_size=image_size, skip_bad=skip_bad,
                                progress=progress)
    warnings.warn(f"{source} differs from the data the study trained on (fingerprint "
                  f"{wanted}); its test images are matched to the checkpoint by path",
                  stacklevel=2)
    return load_dataset(source, image_size=size, skip_bad=skip, progress=progress)


def study_test_set(study_dir: str, state: dict[str, Any], data: str | None = None,
                   progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, labels, ids) of the trial's common test set, in the checkpoint's order."""
    return test_set_of(load_study_data(study_dir, data, progress), state)


def test_set_of(dataset: ImageSet, state: dict[str, Any]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, labels, ids) of a checkpoint's test images in ``dataset``, in its order."""
    ids = state.get("test_ids")
    if ids is None:
        raise TrialError("the checkpoint records no test image ids (written by an older "
                         "version); rerun the trial to get one that does")
    index = {p: i for i, p in enumerate(dataset.manifest["path"])}
    missing = [p for p in ids if p not in index]
    if missing:
        raise TrialError(f"{len(missing)} of the study's {len(ids)} test images are not in "
                         f"{dataset.source}, e.g. {missing[:3]}; pass --data with the study's "
                         "data")
    rows = np.array([index[p] for p in ids], dtype=np.int64)
    labels = dataset.labels[rows]
    stored = state.get("test_labels")
    if stored is not None and not np.array_equal(np.asarray(stored, dtype=np.int64), labels):
        raise TrialError(f"the labels of {dataset.source} disagree with the study's for the "
                         "same test images; pass --data with the study's data")
    return dataset.images[rows], labels, np.asarray(ids).astype(str)


def stratified_limit(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Row positions of at most ``limit`` images, in proportion per class (seeded), sorted."""
    n = len(labels)
    if not limit or limit >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    out = []
    for label in np.unique(labels):
        mine = np.flatnonzero(labels == label)
        take = max(1, round(limit * len(mine) / n))
        out.append(rng.choice(mine, size=min(take, len(mine)), replace=False))
    return np.sort(np.concatenate(out))


def figure_dir(study_dir: str, out: str | None) -> Path:
    """Where figures go: --out, else <study_dir>/figures (./figures for a remote study)."""
    if out:
        return Path(out)
    return Path("figures") if "://" in str(study_dir) else Path(study_dir) / "figures"


# Errors a command reports as "error: ..." with exit status 2 (bad input, not a bug).
USER_ERRORS = (TrialError, DataError, SchemaError, FileNotFoundError, ConfigError,
               UnknownNameError)


def run_command(parse_args: Callable[[list[str] | None], argparse.Namespace],
                run: Callable[[argparse.Namespace], int], argv: list[str] | None) -> int:
    """The shared ``main`` of the trial commands: a user error is one line and exit code 2."""
    args = parse_args(argv)
    try:
        return run(args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
