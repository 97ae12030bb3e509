"""Ingest: layouts, the cache, splits, duplicates and every kind of bad input."""

from __future__ import annotations

import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import generated_image, smooth_image, write_cifake_folder
from PIL import Image

from trainables.dataset import DataError, describe, make_splits, select_generators
from trainables.ingest import fingerprint_of, load_dataset


def zip_folder(folder: Path, target: Path, wrap: str = "") -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f"{wrap}{f.relative_to(folder).as_posix()}")
    return target


def test_cifake_folder_is_read_with_labels_and_its_own_test_split(tiny_data: Path) -> None:
    data = load_dataset(tiny_data, progress=False)
    assert data.layout == "cifake"
    assert data.images.shape == (128, 16, 16, 3) and data.images.dtype == np.uint8
    counts = data.manifest.groupby(["split", "label"]).size().to_dict()
    assert counts == {("test", 0): 16, ("test", 1): 16, ("train", 0): 48, ("train", 1): 48}
    row = data.manifest[data.manifest["path"] == "train/FAKE/3.png"].iloc[0]
    assert row["label"] == 1 and row["split"] == "train"
    # Pixels are the file's pixels (PNG is lossless).
    expected = np.asarray(Image.open(tiny_data / "train/FAKE/3.png").convert("RGB"))
    assert np.array_equal(data.images[row.name], expected)


def test_kaggle_archive_zip_with_a_wrapping_folder_reads_like_the_folder(
    tiny_data: Path, tmp_path: Path
) -> None:
    archive = zip_folder(tiny_data, tmp_path / "archive.zip", wrap="archive/")
    from_zip = load_dataset(archive, progress=False)
    from_folder = load_dataset(tiny_data, progress=False)
    assert from_zip.layout == "cifake"
    a = from_zip.manifest.assign(path=from_zip.manifest["path"].str.removeprefix("archive/"))
    order_a = np.argsort(a["path"].to_numpy())
    order_b = np.argsort(from_folder.manifest["path"].to_numpy())
    assert np.array_equal(from_zip.images[order_a], from_folder.images[order_b])


def test_second_load_hits_the_cache_and_a_changed_source_is_reread(tmp_path: Path) -> None:
    root = write_cifake_folder(tmp_path / "d", n_train=8, n_test=4)
    first = load_dataset(root, progress=False)
    start = time.perf_counter()
    again = load_dataset(root, progress=False)
    assert time.perf_counter() - start < 1.0
    assert again.fingerprint == first.fingerprint
    assert np.array_equal(again.images, first.images)
    Image.fromarray(smooth_image(np.random.default_rng(9), 16)).save(root / "train/REAL/new.jpg")
    changed = load_dataset(root, progress=False)
    assert changed.fingerprint != first.fingerprint
    assert len(changed) == len(first) + 1


