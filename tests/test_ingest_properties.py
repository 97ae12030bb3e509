"""Property: whatever bytes a source holds, the ingest gives a clean data set or a named error.

Usage: ``python -m pytest tests/test_ingest_properties.py`` (Hypothesis, about ten seconds).

Sources are built from real image files, their truncations, random bytes and empty files, in
folders and in zips (stored, deflated, then truncated or bit-flipped). Every outcome must be an
``ImageSet`` that matches its manifest, or a ``DataError`` that names the source or its files;
never another exception, and never a partial entry left in the cache.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import generated_image, smooth_image
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from trainables.dataset import DataError
from trainables.ingest import load_dataset


def _encoded(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


_RNG = np.random.default_rng(0)
REAL_FILES = {
    ".png": _encoded(generated_image(_RNG, 16), "PNG"),
    ".jpg": _encoded(smooth_image(_RNG, 16), "JPEG"),
    ".gif": _encoded(smooth_image(_RNG, 12), "GIF"),
    ".bmp": _encoded(smooth_image(_RNG, 20), "BMP"),
}


@st.composite
def a_file(draw: st.DrawFn) -> tuple[str, bytes]:
    suffix = draw(st.sampled_from([".png", ".jpg", ".gif", ".bmp", ".txt", ""]))
    real = REAL_FILES.get(suffix, REAL_FILES[".png"])
    content = draw(st.one_of(
        st.just(real), st.just(real),  # twice: most files of a source are good
        st.just(REAL_FILES[draw(st.sampled_from(sorted(REAL_FILES)))]),  # another format
        st.integers(0, len(real)).map(lambda n: real[:n]),  # a truncation, possibly empty
        st.binary(max_size=48),
    ))
    return suffix, content


@st.composite
def a_source(draw: st.DrawFn) -> tuple[dict[str, bytes], float]:
    layout = draw(st.sampled_from(["cifake", "generic"]))
    tests = draw(st.sampled_from([[], ["test/REAL", "test/FAKE"]]))
    folders = ["train/REAL", "train/FAKE", *tests] if layout == "cifake" else ["real", "fake"]
    files: dict[str, bytes] = {}
    for folder in folders:
        for i, (suffix, content) in enumerate(draw(st.lists(a_file(), min_size=1, max_size=4))):
            files[f"{folder}/{i}{suffix}"] = content
    return files, draw(st.floats(0.0, 1.0))  # where a zip is cut or a bit flipped


def _write(tmp: Path, container: str, files: dict[str, bytes], where: float) -> Path:
    if container == "folder":
        root = tmp / "src"
        for name, content in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(content)
        return root
    archive = tmp / "src.zip"
    method = zipfile.ZIP_STORED if container == "stored" else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(archive, "w", method) as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    data = bytearray(archive.read_bytes())
    at = min(int(where * len(data)), len(data) - 1)
    if container == "truncated":
        archive.write_bytes(bytes(data[:at]))
    elif container == "flipped":
        data[at] ^= 0x20
        archive.write_bytes(bytes(data))
    return archive


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.iterdir()) if cache.exists() else []


@pytest.mark.parametrize("container", ["folder", "stored", "deflated", "truncated", "flipped"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=a_source(), skip_bad=st.booleans())
def test_any_source_gives_a_clean_data_set_or_a_data_error_naming_files(
    container: str, source: tuple[dict[str, bytes], float], skip_bad: bool
) -> None:
    files, where = source
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), container, files, where)
        cache = Path(tmp) / "cache"
        try:
            data = load_dataset(path, skip_bad=skip_bad, progress=False, cache_dir=cache)
        except DataError as exc:
            message = str(exc)
            event(f"{container}: DataError")
            assert str(path) in message or any(name in message for name in files), message
            assert _entries(cache) == []  # nothing cached, not even a temporary folder
            return
        event(f"{container}: data set" + (" (files skipped)" if data.report["skipped_bad_files"]
                                          else ""))
        assert data.images.dtype == np.uint8 and data.images.ndim == 4
        assert data.images.shape[1:] == (data.report["image_size"],) * 2 + (3,)
        assert len(data.images) == len(data.manifest) == data.report["images"]
        assert set(data.manifest["label"]) == {0, 1}
        assert set(data.manifest["path"]) <= set(files)  # names as the source has them
        skipped = {s["path"] for s in data.report["skipped_bad_files"]}
        assert not skipped & set(data.manifest["path"]) and (skip_bad or not skipped)
        (entry,) = _entries(cache)  # one whole entry
        assert {p.name for p in entry.iterdir()} == {"images.npy", "manifest.parquet",
                                                     "meta.json"}
        again = load_dataset(path, skip_bad=skip_bad, progress=False, cache_dir=cache)
        assert np.array_equal(again.images, data.images)
