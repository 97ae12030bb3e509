"""Data sets described by a manifest (CSV or Parquet): any layout, no files moved.

Usage: ``python -m pytest tests/test_manifest.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import generated_image, smooth_image
from PIL import Image

from trainables.dataset import DataError, make_splits
from trainables.ingest import fingerprint_of, load_dataset


def collection(root: Path, n: int = 24) -> pd.DataFrame:
    """Images scattered over folders that follow no layout, and the manifest that names them."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        fake = i % 2 == 1
        folder = root / ("gen" if fake else "photos") / f"batch{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img{i}.png"
        Image.fromarray((generated_image if fake else smooth_image)(rng, 16)).save(path)
        rows.append({"path": str(path.relative_to(root)), "label": "fake" if fake else "real",
                     "split": "test" if i >= n - 6 else "train",
                     "generator": "sdxl" if fake else "", "group": f"scene{i // 4}"})
    return pd.DataFrame(rows)


def test_a_csv_manifest_is_a_data_set_with_its_splits_generators_and_groups(tmp_path: Path
                                                                          ) -> None:
    df = collection(tmp_path)
    df.to_csv(tmp_path / "images.csv", index=False)
    data = load_dataset(tmp_path / "images.csv", progress=False)
    assert data.layout == "manifest" and data.images.shape == (24, 16, 16, 3)
    m = data.manifest.set_index("path")
    assert (m.loc[df["path"], "label"].to_numpy() == (df["label"] == "fake").to_numpy()).all()
    assert (m["split"] == "test").sum() == 6 and set(m["generator"]) == {"", "sdxl"}
    for seed in range(10):  # a group never straddles train and validation
        splits = make_splits(data, 0.5, seed)
        train = set(data.manifest["group"].to_numpy()[splits.train])
        val = set(data.manifest["group"].to_numpy()[splits.val])
        assert not train & val


def test_a_parquet_manifest_reads_the_same_images(tmp_path: Path) -> None:
    df = collection(tmp_path)
    df.to_csv(tmp_path / "images.csv", index=False)
    df.to_parquet(tmp_path / "images.parquet", index=False)
    a = load_dataset(tmp_path / "images.csv", progress=False)
    b = load_dataset(tmp_path / "images.parquet", progress=False)
    np.testing.assert_array_equal(a.images, b.images)


def test_missing_files_are_named_and_skippable(tmp_path: Path) -> None:
    df = collection(tmp_path)
    (tmp_path / df.loc[3, "path"]).unlink()
    df.to_csv(tmp_path / "images.csv", index=False)
    with pytest.raises(DataError, match=r"img3\.png.*listed in the manifest but missing"):
        load_dataset(tmp_path / "images.csv", progress=False)
    data = load_dataset(tmp_path / "images.csv", skip_bad=True, progress=False)
    assert len(data.labels) == 23 and df.loc[3, "path"] not in set(data.manifest["path"])


@pytest.mark.parametrize(("edit", "match"), [
    (lambda df: df.assign(label=df["label"].where(df.index != 4, "maybe")),
     r"row 6: 'maybe'"),
    (lambda df: df.drop(columns="label"), r"lacks the column\(s\) \['label'\]"),
    (lambda df: df.assign(colour="red"), r"unknown column\(s\) \['colour'\]"),
    (lambda df: df.assign(split=df["split"].where(df.index != 0, "dev")), r"row 2: 'dev'"),
    (lambda df: pd.concat([df, df.head(1)]), r"more than once"),
])
def test_a_bad_manifest_names_the_row_or_column_and_the_fix(tmp_path: Path, edit, match: str
                                                            ) -> None:
    edit(collection(tmp_path)).to_csv(tmp_path / "images.csv", index=False)
    with pytest.raises(DataError, match=match):
        load_dataset(tmp_path / "images.csv", progress=False)


def test_the_manifest_is_part_of_the_fingerprint(tmp_path: Path) -> None:
    df = collection(tmp_path)
    df.to_csv(tmp_path / "images.csv", index=False)
    before = fingerprint_of(tmp_path / "images.csv")
    assert load_dataset(tmp_path / "images.csv", progress=False).fingerprint == before
    df.loc[0, "label"] = "fake"  # a relabelled image is other data
    df.to_csv(tmp_path / "images.csv", index=False)
    assert fingerprint_of(tmp_path / "images.csv") != before
