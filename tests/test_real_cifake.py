"""Real CIFAKE: ingest a few thousand images of the official training split and learn from them."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from helpers import CIFAKE_ZIP

from trainables.config import TrainConfig
from trainables.ingest import load_dataset
from trainables.train import train

pytestmark = pytest.mark.skipif(
    not CIFAKE_ZIP.exists(),
    reason=f"the CIFAKE training split is not at {CIFAKE_ZIP} (the project does not ship it)",
)
PER_CLASS = 1500


@pytest.fixture(scope="module")
def cifake_subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A zip of the first 1,500 REAL and 1,500 FAKE files, in the Kaggle layout."""
    target = tmp_path_factory.mktemp("cifake") / "subset.zip"
    taken = {"REAL": 0, "FAKE": 0}
    with zipfile.ZipFile(CIFAKE_ZIP) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            parts = info.filename.split("/")
            if info.is_dir() or len(parts) != 3 or parts[1] not in taken:
                continue
            if taken[parts[1]] < PER_CLASS:
                dst.writestr(info, src.read(info))
                taken[parts[1]] += 1
    return target


def test_real_cifake_images_are_ingested_as_32px_with_duplicates_reported(
    cifake_subset: Path,
) -> None:
    data = load_dataset(cifake_subset, progress=False)
    assert data.layout == "cifake" and data.images.shape == (3000, 32, 32, 3)
    assert set(data.manifest["label"]) == {0, 1}
    # No test/ folder in this split: a fixed, stratified 10 % hold-out is the common test set.
    assert (data.manifest["split"] == "test").sum() == 300
    # CIFAKE's known defect: byte-identical pairs exist only inside FAKE, never across labels.
    assert data.report["duplicate_groups_across_labels"] == 0
    dups = data.manifest[data.manifest["content_hash"].duplicated(keep=False)]
    assert set(dups["label"]) <= {1}


@pytest.mark.slow  # trains on real CIFAKE: ~15 s
def test_small_cnn_learns_real_cifake_clearly_better_than_chance(cifake_subset: Path) -> None:
    data = load_dataset(cifake_subset, progress=False)
    metrics = train(TrainConfig(model="small_cnn", epochs=4, batch_size=32, split_ratio=0.8), data)
    assert metrics["n_test"] == 300
    assert metrics["test_accuracy"] > 0.75, metrics["test_accuracy"]
    assert metrics["test_auc"] > 0.8
