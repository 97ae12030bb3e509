"""Ingest image folders and archives into a cached uint8 array plus a Parquet manifest.

Usage: ``data = load_dataset("archive.zip")`` (then ``trainables.dataset`` for splits and subsets)

Sources are read from a folder or a zip without unpacking; ``trainables.layouts`` tells which file
is which class and split. Images are decoded once, in parallel, into
``<cache>/ingest/<fingerprint>/``; the fingerprint covers every file's name, size and checksum
(zip) or modification time (folder), so a changed source is read again.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import io
import json
import mmap
import os
import shutil
import struct
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from trainables.dataset import CLASS_NAMES, DataError, ImageSet, holdout_split
from trainables.images import IMAGE_SUFFIXES, decode_image, fit_square
from trainables.layouts import detect_layout

CACHE_FORMAT = 1


def cache_root() -> Path:
    return Path(os.environ.get("CIFAKE_STUDY_CACHE", Path.home() / ".cache" / "cifake-study"))


# ---------------------------------------------------------------------------------------------
# Sources: a folder or a zip, listed and read the same way


class _Source:
    """A folder or a zip, listed and read the same way.

    Members of a zip stored without compression (as the CIFAKE archive is) are sliced straight
    out of a memory map of the file: about 10x cheaper than ``ZipFile.read``, which seeks and
    re-parses the local header under a lock for every member.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.is_zip = path.is_file()
        if self.is_zip and not zipfile.is_zipfile(path):
            raise DataError(f"{path} is a file but not a zip archive; pass a folder or a .zip")
        self._zip: zipfile.ZipFile | None = None
        self._infos: dict[str, zipfile.ZipInfo] = {}
        self._map: mmap.mmap | None = None

    def _open(self) -> zipfile.ZipFile:
        if self._zip is None:
            self._zip = zipfile.ZipFile(self.path)
            self._infos = {i.filename: i for i in self._zip.infolist()}
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._zip

    def central_directory(self) -> bytes | None:
        """The zip's central directory, raw: a cheap, complete identity of the archive.

        Hashing it costs one read of a few MB; parsing it into ZipInfo objects (what a listing
        needs) takes about a second for CIFAKE's 100,000 members, too slow for a cache hit.
        None for folders and for archives whose directory this reader does not locate (zip64).
        """
        if not self.is_zip:
            return None
        with open(self.path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65_557))  # end record: 22 bytes + a comment of up to 64 KiB
            tail = f.read()
            at = tail.rfind(b"PK\x05\x06")
            if at < 0 or len(tail) - at < 22:
                return None
            cd_size, cd_offset = struct.unpack("<II", tail[at + 12 : at + 20])
            if cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
                return None
            f.seek(cd_offset)
            return f.read(cd_size)

    def listing(self) -> list[tuple[str, str]]:
        """(relative posix path, identity) of every file; identity feeds the fingerprint."""
        if self.is_zip:
            self._open()
            return [
                (i.filename, f"{i.file_size}:{i.CRC}")
                for i in self._infos.values()
                if not i.is_dir() and not i.filename.startswith("__MACOSX/")
            ]
        out = []
        for dirpath, _, files in os.walk(self.path):
            for name in files:
                full = os.path.join(dirpath, name)
                st = os.stat(full)
                rel = os.path.relpath(full, self.path).replace(os.sep, "/")
                out.append((rel, f"{st.st_size}:{st.st_mtime_ns}"))
        return out

    def read(self, rel: str) -> bytes:
        if not self.is_zip:
            return (self.path / rel).read_bytes()
        zf = self._open()
        info = self._infos[rel]
        if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
            assert self._map is not None
            h = info.header_offset  # local header: 30 bytes, then name and extra field
            name_len, extra_len = struct.unpack("<HH", self._map[h + 26 : h + 30])
            start = h + 30 + name_len + extra_len
            return self._map[start : start + info.compress_size]
        return zf.read(info)


# ---------------------------------------------------------------------------------------------
# Decoding


