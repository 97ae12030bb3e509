"""Cheaper and carved data: seeded, stratified, duplicate-aware subsets (``--subset``), and a
test split carved from the training pool when a data set has none.

Usage: ``python -m pytest tests/test_data_subsets.py`` (no Ray; real image folders).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import write_cifake_folder

from trainables.dataset import origin_of_test_split, sample_subset
from trainables.ingest import load_dataset


def test_subset_is_stratified_duplicate_aware_and_named(tmp_path: Path) -> None:
    root = write_cifake_folder(tmp_path / "d", n_train=40, n_test=10, size=8)
    dup = root / "train" / "FAKE"
    (dup / "copy.png").write_bytes((dup / "0.png").read_bytes())  # a byte-identical pair
    data = load_dataset(root, progress=False)
    sub = sample_subset(data, 50, seed=0)
    full = data.manifest.groupby(["split", "label"]).size()
    counts = sub.manifest.groupby(["split", "label"]).size()
    ratio = 50 / len(data.manifest)
    assert list(counts.index) == list(full.index)  # every split and label keeps a share
    # Within the size of the largest duplicate group (2), which moves as one.
    assert ((counts - full * ratio).abs() <= 2).all(), (counts, full)
    assert abs(len(sub.manifest) - 50) <= 3
    paths = set(sub.manifest["path"])
    assert ("train/FAKE/0.png" in paths) == ("train/FAKE/copy.png" in paths)
    assert sub.fingerprint != data.fingerprint and "subset of 50" in sub.source
    assert sample_subset(data, 50, seed=0).manifest["path"].tolist() == \
        sub.manifest["path"].tolist()
    with pytest.raises(ValueError, match="subset of 1 images is impossible"):
        sample_subset(data, 1)


def test_carved_holdout_is_reported_as_such(tmp_path: Path, tiny_data: Path) -> None:
    only_train = tmp_path / "train_only"
    shutil.copytree(tiny_data / "train", only_train / "train")
    assert origin_of_test_split(load_dataset(only_train, progress=False)) == "holdout"
    assert origin_of_test_split(load_dataset(tiny_data, progress=False)) == "dataset"
