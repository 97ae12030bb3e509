"""A decoded data set and what a trial does with it: splits, subsets, generators, a summary.

Usage: ``splits = make_splits(data, 0.8, seed=0)``; ``small = sample_subset(data, 2000)``

An ``ImageSet`` is made by ``trainables.ingest.load_dataset``; this module is all a trial worker
needs of the data (it never imports the ingest: no decoders, no zip reading, no cache code).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

CLASS_NAMES = ("REAL", "FAKE")  # label 0 = real photograph, label 1 = AI-generated
# Hold-out for the common test set when a source has no test split of its own; fixed so every
# study on the same source scores trials on the same images.
HOLDOUT_FRACTION = 0.1
HOLDOUT_SEED = 20240101


class DataError(ValueError):
    """Input that cannot be used as it is; the message names the files and the fix.

    Defined here, not in the ingest, because splits and subsets raise it too.
    """


@dataclass
class ImageSet:
    """Decoded images with one manifest row each; label 0 = REAL, 1 = FAKE."""

    images: np.ndarray  # (N, H, W, 3) uint8
    # path, label, split ("train" | "test"), generator, content_hash, group ("" = none)
    manifest: pd.DataFrame
    fingerprint: str
    source: str
    layout: str
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        return self.manifest["label"].to_numpy(dtype=np.int64)

    def __len__(self) -> int:
        return len(self.manifest)


@dataclass(frozen=True)
class Splits:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def holdout_split(manifest: pd.DataFrame) -> np.ndarray:
    """The split column ("train" | "test") that carves the fixed common test set.

    Stratified, duplicate-aware and seeded by ``HOLDOUT_SEED``, for sources without a test split.
    """
    idx = np.arange(len(manifest))
    test = _group_split(idx, manifest, 1.0 - HOLDOUT_FRACTION, HOLDOUT_SEED)[1]
    split = np.full(len(manifest), "train", dtype=object)
    split[test] = "test"
    return split


def _group_split(
    idx: np.ndarray, manifest: pd.DataFrame, ratio: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` so that ``ratio`` of each label goes to the first part.

    Byte-identical images (same content hash) form one group and always land on the same side,
    so a duplicate can never be in both train and validation.
    """
    rng = np.random.default_rng(seed)
    labels = manifest["label"].to_numpy()[idx]
    # A manifest's group keeps its images together; otherwise identical bytes do.
    keys = manifest["content_hash"].astype(str)
    if "group" in manifest.columns:
        named = manifest["group"].fillna("").astype(str)
        keys = keys.where(named == "", "group:" + named)
    hashes = keys.to_numpy()[idx]
    decided: dict[str, bool] = {}  # a group spanning both labels goes where it went first
    first, second = [], []
    for label in np.unique(labels):
        mine = idx[labels == label]
        names, group, counts = np.unique(
            hashes[labels == label], return_inverse=True, return_counts=True)
        chosen = np.zeros(len(counts), dtype=bool)
        known = np.array([n in decided for n in names], dtype=bool)
        chosen[known] = [decided[n] for n in names[known]]
        room = round(ratio * len(mine)) - int(counts[chosen].sum())
        order = rng.permutation(np.flatnonzero(~known))
        take = np.cumsum(counts[order]) <= room
        chosen[order[take]] = True
        decided.update(zip(names.tolist(), chosen.tolist(), strict=True))
        first.append(mine[chosen[group]])
        second.append(mine[~chosen[group]])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def make_splits(data: ImageSet, split_ratio: float, seed: int) -> Splits:
    """Train/validation from the training pool (stratified, seeded); the common test set."""
    split = data.manifest["split"].to_numpy()
    pool = np.flatnonzero(split == "train")
    test = np.flatnonzero(split == "test")
    if split_ratio >= 1.0:  # final retraining: the whole pool trains, nothing validates
        return Splits(pool, pool[:0], test)
    train, val = _group_split(pool, data.manifest, split_ratio, seed)
    if len(train) == 0 or len(val) == 0:
        raise DataError(
            f"split_ratio={split_ratio} leaves {len(train)} training and {len(val)} validation "
            f"images out of a pool of {len(pool)}; use more data or a ratio nearer 0.5"
        )
    return Splits(train, val, test)