def _decode_chunk(
    names: Sequence[str], blobs: Sequence[bytes], size: int
) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    """Decode one chunk; returns (images, content hashes, [(name, error)] for bad files).

    JPEGs (all of CIFAKE) go through torchvision's batched libjpeg-turbo decoder, about 4x
    faster than PIL per image and pixel-identical to it; it runs in C++ without the GIL, so
    chunks decode in parallel threads. Other formats, and any JPEG the batch rejects, go
    through PIL one by one, which also names the bad file.
    """
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    out = np.zeros((len(names), size, size, 3), dtype=np.uint8)
    hashes = [hashlib.blake2b(b, digest_size=16).hexdigest() for b in blobs]
    bad: list[tuple[str, str]] = []
    jpeg = [i for i, (n, b) in enumerate(zip(names, blobs, strict=True))
            if b[:2] == b"\xff\xd8" and PurePosixPath(n).suffix.lower() in IMAGE_SUFFIXES]
    decoded: dict[int, np.ndarray] = {}
    if jpeg:
        try:
            tensors = [torch.frombuffer(bytearray(blobs[i]), dtype=torch.uint8) for i in jpeg]
            for i, t in zip(jpeg, decode_jpeg(tensors, mode=ImageReadMode.RGB), strict=True):
                decoded[i] = t.permute(1, 2, 0).numpy()
        except RuntimeError:
            decoded.clear()  # one bad file fails the batch: decode one by one below
    for i, (name, blob) in enumerate(zip(names, blobs, strict=True)):
        try:
            if i not in decoded:
                if PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES:
                    raise ValueError("not an image file (unknown extension)")
                decoded[i] = decode_image(blob)
            out[i] = fit_square(decoded[i], size)
        except Exception as exc:
            bad.append((name, f"{type(exc).__name__}: {exc}"))
    return out, hashes, bad


def _decode_all(
    source: _Source, names: list[str], size: int, workers: int, progress: bool
) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    """Read files in order on this thread; decode chunks on ``workers`` threads."""
    from tqdm.auto import tqdm

    images = np.zeros((len(names), size, size, 3), dtype=np.uint8)
    hashes: list[str] = [""] * len(names)
    bad: list[tuple[str, str]] = []
    chunk = 1000
    bar = tqdm(total=len(names), unit="img", desc="decoding", disable=not progress)
    with cf.ThreadPoolExecutor(max(1, workers)) as pool:
        pending: dict[cf.Future, int] = {}

        def drain(limit: int) -> None:
            while len(pending) > limit:
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    start = pending.pop(fut)
                    arr, hs, bd = fut.result()
                    images[start : start + len(arr)] = arr
                    hashes[start : start + len(hs)] = hs
                    bad.extend(bd)
                    bar.update(len(arr))

        for start in range(0, len(names), chunk):
            part = names[start : start + chunk]
            blobs = [source.read(n) for n in part]
            pending[pool.submit(_decode_chunk, part, blobs, size)] = start
            drain(2 * workers)  # bounded: at most a few chunks of bytes in memory
        drain(0)
    bar.close()
    return images, hashes, bad


# ---------------------------------------------------------------------------------------------
# Public API


def _fingerprint(source: _Source, image_size: int | None, skip_bad: bool) -> str:
    h = hashlib.sha256(f"v{CACHE_FORMAT}:{image_size}:{skip_bad}".encode())
    directory = source.central_directory()
    if directory is not None:
        h.update(directory)  # every member's name, size and CRC-32, as the archive states them
    else:
        for rel, ident in sorted(source.listing()):
            h.update(f"{rel}\0{ident}\n".encode())
    return h.hexdigest()[:20]


def fingerprint_of(path: str | os.PathLike[str], image_size: int | None = None,
                   skip_bad: bool = False) -> str:
    """The fingerprint ``load_dataset(path, image_size, skip_bad)`` gives, without decoding.

    Lets a later command check that a study's data source is still the data it trained on.
    """
    return _fingerprint(_Source(Path(path).expanduser().resolve()), image_size, skip_bad)


