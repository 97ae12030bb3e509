"""Data sets described by a manifest: any collection studied without moving a file.

Usage: ``python -m study.run --space cifake_grid --data my_images.csv`` (or ``.parquet``), with

    path,label,split,generator,group
    photos/a.jpg,real,train,,scene-1
    gen/b.png,fake,test,sdxl,scene-1

``path`` (relative to the manifest's folder) and ``label`` (``real``/``fake``, ``REAL``/``FAKE``,
``nature``/``ai``, or 0/1) are required. ``split`` (``train`` or ``test``; without it a
stratified hold-out is carved), ``generator`` and ``group`` are optional: images of one group
(several crops of one photograph, say) always stay on one side of every split, as byte-identical
duplicates do. The same checks as for folders apply: missing files are named, bad images are
named or skipped with ``--skip-bad``, duplicates are reported.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from trainables.dataset import DataError
from trainables.layouts import FAKE_NAMES, REAL_NAMES, Entry

SUFFIXES = (".csv", ".parquet")
REQUIRED = ("path", "label")
OPTIONAL = ("split", "generator", "group")


def is_manifest(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in SUFFIXES


def read_manifest(path: Path) -> tuple[list[Entry], dict[str, str], bytes]:
    """(entries, group of each path, the manifest's bytes); DataError naming rows and fix."""
    raw = path.read_bytes()
    try:
        df = (pd.read_parquet(path) if path.suffix.lower() == ".parquet"
              else pd.read_csv(path, dtype=str, keep_default_na=False))
    except Exception as exc:  # a parser's own error: say which file
        raise DataError(f"manifest {path} cannot be read ({type(exc).__name__}: {exc})"
                        ) from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"manifest {path} lacks the column(s) {missing}; it needs "
                        f"{', '.join(REQUIRED)} and may have {', '.join(OPTIONAL)}")
    extra = sorted(set(df.columns) - set(REQUIRED) - set(OPTIONAL))
    if extra:
        raise DataError(f"manifest {path} has unknown column(s) {extra}; its columns are "
                        f"{', '.join(REQUIRED + OPTIONAL)}")
    df = df.astype(str).fillna("")
    labels = {**dict.fromkeys(REAL_NAMES, 0), **dict.fromkeys(FAKE_NAMES, 1), "0": 0, "1": 1}
    bad_label = df.index[~df["label"].str.lower().isin(labels)]
    if len(bad_label):
        rows = ", ".join(f"row {i + 2}: {df.at[i, 'label']!r}" for i in bad_label[:5])
        raise DataError(f"manifest {path}: labels must be real/fake (or 0/1, nature/ai); "
                        f"{rows}")
    split = df["split"].str.lower() if "split" in df.columns else pd.Series("train",
                                                                           index=df.index)
    split = split.replace({"": "train", "val": "test", "valid": "test"})
    bad_split = df.index[~split.isin(["train", "test"])]
    if len(bad_split):
        rows = ", ".join(f"row {i + 2}: {df.at[i, 'split']!r}" for i in bad_split[:5])
        raise DataError(f"manifest {path}: split must be train or test; {rows}")
    dupes = df["path"][df["path"].duplicated()]
    if len(dupes):
        raise DataError(f"manifest {path} lists {', '.join(dupes[:5])} more than once")
    if (df["path"] == "").any():
        raise DataError(f"manifest {path}: row {int(df.index[df['path'] == ''][0]) + 2} has "
                        "no path")
    generator = df["generator"] if "generator" in df.columns else pd.Series("", index=df.index)
    entries = [Entry(p.replace("\\", "/"), labels[lab.lower()], s, g)
               for p, lab, s, g in zip(df["path"], df["label"], split, generator, strict=True)]
    groups = ({e.path: g for e, g in zip(entries, df["group"], strict=True) if g}
              if "group" in df.columns else {})
    return entries, groups, raw


def manifest_digest(raw: bytes) -> bytes:
    """What of the manifest enters the data's fingerprint: its bytes (labels, splits)."""
    return hashlib.sha256(raw).digest()
