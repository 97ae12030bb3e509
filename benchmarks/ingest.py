"""Ingest benchmark: ``python benchmarks/ingest.py [--data ZIP] [--limit N] [--repeats R]``.

Compares the project's ingest (parallel decode into the cache) with a plain loop that opens each
image of the archive with PIL, on the same files, and times a cache hit (a second study's start).
Prints medians over repeats and their ratio.

``--device cuda`` adds the GPU variant: the same files' bytes decoded in batches of at most
64 MiB by nvJPEG (``torchvision.io.decode_jpeg(..., device="cuda")``), timed to the last image on
the device; a batch nvJPEG rejects (a PNG, a JPEG it does not support) is decoded by PIL instead.
It needs a GPU; the figures in the README are CPU figures.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_seconds, print_table

from trainables.images import IMAGE_SUFFIXES
from trainables.ingest import load_dataset

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifake-train.zip"


BATCH_BYTES = 64 * 2**20  # compressed bytes per nvJPEG batch: ~20,000 CIFAKE JPEGs, ~600 at 1 MP


def image_names(zf: zipfile.ZipFile) -> list[str]:
    """The archive's image files, by the suffixes ingest reads (one list for every pipeline)."""
    return [n for n in zf.namelist() if not n.endswith("/")
            and Path(n).suffix.lower() in IMAGE_SUFFIXES]


def pil_rgb(blob: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))


def plain_pil_loop(path: Path) -> np.ndarray:
    """The usual notebook: open every image with PIL, one after another."""
    with zipfile.ZipFile(path) as zf:
        return np.stack([pil_rgb(zf.read(n)) for n in image_names(zf)])


def byte_batches(sizes: list[int], max_bytes: int = BATCH_BYTES) -> list[range]:
    """Consecutive index ranges whose sizes sum to at most ``max_bytes`` (one item at least):
    a batch of N images is N times a small JPEG's memory, or N times a large one's."""
    out, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and total + size > max_bytes:
            out.append(range(start, i))
            start, total = i, 0
        total += size
    if start < len(sizes):
        out.append(range(start, len(sizes)))
    return out


def decode_batch(blobs: list[bytes], device: str) -> tuple[list, bool]:
    """(CHW uint8 tensors on ``device``, whether the batch fell back to the CPU).

    nvJPEG (``decode_jpeg(..., device=)``) raises for the whole batch on one file it cannot
    decode (a PNG under the same suffix list, CMYK, some progressive JPEGs); that batch is then
    decoded by PIL on the CPU and copied over, so one odd file costs one batch, not the run.
    """
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device), False
    except RuntimeError:
        return [torch.from_numpy(pil_rgb(b)).permute(2, 0, 1).to(device) for b in blobs], True


def gpu_decode(path: Path, device: str, max_bytes: int = BATCH_BYTES) -> tuple[float, int]:
    """(median seconds, batches that fell back to the CPU) of nvJPEG batch decoding of every
    image of ``path`` on ``device``, in batches of at most ``max_bytes`` of file bytes."""
    import torch

    with zipfile.ZipFile(path) as zf:
        blobs = [zf.read(n) for n in image_names(zf)]
    groups = byte_batches([len(b) for b in blobs], max_bytes)
    fallbacks = [0]

    def run() -> None:
        fallbacks[0] = sum(decode_batch([blobs[i] for i in g], device)[1] for g in groups)
        torch.cuda.synchronize()

    run()  # warm-up: nvJPEG handles and CUDA context
    return median_seconds(run, 3)[0], fallbacks[0]


def subset_zip(path: Path, limit: int, folder: Path) -> Path:
    target = folder / f"subset-{limit}.zip"
    per_class = limit // 2
    taken: dict[str, int] = {}
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            cls = info.filename.split("/")[1] if info.filename.count("/") == 2 else ""
            if info.is_dir() or not cls or taken.get(cls, 0) >= per_class:
                continue
            dst.writestr(info, src.read(info))
            taken[cls] = taken.get(cls, 0) + 1
    return target


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, default=DEFAULT)
    p.add_argument("--limit", type=int, default=0, help="use only N images (0 = all)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu",
                   help="cuda: also time nvJPEG batch decoding on the GPU")
    args = p.parse_args()
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            sys.exit("--device cuda needs a CUDA GPU and a CUDA build of torch; none is visible")
    if not args.data.exists():
        sys.exit(f"no data at {args.data}; pass --data with the CIFAKE zip")
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    data = subset_zip(args.data, args.limit, work) if args.limit else args.data

    def cold() -> None:
        cache = tempfile.mkdtemp(dir=work)  # a fresh cache each time: a real cold ingest
        load_dataset(data, progress=False, cache_dir=cache)

    # A study's driver has torch loaded before it ingests; load it here too, outside the timings,
    # so its import (seconds, once per process) is not charged to the first ingest.
    import torchvision.io  # noqa: F401

    n = len(plain_pil_loop(data))
    t_pil, _ = median_seconds(lambda: plain_pil_loop(data), args.repeats)
    t_cold, _ = median_seconds(cold, args.repeats)
    cache = tempfile.mkdtemp(dir=work)
    load_dataset(data, progress=False, cache_dir=cache)
    t_hit, _ = median_seconds(lambda: load_dataset(data, progress=False, cache_dir=cache),
                              args.repeats)
    rows = [["plain PIL loop (baseline)", t_pil, n / t_pil, 1.0],
            ["load_dataset, cold cache", t_cold, n / t_cold, t_pil / t_cold],
            ["load_dataset, cache hit", t_hit, n / t_hit, t_pil / t_hit]]
    if args.device.startswith("cuda"):
        t_gpu, fallbacks = gpu_decode(data, args.device)
        rows.append([f"nvJPEG batch decode on {args.device} ({fallbacks} batches of "
                     f"{BATCH_BYTES // 2**20} MiB decoded on the CPU)", t_gpu, n / t_gpu,
                     t_pil / t_gpu])
    print_table(
        f"Ingest of {n:,} images from {data.name} ({os.cpu_count()} cores, median of "
        f"{args.repeats})",
        ["pipeline", "seconds", "images/s", "speed-up vs PIL loop"], rows)


if __name__ == "__main__":
    main()