def load_dataset(
    path: str | os.PathLike[str],
    image_size: int | None = None,
    skip_bad: bool = False,
    workers: int | None = None,
    progress: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ImageSet:
    """Read (or fetch from the cache) every image of ``path``, a folder or a zip.

    ``image_size`` None keeps the size of the first image; images of another size are centre
    cropped and resized, and counted in the report. Unreadable files raise ``DataError`` listing
    them, unless ``skip_bad`` is set, in which case they are left out and listed in the report.
    """
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise DataError(f"data path {path} does not exist; pass a folder, a .zip, or 'sample'")
    source = _Source(path)
    fingerprint = _fingerprint(source, image_size, skip_bad)
    cache = Path(cache_dir) if cache_dir else cache_root() / "ingest"
    entry_dir = cache / fingerprint
    if (entry_dir / "meta.json").exists():
        return _read_cache(entry_dir)

    layout, entries, ignored = detect_layout([rel for rel, _ in sorted(source.listing())])
    names = [e.path for e in entries]
    size = image_size or _first_size(source, names)
    started = time.perf_counter()
    images, hashes, bad = _decode_all(
        source, names, size, workers or min(4, os.cpu_count() or 1), progress
    )
    if bad and not skip_bad:
        shown = "\n".join(f"  {n}: {e}" for n, e in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise DataError(
            f"{len(bad)} file(s) in {path} could not be read as images:\n{shown}{more}\n"
            "Remove or fix them, or pass --skip-bad to leave them out (they are then listed "
            "in the ingest report)."
        )
    bad_names = {n for n, _ in bad}
    keep = np.array([n not in bad_names for n in names], dtype=bool)
    manifest = pd.DataFrame(
        {
            "path": names,
            "label": np.array([e.label for e in entries], dtype=np.int8),
            "split": [e.split for e in entries],
            "generator": [e.generator for e in entries],
            "content_hash": hashes,
        }
    )[keep].reset_index(drop=True)
    images = images[keep]
    for label, cls in enumerate(CLASS_NAMES):
        if not (manifest["label"] == label).any():
            raise DataError(f"no readable {cls} image is left in {path}; check the class folders")
    carved = not (manifest["split"] == "test").any()
    if carved:
        manifest["split"] = holdout_split(manifest)
    report = _report(manifest, layout, ignored, bad, size, time.perf_counter() - started)
    report["test_split"] = "holdout" if carved else "dataset"
    data = ImageSet(images, manifest, fingerprint, str(path), layout, report)
    _write_cache(entry_dir, data)
    return data


def _first_size(source: _Source, names: list[str]) -> int:
    from PIL import Image

    for name in names[:50]:
        try:
            with Image.open(io.BytesIO(source.read(name))) as im:
                return min(im.size)
        except Exception:
            continue
    return 32


def _report(
    manifest: pd.DataFrame,
    layout: str,
    ignored: list[str],
    bad: list[tuple[str, str]],
    size: int,
    seconds: float,
) -> dict[str, Any]:
    dup = manifest[manifest["content_hash"].duplicated(keep=False)]
    groups = dup.groupby("content_hash")
    cross_split = int((groups["split"].nunique() > 1).sum()) if len(dup) else 0
    cross_label = int((groups["label"].nunique() > 1).sum()) if len(dup) else 0
    counts = manifest.groupby(["split", "label"]).size()
    return {
        "layout": layout,
        "image_size": size,
        "images": len(manifest),
        "counts": {f"{s}/{CLASS_NAMES[int(lb)]}": int(n) for (s, lb), n in counts.items()},
        "generators": sorted(g for g in manifest["generator"].unique() if g),
        "duplicate_groups": int(groups.ngroups) if len(dup) else 0,
        "duplicate_files": len(dup),
        "duplicate_groups_across_splits": cross_split,
        "duplicate_groups_across_labels": cross_label,
        "skipped_bad_files": [{"path": n, "error": e} for n, e in bad],
        "ignored_system_files": ignored,
        "decode_seconds": round(seconds, 3),
    }


def _write_cache(entry_dir: Path, data: ImageSet) -> None:
    entry_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry_dir.name}-", dir=entry_dir.parent))
    try:
        np.save(tmp / "images.npy", data.images)
        data.manifest.to_parquet(tmp / "manifest.parquet", index=False)
        meta = {"fingerprint": data.fingerprint, "source": data.source, "layout": data.layout,
                "format": CACHE_FORMAT, "report": data.report}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, entry_dir)  # atomic: readers see a whole entry or none
        except OSError:
            if not (entry_dir / "meta.json").exists():  # another process may have won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_cache(entry_dir: Path) -> ImageSet:
    meta = json.loads((entry_dir / "meta.json").read_text())
    images = np.load(entry_dir / "images.npy")
    manifest = pd.read_parquet(entry_dir / "manifest.parquet")
    return ImageSet(images, manifest, meta["fingerprint"], meta["source"], meta["layout"],
                    meta["report"])