def describe(data: ImageSet) -> str:
    r = data.report
    counts = ", ".join(f"{k} {v}" for k, v in sorted(r["counts"].items()))
    size = f"{r['images']} images {r['image_size']}px"
    lines = [f"data: {data.source} ({r['layout']}, {size}: {counts})"]
    if r["duplicate_files"]:
        lines.append(
            f"  {r['duplicate_files']} files in {r['duplicate_groups']} groups are byte-identical "
            f"duplicates ({r['duplicate_groups_across_splits']} groups span train and test); "
            "each group is kept on one side of every train/validation split"
        )
    if r.get("resized_images"):
        sizes = ", ".join(f"{k}: {v}" for k, v in r.get("image_sizes", {}).items())
        lines.append(f"  {r['resized_images']} image(s) of another size were centre-cropped and "
                     f"resized to {r['image_size']}px" + (f" (sizes {sizes})" if sizes else ""))
    if r.get("followed_symlinks"):
        lines.append(f"  followed {len(r['followed_symlinks'])} symbolic link(s)")
    if r["skipped_bad_files"]:
        lines.append(f"  skipped {len(r['skipped_bad_files'])} unreadable file(s) (--skip-bad)")
    if r["ignored_system_files"]:
        lines.append(f"  ignored {len(r['ignored_system_files'])} system file(s) (.DS_Store etc.)")
    return "\n".join(lines)


def subset(data: ImageSet, rows: Iterable[int]) -> ImageSet:
    rows = np.asarray(list(rows))
    return ImageSet(data.images[rows], data.manifest.iloc[rows].reset_index(drop=True),
                    data.fingerprint, data.source, data.layout, data.report)


def origin_of_test_split(data: ImageSet) -> str:
    """"dataset" when the data came with its own test split, "holdout" when one was carved."""
    known = (data.report or {}).get("test_split")
    if known:
        return str(known)
    # Caches written before the report said so: a dataset's own test images live under test/.
    paths = data.manifest.loc[data.manifest["split"] == "test", "path"].astype(str)
    return "dataset" if len(paths) and paths.str.contains(r"(?:^|/)test/").all() else "holdout"


def sample_subset(data: ImageSet, n: int, seed: int = 0) -> ImageSet:
    """A seeded, stratified, duplicate-aware subset of about ``n`` images, for cheap searches.

    Each split (the training pool and the test set) and each label keeps its share, and
    byte-identical images are kept or dropped together. The subset's fingerprint names its size
    and seed, so a study on it is never resumed on the full set or another subset.
    """
    if not 2 <= n < len(data.manifest):
        raise DataError(f"a subset of {n} images is impossible from {len(data.manifest)}; "
                        f"choose between 2 and {len(data.manifest) - 1}")
    ratio = n / len(data.manifest)
    split = data.manifest["split"].to_numpy()
    keep = [_group_split(np.flatnonzero(split == s), data.manifest, ratio, seed)[0]
            for s in ("train", "test") if (split == s).any()]
    rows = np.sort(np.concatenate(keep))
    sub = subset(data, rows)
    counts = sub.manifest.groupby(["split", "label"]).size()
    report = {**data.report, "images": len(rows), "test_split": origin_of_test_split(data),
              "counts": {f"{s}/{CLASS_NAMES[int(lb)]}": int(k) for (s, lb), k in counts.items()}}
    return replace(sub, fingerprint=f"{data.fingerprint}-subset{n}-seed{seed}",
                   source=f"{data.source} (subset of {n}, seed {seed})", report=report)


def select_generators(data: ImageSet, names: Iterable[str]) -> ImageSet:
    """The images of the named generators (tiny-GenImage layout), both splits, in source order.

    An unknown name, or a source without generators, raises ``DataError`` listing the known ones.
    """
    names = list(dict.fromkeys(names))
    known = sorted(g for g in data.manifest["generator"].unique() if g)
    if not known:
        raise DataError(f"{data.source} ({data.layout} layout) names no generators; "
                        "only the tiny-GenImage layout <generator>/{train,val}/{ai,nature}/ does")
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise DataError(f"unknown generator(s) {unknown or names}; {data.source} holds "
                        f"{', '.join(known)}")
    return subset(data, np.flatnonzero(data.manifest["generator"].isin(names).to_numpy()))
