"""Ingest image folders and archives into a cached uint8 array plus a Parquet manifest.

Usage: ``data = load_dataset("archive.zip")`` (then ``trainables.dataset`` for splits and subsets)

Sources are read from a folder or a zip without unpacking (``trainables.sources``, which checks
every zip member's CRC-32 and follows symbolic links); ``trainables.layouts`` tells which file is
which class and split. Without an image size, the most common size of the data set's images is
used (read from their headers) and the others are centre-cropped and resized. Images are decoded
once, in parallel, into ``<cache>/ingest/<fingerprint>/``; the fingerprint covers every file's
name and a checksum of its bytes (the CRC-32s of a zip's directory, xxHash3 of a folder's files),
so a changed source is read again.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainables.dataset import CLASS_NAMES, DataError, ImageSet, holdout_split
from trainables.images import decode_images, fit_square, image_size_of
from trainables.layouts import detect_layout
from trainables.manifest import is_manifest, manifest_digest, read_manifest
from trainables.sources import Source, UnreadableFileError

# 2: folders keyed on their bytes (not modification times); no image size = the dominant size.
CACHE_FORMAT = 2
CHUNK = 1000  # images per decode task


def cache_root() -> Path:
    return Path(os.environ.get("CIFAKE_STUDY_CACHE", Path.home() / ".cache" / "cifake-study"))


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


# ---------------------------------------------------------------------------------------------
# Decoding


def _decode_chunk(
    names: Sequence[str], blobs: Sequence[bytes | None], size: int
) -> tuple[np.ndarray, list[str], list[tuple[str, str]], np.ndarray]:
    """Decode one chunk: (images, content hashes, [(name, why)] of bad files, resized flags).

    A blob of None is a file that could not be read (already counted as bad).
    """
    out = np.zeros((len(names), size, size, 3), dtype=np.uint8)
    hashes = [hashlib.blake2b(b, digest_size=16).hexdigest() if b is not None else ""
              for b in blobs]
    resized = np.zeros(len(names), dtype=bool)
    readable = [i for i, b in enumerate(blobs) if b is not None]
    decoded, errors = decode_images([names[i] for i in readable],
                                    [blobs[i] for i in readable])  # type: ignore[misc]
    bad = [(names[readable[j]], why) for j, why in sorted(errors.items())]
    for j, pixels in decoded.items():
        i = readable[j]
        try:
            out[i] = fit_square(pixels, size)
            resized[i] = pixels.shape[:2] != (size, size)
        except Exception as exc:  # e.g. a decoder's odd shape: a bad file, named
            bad.append((names[i], f"cannot be resized: {type(exc).__name__}: {exc}"))
    return out, hashes, bad, resized


def _decode_all(
    source: Source, names: list[str], size: int, workers: int, progress: bool
) -> tuple[np.ndarray, list[str], list[tuple[str, str]], np.ndarray]:
    """Read files in order on this thread; decode chunks on ``workers`` threads."""
    from tqdm.auto import tqdm

    images = np.zeros((len(names), size, size, 3), dtype=np.uint8)
    hashes: list[str] = [""] * len(names)
    resized = np.zeros(len(names), dtype=bool)
    bad: list[tuple[str, str]] = []
    bar = tqdm(total=len(names), unit="img", desc="decoding", disable=not progress)
    with cf.ThreadPoolExecutor(max(1, workers)) as pool:
        pending: dict[cf.Future, int] = {}

        def drain(limit: int) -> None:
            while len(pending) > limit:
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    start = pending.pop(fut)
                    arr, hs, bd, rs = fut.result()
                    images[start : start + len(arr)] = arr
                    hashes[start : start + len(hs)] = hs
                    resized[start : start + len(rs)] = rs
                    bad.extend(bd)
                    bar.update(len(arr))

        for start in range(0, len(names), CHUNK):
            part = names[start : start + CHUNK]
            blobs: list[bytes | None] = []
            for name in part:
                try:
                    blobs.append(source.read(name))
                except UnreadableFileError as exc:
                    bad.append((name, str(exc)))
                    blobs.append(None)
            pending[pool.submit(_decode_chunk, part, blobs, size)] = start
            drain(2 * workers)  # bounded: at most a few chunks of bytes in memory
        drain(0)
    bar.close()
    order = {n: i for i, n in enumerate(names)}
    return images, hashes, sorted(bad, key=lambda b: order[b[0]]), resized


def _dominant_size(source: Source, names: list[str]) -> tuple[int, Counter[tuple[int, int]]]:
    """The square side of the most common image size, and the count of every size.

    Sizes come from the image headers (no decoding) and count orientation-free (4000x3000 and
    3000x4000 are one size); on a tie the smaller size wins. Files whose header does not parse
    are left to the decode pass, which names them.
    """
    sizes: Counter[tuple[int, int]] = Counter()
    for name in names:
        wh = image_size_of(source.head(name))
        if wh is not None:
            sizes[(max(wh), min(wh))] += 1
    if not sizes:
        return 32, sizes
    (_, side), _ = max(sizes.items(), key=lambda kv: (kv[1], -kv[0][1], -kv[0][0]))
    return side, sizes


def _check_memory(n: int, size: int, chosen: bool) -> None:
    """Refuse an ingest whose decoded array (N x size x size x 3 bytes) exceeds free memory."""
    need = n * size * size * 3
    free = available_memory()
    if free is None or need <= free:
        return
    fit = max(1, math.isqrt(free // (2 * 3 * max(n, 1))))  # half of it: training copies some
    why = "the most common image size" if chosen else "the --image-size asked for"
    raise DataError(
        f"{n:,} images at {size}x{size} px ({why}) need {need / 2**30:,.1f} GiB as a decoded "
        f"array, more than the {free / 2**30:,.1f} GiB of memory available; pass "
        f"--image-size N with N at most about {fit} to resize them at ingest")


def _bad_files_error(path: Path, bad: list[tuple[str, str]]) -> DataError:
    shown = "\n".join(f"  {n}: {e}" for n, e in bad[:20])
    more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
    return DataError(
        f"{len(bad)} file(s) in {path} could not be read as images:\n{shown}{more}\n"
        "Remove or fix them, or pass --skip-bad to leave them out (they are then listed "
        "in the ingest report).")


# ---------------------------------------------------------------------------------------------
# Public API


def _fingerprint(source: Source, image_size: int | None, skip_bad: bool,
                 extra: bytes = b"") -> str:
    h = hashlib.sha256(f"v{CACHE_FORMAT}:{image_size}:{skip_bad}".encode())
    h.update(extra)  # a manifest's own bytes: its labels and splits are the data too
    h.update(source.content_digest())
    return h.hexdigest()[:20]


def fingerprint_of(path: str | os.PathLike[str], image_size: int | None = None,
                   skip_bad: bool = False) -> str:
    """The fingerprint ``load_dataset(path, image_size, skip_bad)`` gives, without decoding.

    Lets a later command check that a study's data source is still the data it trained on.
    """
    path = Path(path).expanduser().resolve()
    if is_manifest(path):
        entries, _, raw = read_manifest(path)
        return _fingerprint(Source.of_files(path.parent, [e.path for e in entries]), image_size,
                            skip_bad, manifest_digest(raw))
    return _fingerprint(Source(path), image_size, skip_bad)


def load_dataset(
    path: str | os.PathLike[str],
    image_size: int | None = None,
    skip_bad: bool = False,
    workers: int | None = None,
    progress: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ImageSet:
    """Read (or fetch from the cache) every image of ``path``, a folder or a zip.

    ``image_size`` None takes the most common image size of the source; images of another size
    are centre cropped and resized, and counted in the report. Unreadable files (and broken
    symbolic links, corrupt zip members) raise ``DataError`` listing them, unless ``skip_bad``
    is set, in which case they are left out and listed in the report. The data set records
    ``path`` as given (made absolute), even when its cache entry was made from a copy elsewhere.
    """
    given = Path(os.path.abspath(Path(path).expanduser()))
    path = given.resolve()
    if not path.exists():
        raise DataError(f"data path {given} does not exist; pass a folder, a .zip, or 'sample'")
    manifest_entries = None
    if is_manifest(path):
        manifest_entries, groups, raw = read_manifest(path)
        source = Source.of_files(path.parent, [e.path for e in manifest_entries])
        fingerprint = _fingerprint(source, image_size, skip_bad, manifest_digest(raw))
    else:
        source = Source(path)
        fingerprint = _fingerprint(source, image_size, skip_bad)
    cache = Path(cache_dir) if cache_dir else cache_root() / "ingest"
    entry_dir = cache / fingerprint
    if (entry_dir / "meta.json").exists():
        return _read_cache(entry_dir, str(given))

    listing = source.listing()
    if listing.bad and not skip_bad:  # broken links and the like: known before decoding
        raise _bad_files_error(given, listing.bad)
    if manifest_entries is not None:
        layout, ignored = "manifest", []
        present = set(listing.files)
        entries = [e for e in manifest_entries if e.path in present]
    else:
        groups = {}
        try:
            layout, entries, ignored = detect_layout(listing.files)
        except DataError as exc:  # the layout's messages name folders inside the source
            raise DataError(f"{given}: {exc}") from None
    names = [e.path for e in entries]
    sizes: Counter[tuple[int, int]] = Counter()
    if image_size:
        size = image_size
    else:
        size, sizes = _dominant_size(source, names)
    _check_memory(len(names), size, chosen=not image_size)
    started = time.perf_counter()
    images, hashes, bad, resized = _decode_all(
        source, names, size, workers or min(4, os.cpu_count() or 1), progress
    )
    if bad and not skip_bad:
        raise _bad_files_error(given, bad)
    bad = listing.bad + bad
    bad_names = {n for n, _ in bad}
    keep = np.array([n not in bad_names for n in names], dtype=bool)
    manifest = pd.DataFrame(
        {
            "path": names,
            "label": np.array([e.label for e in entries], dtype=np.int8),
            "split": [e.split for e in entries],
            "generator": [e.generator for e in entries],
            "content_hash": hashes,
            # Images that must stay together (a manifest's group column; "" = none).
            "group": [groups.get(n, "") for n in names],
        }
    )[keep].reset_index(drop=True)
    if not keep.all():
        images = images[keep]
    for label, cls in enumerate(CLASS_NAMES):
        if not (manifest["label"] == label).any():
            raise DataError(f"no readable {cls} image is left in {given}; check the class folders")
    carved = not (manifest["split"] == "test").any()
    if carved:
        manifest["split"] = holdout_split(manifest)
    report = _report(manifest, layout, ignored, bad, size, time.perf_counter() - started)
    report["test_split"] = "holdout" if carved else "dataset"
    report["resized_images"] = int(resized[keep].sum())
    report["image_sizes"] = {f"{w}x{h}": n for (w, h), n in sizes.most_common(5)}
    report["followed_symlinks"] = listing.links
    data = ImageSet(images, manifest, fingerprint, str(given), layout, report)
    _write_cache(entry_dir, data)
    return data


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


def _read_cache(entry_dir: Path, source: str) -> ImageSet:
    """The cached data set, recorded under ``source``: the path given now, not the path of
    whichever copy of the same bytes was ingested first (that one may be gone)."""
    meta = json.loads((entry_dir / "meta.json").read_text())
    images = np.load(entry_dir / "images.npy")
    manifest = pd.read_parquet(entry_dir / "manifest.parquet")
    return ImageSet(images, manifest, meta["fingerprint"], source, meta["layout"],
                    meta["report"])
