"""Ingest image folders and archives into a cached uint8 array plus a Parquet manifest.

Usage: ``data = load_dataset("archive.zip")``; ``splits = make_splits(data, 0.8, seed=0)``

Layouts, read from a folder or a zip without unpacking:
- CIFAKE (Kaggle): ``train/{REAL,FAKE}/`` and optionally ``test/{REAL,FAKE}/``;
- tiny-GenImage: ``<generator>/{train,val}/{ai,nature}/`` (the generator is kept as a column);
- generic: ``<root>/<class>/`` with two class folders.
A single wrapping folder (``archive/train/...``) is looked through. Images are decoded once, in
parallel, into ``<cache>/ingest/<fingerprint>/``; the fingerprint covers every file's name,
size and checksum (zip) or modification time (folder), so a changed source is read again.
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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

CACHE_FORMAT = 1
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
# Files that operating systems and archivers add; counted and reported, never read as images.
SYSTEM_FILES = {".ds_store", "thumbs.db", "desktop.ini"}
REAL_NAMES = ("real", "nature", "authentic", "0_real")
FAKE_NAMES = ("fake", "ai", "synthetic", "generated", "1_fake")
CLASS_NAMES = ("REAL", "FAKE")  # label 0 = real photograph, label 1 = AI-generated
# Hold-out for the common test set when a source has no test split of its own; fixed so every
# study on the same source scores trials on the same images.
HOLDOUT_FRACTION = 0.1
HOLDOUT_SEED = 20240101


class DataError(ValueError):
    """Input that cannot be used as it is; the message names the files and the fix."""


def cache_root() -> Path:
    return Path(os.environ.get("CIFAKE_STUDY_CACHE", Path.home() / ".cache" / "cifake-study"))


@dataclass
class ImageSet:
    """Decoded images with one manifest row each; label 0 = REAL, 1 = FAKE."""

    images: np.ndarray  # (N, H, W, 3) uint8
    manifest: pd.DataFrame  # path, label, split ("train" | "test"), generator, content_hash
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
# Layout detection


@dataclass
class _Entry:
    path: str
    label: int
    split: str
    generator: str


def _class_label(name: str, where: str) -> int:
    low = name.lower()
    if low in REAL_NAMES:
        return 0
    if low in FAKE_NAMES:
        return 1
    raise DataError(
        f"class folder {where!r} is neither a real ({', '.join(REAL_NAMES)}) nor a generated "
        f"({', '.join(FAKE_NAMES)}) class; rename it (e.g. to REAL or FAKE)"
    )


def _detect(files: list[str]) -> tuple[str, list[_Entry], list[str]]:
    """Return (layout, image entries, ignored system files)."""
    # str.split, not PurePosixPath: this runs once per file of a 100,000-file archive.
    ignored = [f for f in files if f.rsplit("/", 1)[-1].lower() in SYSTEM_FILES]
    files = [f for f in files if f.rsplit("/", 1)[-1].lower() not in SYSTEM_FILES]
    if not files:
        raise DataError("the source holds no files; expected train/REAL and train/FAKE folders")
    parts = [tuple(f.split("/")) for f in files]
    # Look through wrapping folders that every file shares (archive/train/... -> train/...).
    prefix = 0
    while all(len(p) > prefix + 2 for p in parts) and len({p[prefix] for p in parts}) == 1:
        if parts[0][prefix].lower() in ("train", "test"):
            break
        prefix += 1
    rel = [p[prefix:] for p in parts]
    base = "/".join(parts[0][:prefix])

    def where(*names: str) -> str:
        return "/".join(n for n in (base, *names) if n)

    firsts = {p[0].lower() for p in rel}
    if "train" in firsts and firsts <= {"train", "test"}:
        return "cifake", _cifake_entries(files, rel, where), ignored
    if all(len(p) == 4 and p[1].lower() in ("train", "val") for p in rel):
        return "genimage", _genimage_entries(files, rel, where), ignored
    if all(len(p) == 2 for p in rel):
        classes = sorted({p[0] for p in rel})
        if len(classes) != 2:
            raise DataError(
                f"found class folder(s) {classes} under {where() or 'the root'}; a generic source "
                "needs exactly two class folders, one real and one generated (e.g. REAL and FAKE)"
            )
        labels = {c: _class_label(c, where(c)) for c in classes}
        if set(labels.values()) != {0, 1}:
            raise DataError(
                f"class folders {classes} do not name one real and one generated class")
        entries = [_Entry(f, labels[p[0]], "train", "") for f, p in zip(files, rel, strict=True)]
        return "generic", entries, ignored
    tops = sorted({p[0] for p in rel})[:10]
    raise DataError(
        f"unrecognised layout: top-level entries {tops}. Expected train/{{REAL,FAKE}}/ (CIFAKE), "
        "<generator>/{train,val}/{ai,nature}/ (tiny-GenImage) or <class>/ folders"
    )


def _cifake_entries(files: list[str], rel: list[tuple[str, ...]], where: Any) -> list[_Entry]:
    entries, seen = [], set()
    for f, p in zip(files, rel, strict=True):
        if len(p) != 3:
            raise DataError(
                f"{f!r} is not inside a class folder; CIFAKE files live in "
                "train/REAL, train/FAKE, test/REAL or test/FAKE"
            )
        split, cls = p[0].lower(), p[1]
        label = _class_label(cls, where(p[0], cls))
        seen.add((split, label))
        entries.append(_Entry(f, label, split, ""))
    for split in sorted({s for s, _ in seen}):
        for label, name in enumerate(CLASS_NAMES):
            if (split, label) not in seen:
                raise DataError(
                    f"class folder {where(split, name)!r} is missing or empty; CIFAKE needs both "
                    f"{where(split, 'REAL')} and {where(split, 'FAKE')} with images"
                )
    return entries


def _genimage_entries(files: list[str], rel: list[tuple[str, ...]], where: Any) -> list[_Entry]:
    entries, seen = [], set()
    for f, p in zip(files, rel, strict=True):
        gen, split, cls = p[0], p[1].lower(), p[2]
        label = _class_label(cls, where(*p[:3]))
        seen.add((gen, split, label))
        entries.append(_Entry(f, label, "test" if split == "val" else "train", gen))
    for gen, split in sorted({(g, s) for g, s, _ in seen}):
        for label, name in enumerate(("nature", "ai")):
            if (gen, split, label) not in seen:
                raise DataError(
                    f"class folder {where(gen, split, name)!r} is missing or empty; "
                    f"tiny-GenImage needs {gen}/{split}/ai and {gen}/{split}/nature"
                )
    return entries


# ---------------------------------------------------------------------------------------------
# Decoding


def _fit(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square (keeping the aspect ratio) and resize to ``size``."""
    from PIL import Image

    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    im = Image.fromarray(image).crop((left, top, left + side, top + side))
    return np.asarray(im.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None))


def _decode_other(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


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
                decoded[i] = _decode_other(blob)
            out[i] = _fit(decoded[i], size)
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

    layout, entries, ignored = _detect([rel for rel, _ in sorted(source.listing())])
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
        manifest["split"] = _holdout(manifest)
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


def _holdout(manifest: pd.DataFrame) -> np.ndarray:
    """Carve the fixed common test set: stratified, duplicate-aware, seeded."""
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
    hashes = manifest["content_hash"].to_numpy()[idx]
    first, second = [], []
    for label in np.unique(labels):
        mine = idx[labels == label]
        _, group, counts = np.unique(
            hashes[labels == label], return_inverse=True, return_counts=True)
        order = rng.permutation(len(counts))
        take = np.cumsum(counts[order]) <= round(ratio * len(mine))
        chosen = np.zeros(len(counts), dtype=bool)
        chosen[order[take]] = True
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
    if r["skipped_bad_files"]:
        lines.append(f"  skipped {len(r['skipped_bad_files'])} unreadable file(s) (--skip-bad)")
    if r["ignored_system_files"]:
        lines.append(f"  ignored {len(r['ignored_system_files'])} system file(s) (.DS_Store etc.)")
    return "\n".join(lines)


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