def test_genimage_layout_keeps_the_generator_and_uses_val_as_test(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for gen in ("midjourney", "vqdm"):
        for split in ("train", "val"):
            for cls, make in (("nature", smooth_image), ("ai", generated_image)):
                folder = tmp_path / "genimage" / gen / split / cls
                folder.mkdir(parents=True)
                for i in range(3):
                    Image.fromarray(make(rng, 24)).save(folder / f"{i}.png")
    data = load_dataset(tmp_path / "genimage", image_size=16, progress=False)
    assert data.layout == "genimage"
    assert set(data.manifest["generator"]) == {"midjourney", "vqdm"}
    assert (data.manifest.query("path.str.contains('/val/')")["split"] == "test").all()
    assert data.images.shape[1:] == (16, 16, 3)  # resized at ingest


def test_generic_class_folders_get_a_fixed_holdout_test_set(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for cls, make in (("real", smooth_image), ("fake", generated_image)):
        (tmp_path / "g" / cls).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(make(rng, 16)).save(tmp_path / "g" / cls / f"{i}.png")
    data = load_dataset(tmp_path / "g", progress=False)
    assert data.layout == "generic"
    test = data.manifest[data.manifest["split"] == "test"]
    assert test["label"].value_counts().to_dict() == {0: 2, 1: 2}  # 10 % of each class


def test_missing_class_folder_is_named_in_the_error(tmp_path: Path) -> None:
    root = write_cifake_folder(tmp_path / "d", n_train=4, n_test=2)
    shutil.rmtree(root / "test" / "FAKE")
    with pytest.raises(DataError, match=r"test/FAKE.*missing"):
        load_dataset(root, progress=False)


def test_empty_class_folder_is_an_error(tmp_path: Path) -> None:
    root = write_cifake_folder(tmp_path / "d", n_train=4, n_test=2)
    for f in (root / "train" / "REAL").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"train/REAL.*missing or empty"):
        load_dataset(root, progress=False)


def test_unreadable_images_are_listed_and_skip_bad_leaves_them_out(tmp_path: Path) -> None:
    root = write_cifake_folder(tmp_path / "d", n_train=6, n_test=2)
    (root / "train/REAL/broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "train/FAKE/notes.txt").write_text("hello")
    with pytest.raises(DataError) as err:
        load_dataset(root, progress=False)
    message = str(err.value)
    assert "2 file(s)" in message and "broken.jpg" in message and "notes.txt" in message
    assert "--skip-bad" in message
    data = load_dataset(root, skip_bad=True, progress=False)
    assert len(data) == 16
    skipped = {s["path"] for s in data.report["skipped_bad_files"]}
    assert skipped == {"train/REAL/broken.jpg", "train/FAKE/notes.txt"}
    assert "skipped 2 unreadable" in describe(data)


def test_zip_without_the_expected_layout_is_explained(tmp_path: Path) -> None:
    archive = tmp_path / "odd.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("images/a/b/c/x.jpg", b"x")
        zf.writestr("other/y.jpg", b"y")
    with pytest.raises(DataError, match="unrecognised layout"):
        load_dataset(archive, progress=False)


def test_missing_path_and_non_zip_file_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nowhere", progress=False)
    (tmp_path / "data.tar").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a zip"):
        load_dataset(tmp_path / "data.tar", progress=False)


def test_unknown_class_names_in_generic_layout_ask_for_a_rename(tmp_path: Path) -> None:
    for cls in ("cats", "dogs"):
        (tmp_path / "g" / cls).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "g" / cls / "0.png")
    with pytest.raises(DataError, match="rename it"):
        load_dataset(tmp_path / "g", progress=False)


def test_duplicates_are_reported_and_never_straddle_train_and_validation(tmp_path: Path) -> None:
    root = write_cifake_folder(tmp_path / "d", n_train=40, n_test=4)
    for i in range(10):  # ten byte-identical pairs inside train/FAKE, as in CIFAKE
        shutil.copy(root / f"train/FAKE/{i}.png", root / f"train/FAKE/{i} (dup).png")
    data = load_dataset(root, progress=False)
    assert data.report["duplicate_groups"] == 10 and data.report["duplicate_files"] == 20
    assert "byte-identical" in describe(data)
    hashes = data.manifest["content_hash"].to_numpy()
    for seed in range(5):
        s = make_splits(data, 0.7, seed)
        assert not set(hashes[s.train]) & set(hashes[s.val])


def test_splits_are_stratified_seeded_and_use_the_common_test_set(tiny_data: Path) -> None:
    data = load_dataset(tiny_data, progress=False)
    a, b = make_splits(data, 0.75, 0), make_splits(data, 0.75, 0)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    assert not np.array_equal(a.train, make_splits(data, 0.75, 1).train)
    labels = data.labels
    assert (labels[a.train] == 0).sum() == (labels[a.train] == 1).sum() == 36
    assert (labels[a.val] == 0).sum() == 12
    # Every ratio and seed is scored on the same test images.
    assert np.array_equal(make_splits(data, 0.8, 3).test, a.test)
    assert set(a.train) | set(a.val) | set(a.test) == set(range(len(data)))


def test_impossible_split_ratio_for_tiny_pool_is_an_error(tmp_path: Path) -> None:
    root = write_cifake_folder(tmp_path / "d", n_train=2, n_test=1)
    data = load_dataset(root, progress=False)
    with pytest.raises(DataError, match="validation"):
        make_splits(data, 0.9, 0)


def _genimage(root: Path, generators: tuple[str, ...] = ("adm", "sdv4", "wukong")) -> Path:
    rng = np.random.default_rng(1)
    for gen in generators:
        for split in ("train", "val"):
            for cls, make in (("nature", smooth_image), ("ai", generated_image)):
                folder = root / gen / split / cls
                folder.mkdir(parents=True)
                for i in range(2):
                    Image.fromarray(make(rng, 16)).save(folder / f"{i}.png")
    return root


def test_select_generators_keeps_both_splits_of_the_named_generators(tmp_path: Path) -> None:
    data = load_dataset(_genimage(tmp_path / "g"), progress=False)
    two = select_generators(data, ["wukong", "adm"])
    assert set(two.manifest["generator"]) == {"adm", "wukong"} and len(two) == 16
    assert set(two.manifest["split"]) == {"train", "test"}
    rows = np.flatnonzero(data.manifest["generator"].isin(["adm", "wukong"]))
    assert np.array_equal(two.images, data.images[rows])  # source order, images aligned
    assert two.manifest["path"].tolist() == data.manifest["path"].iloc[rows].tolist()


def test_select_generators_errors_list_the_known_generators(
    tmp_path: Path, tiny_data: Path
) -> None:
    data = load_dataset(_genimage(tmp_path / "g"), progress=False)
    with pytest.raises(DataError, match=r"unknown generator\(s\) \['midjourney'\].*adm, sdv4"):
        select_generators(data, ["adm", "midjourney"])
    with pytest.raises(DataError, match="names no generators"):
        select_generators(load_dataset(tiny_data, progress=False), ["adm"])


def test_fingerprint_of_equals_the_ingest_fingerprint_without_decoding(tiny_data: Path) -> None:
    for size, skip in ((None, False), (16, False), (None, True)):
        data = load_dataset(tiny_data, image_size=size, skip_bad=skip, progress=False)
        assert fingerprint_of(tiny_data, size, skip) == data.fingerprint
    assert fingerprint_of(tiny_data, 16) != fingerprint_of(tiny_data)
