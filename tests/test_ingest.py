"""Ingest: the data is what it claims to be (sizes, zip integrity, links, the cache key, pixels).

Usage: ``python -m pytest tests/test_ingest.py`` (real files on disk, CPU only, seconds).
"""

from __future__ import annotations

import os
import shutil
import struct
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import generated_image, smooth_image, write_cifake_folder
from PIL import Image, ImageOps

from trainables.dataset import DataError, describe
from trainables.images import fit_square
from trainables.inference import read_images
from trainables.ingest import available_memory, load_dataset


def zip_folder(folder: Path, target: Path, method: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(target, "w", method) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder).as_posix())
    return target


def member_data_offset(archive: Path, name: str) -> tuple[int, int]:
    """(offset, length) of a member's stored or compressed bytes inside the archive file."""
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(name)
    with open(archive, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
    return info.header_offset + 30 + name_len + extra_len, info.compress_size


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x55
    path.write_bytes(bytes(data))


def generic_folder(root: Path, n: int = 10, size: int = 16) -> Path:
    rng = np.random.default_rng(3)
    for cls, make in (("real", smooth_image), ("fake", generated_image)):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(make(rng, size)).save(root / cls / f"{i:03d}.png")
    return root


def cache_entries(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir()) if root.exists() else []


# -- 4. the ingest resolution ----------------------------------------------------------------


def test_most_common_size_wins_over_a_large_image_first_in_sort_order(tmp_path: Path) -> None:
    root = generic_folder(tmp_path / "g", n=10, size=16)
    big = Image.fromarray(smooth_image(np.random.default_rng(0), 16)).resize((200, 120))
    big.save(root / "real" / "000 big.png")  # first file of the source
    data = load_dataset(root, progress=False)
    assert data.images.shape == (21, 16, 16, 3)
    assert data.report["image_size"] == 16 and data.report["resized_images"] == 1
    assert data.report["image_sizes"] == {"16x16": 20, "200x120": 1}
    assert "1 image(s) of another size were centre-cropped and resized to 16px" in describe(data)


def png_header(width: int, height: int) -> bytes:
    """A real PNG's first chunk (IHDR, 8-bit RGB) and no pixel data: a header to size it by."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def test_sizes_whose_decoded_array_exceeds_memory_are_refused_with_the_figure_and_the_fix(
    tmp_path: Path,
) -> None:
    free = available_memory()
    assert free is not None
    side = 8000  # 192 MB per decoded image, under PIL's decompression-bomb limit
    per_class = free // (side * side * 3) // 2 + 2
    root = tmp_path / "big"
    for cls in ("real", "fake"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            (root / cls / f"{i}.png").write_bytes(png_header(side, side))
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        load_dataset(root, progress=False, cache_dir=cache)
    message = str(err.value)
    assert f"{2 * per_class:,} images at {side}x{side} px (the most common image size)" in message
    assert "GiB" in message and "--image-size N" in message
    assert cache_entries(cache) == []  # refused before any decoding or caching
    with pytest.raises(DataError, match=r"100000x100000 px \(the --image-size asked for\)"):
        load_dataset(generic_folder(tmp_path / "g"), image_size=100_000, progress=False)


# -- 5. zip integrity -------------------------------------------------------------------------


def test_bit_flip_in_a_stored_zip_member_fails_its_crc_and_is_named(tmp_path: Path) -> None:
    root = write_cifake_folder(tmp_path / "d", n_train=6, n_test=2)
    archive = zip_folder(root, tmp_path / "stored.zip")
    offset, length = member_data_offset(archive, "train/REAL/3.jpg")
    flip_byte(archive, offset + length // 2)
    with pytest.raises(DataError) as err:
        load_dataset(archive, progress=False)
    message = str(err.value)
    assert "1 file(s)" in message and "train/REAL/3.jpg" in message and "CRC-32" in message
    data = load_dataset(archive, skip_bad=True, progress=False)
    assert len(data) == 15 and "train/REAL/3.jpg" not in set(data.manifest["path"])
    assert [s["path"] for s in data.report["skipped_bad_files"]] == ["train/REAL/3.jpg"]


def test_corrupt_compressed_zip_member_is_named_and_skippable(tmp_path: Path) -> None:
    root = write_cifake_folder(tmp_path / "d", n_train=6, n_test=2, size=32)
    archive = zip_folder(root, tmp_path / "deflated.zip", zipfile.ZIP_DEFLATED)
    offset, length = member_data_offset(archive, "train/FAKE/2.png")
    for k in range(4, length - 4, 7):
        flip_byte(archive, offset + k)
    with pytest.raises(DataError, match=r"train/FAKE/2\.png: corrupt archive member"):
        load_dataset(archive, progress=False)
    data = load_dataset(archive, skip_bad=True, progress=False)
    assert len(data) == 15
    assert data.report["skipped_bad_files"][0]["path"] == "train/FAKE/2.png"


def test_truncated_zip_is_reported_as_truncated_with_the_fix(tmp_path: Path) -> None:
    root = write_cifake_folder(tmp_path / "d", n_train=6, n_test=2)
    archive = zip_folder(root, tmp_path / "cut.zip")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"truncated or corrupt.*central directory.*again"):
        load_dataset(archive, progress=False)
    (tmp_path / "empty.zip").write_bytes(b"")
    with pytest.raises(DataError, match="is an empty file"):
        load_dataset(tmp_path / "empty.zip", progress=False)


# -- 6. symbolic links ------------------------------------------------------------------------


def test_symlinked_class_folders_and_files_are_followed_and_reported(tmp_path: Path) -> None:
    real = write_cifake_folder(tmp_path / "d", n_train=6, n_test=2)
    linked = tmp_path / "linked"
    for split in ("train", "test"):
        (linked / split).mkdir(parents=True)
        (linked / split / "REAL").symlink_to(real / split / "REAL", target_is_directory=True)
        (linked / split / "FAKE").mkdir()
        for f in sorted((real / split / "FAKE").iterdir()):
            (linked / split / "FAKE" / f.name).symlink_to(f)
    data = load_dataset(linked, progress=False)
    plain = load_dataset(real, progress=False)
    assert len(data) == len(plain) == 16
    assert np.array_equal(data.images, plain.images)
    followed = data.report["followed_symlinks"]
    assert "train/REAL" in followed and "test/FAKE/0.png" in followed and len(followed) == 10
    assert "followed 10 symbolic link(s)" in describe(data)


def test_dangling_links_and_loops_are_named_bad_files_and_skippable(tmp_path: Path) -> None:
    root = write_cifake_folder(tmp_path / "d", n_train=6, n_test=2)
    (root / "train/REAL/gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (root / "train/FAKE/self.png").symlink_to(root / "train/FAKE/self.png")
    (root / "train/FAKE/up").symlink_to(root / "train", target_is_directory=True)
    with pytest.raises(DataError) as err:
        load_dataset(root, progress=False)
    message = str(err.value)
    assert "3 file(s)" in message and "--skip-bad" in message
    assert "train/REAL/gone.jpg: dangling symbolic link" in message
    assert "train/FAKE/self.png: symbolic link loop" in message
    assert "train/FAKE/up: symbolic link loop" in message
    data = load_dataset(root, skip_bad=True, progress=False)
    assert len(data) == 16
    skipped = {s["path"] for s in data.report["skipped_bad_files"]}
    assert skipped == {"train/REAL/gone.jpg", "train/FAKE/self.png", "train/FAKE/up"}


# -- 7. the cache key -------------------------------------------------------------------------


def test_same_size_edit_with_restored_mtime_is_read_again(tmp_path: Path) -> None:
    root = write_cifake_folder(tmp_path / "d", n_train=6, n_test=2)
    target = root / "train/REAL/edited.bmp"  # BMP: an edit keeps the file's size
    Image.fromarray(np.full((16, 16, 3), 40, np.uint8)).save(target)
    first = load_dataset(root, progress=False)
    st = target.stat()
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
    again = load_dataset(root, progress=False)
    assert again.fingerprint != first.fingerprint
    row = int(np.flatnonzero(again.manifest["path"] == "train/REAL/edited.bmp")[0])
    assert (again.images[row] == 200).all()


def test_moved_or_copied_data_is_recorded_under_the_path_given(tmp_path: Path) -> None:
    root = write_cifake_folder(tmp_path / "d", n_train=6, n_test=2)
    archive = zip_folder(root, tmp_path / "a.zip")
    first = load_dataset(archive, progress=False)
    moved = tmp_path / "elsewhere" / "b.zip"
    moved.parent.mkdir()
    archive.rename(moved)
    start = time.perf_counter()
    again = load_dataset(moved, progress=False)
    assert time.perf_counter() - start < 2.0  # a cache hit: same bytes, same entry
    assert again.fingerprint == first.fingerprint and again.source == str(moved)
    copy = Path(shutil.copytree(root, tmp_path / "copy"))  # new modification times
    assert load_dataset(copy, progress=False).fingerprint == load_dataset(root).fingerprint
    assert load_dataset(copy, progress=False).source == str(copy)


# -- 8. pixels --------------------------------------------------------------------------------


def test_16_bit_png_is_scaled_to_8_bits_not_clipped_to_white(tmp_path: Path) -> None:
    root = generic_folder(tmp_path / "g", n=4, size=16)
    ramp = (np.arange(256, dtype=np.uint32).reshape(16, 16) * 257).astype(np.uint16)
    path = root / "real" / "deep.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as im:
        assert im.mode == "I;16"  # a real 16-bit greyscale PNG
    expected = np.repeat((ramp >> 8).astype(np.uint8)[..., None], 3, axis=2)
    data = load_dataset(root, progress=False)
    row = int(np.flatnonzero(data.manifest["path"] == "real/deep.png")[0])
    assert np.array_equal(data.images[row], expected)
    assert np.array_equal(read_images([path], 16)[0][0], expected)


def test_exif_orientation_is_applied_alike_at_ingest_and_in_prediction(tmp_path: Path) -> None:
    root = generic_folder(tmp_path / "g", n=4, size=16)
    stored = np.zeros((16, 24, 3), np.uint8)  # 24 wide, 16 high, as the sensor wrote it
    stored[:, :12] = (230, 40, 40)
    stored[:, 12:] = (40, 40, 230)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = root / "real" / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=95)
    with Image.open(path) as im:
        assert im.getexif()[0x0112] == 6 and im.size == (24, 16)
        upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert upright.shape == (24, 16, 3)
    expected = fit_square(upright, 16)
    data = load_dataset(root, progress=False)
    row = int(np.flatnonzero(data.manifest["path"] == "real/phone.jpg")[0])
    predicted = read_images([path], 16)[0][0]
    assert np.array_equal(data.images[row], predicted)  # one decoder: training = prediction
    assert np.abs(data.images[row].astype(int) - expected).max() <= 1  # PIL's upright pixels
    sideways = fit_square(np.asarray(Image.open(path).convert("RGB")), 16)
    assert np.abs(data.images[row].astype(int) - sideways).mean() > 40  # not the stored order


# -- 9. what a bad file is --------------------------------------------------------------------


def test_empty_and_non_image_files_say_what_they_are(tmp_path: Path) -> None:
    root = write_cifake_folder(tmp_path / "d", n_train=6, n_test=2)
    (root / "train/REAL/empty.jpg").write_bytes(b"")
    (root / "train/FAKE/page.png").write_bytes(b"<html><body>Not found</body></html>")
    (root / "train/FAKE/cut.png").write_bytes((root / "train/FAKE/0.png").read_bytes()[:60])
    with pytest.raises(DataError) as err:
        load_dataset(root, progress=False)
    message = str(err.value)
    assert "BytesIO" not in message
    assert "train/REAL/empty.jpg: empty file (0 bytes)" in message
    assert "train/FAKE/page.png: not a readable image: not an image, 35 bytes, starting " \
           "3c 68 74 6d 6c 3e 3c 62 ('<html><b')" in message
    assert "train/FAKE/cut.png: " in message and "PNG data, 60 bytes" in message
    prediction = read_images([root / "train/REAL/empty.jpg"], 16, skip_bad=True)[2]
    assert prediction[0][1] == "empty file (0 bytes)"


def test_a_broken_jpeg_in_the_batch_does_not_hide_the_good_ones(tmp_path: Path) -> None:
    root = write_cifake_folder(tmp_path / "d", n_train=6, n_test=2)
    good = (root / "train/REAL/0.jpg").read_bytes()
    (root / "train/REAL/cut.jpg").write_bytes(good[: len(good) // 3])
    data = load_dataset(root, skip_bad=True, progress=False)
    assert len(data) == 16
    reason = data.report["skipped_bad_files"][0]["error"]
    assert "JPEG data" in reason and "BytesIO" not in reason
