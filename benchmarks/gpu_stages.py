"""One stage of the GPU check, in a process of its own: ``python benchmarks/gpu_stages.py``.

Usage (``gpu_check.py`` runs it so; by hand only to debug one stage):
    python benchmarks/gpu_stages.py --stage ceilings --device cuda --data ZIP --rows R.jsonl

It appends its figures to ``--rows`` as they are measured (``gpu_rows``), so the driver keeps
what a stage finished when it stops the stage at its budget; SIGTERM runs the stage's clean-up
(Ray's shutdown) before the process ends. This module holds the stages that train nothing
(setup, ceilings, ingest); ``gpu_training_stages`` holds throughput, recipe and packing.
Nothing here imports more than the standard library before a stage runs, so the driver can
read ``STAGES`` on a node whose Ray and pandas are still in the bundle.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import statistics
import sys
import traceback
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpu_rows import NA, Rows
from gpu_training_stages import stage_packing, stage_recipe, stage_throughput

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
IMPORTS = {"numpy": "numpy", "torchvision": "torchvision", "PIL": "pillow", "pandas": "pandas",
           "pyarrow": "pyarrow", "xxhash": "xxhash", "tqdm": "tqdm", "yaml": "pyyaml",
           "ray": "ray", "pydantic": "pydantic", "optuna": "optuna"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stage", required=True, choices=STAGES)
    p.add_argument("--device", required=True, help="cuda or cpu")
    p.add_argument("--data", type=Path, required=True, help="a CIFAKE-layout zip")
    p.add_argument("--rows", type=Path, required=True, help="the JSON-lines file to append to")
    p.add_argument("--quick", action="store_true", help="toy sizes")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend")
    p.add_argument("--ceilings", default="{}", help="the ceilings stage's figures, as JSON")
    p.add_argument("--deadline", type=float, help="time.time() by which to have finished")
    return p.parse_args(argv)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(f"stopped at the stage's budget (signal {signum})")


def stage_main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)  # a budget's stop runs finally: blocks
    rows = Rows(args.rows, args.deadline)
    ceilings = json.loads(args.ceilings)
    try:
        if args.device.startswith("cuda"):
            import torch

            torch.backends.cudnn.benchmark = True  # as a trial's steps of one shape settle on
        STAGE_FUNCTIONS[args.stage](rows, args, ceilings)
    except Exception as exc:
        rows.error(args.stage, exc)
        traceback.print_exc()
        return 1
    rows.done()
    return 0


def stage_setup(rows: Rows, args: argparse.Namespace, ceilings: dict[str, float]) -> None:
    import importlib.util

    import torch

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    from importlib.metadata import PackageNotFoundError, version

    site = next((p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                 if p.endswith(os.sep + "site")), None)
    origins = {}
    for name, dist in IMPORTS.items():
        # Found, not imported (Ray and pandas take seconds): a stage that imports a missing
        # one fails with the ImportError; here it is only named.
        spec = importlib.util.find_spec(name)
        if spec is None:
            origins[name] = "missing"
            continue
        where = "bundle" if site and str(spec.origin).startswith(site) else "node"
        try:
            origins[name] = f"{version(dist)} ({where})"
        except PackageNotFoundError:
            origins[name] = f"? ({where})"
    rows.row(python=platform.python_version(), torch=torch.__version__,
             cuda=torch.version.cuda or "none", cudnn=str(torch.backends.cudnn.version()),
             device_name=torch.cuda.get_device_name(device) if cuda else platform.processor()
             or platform.machine(),
             device_memory_gib=(torch.cuda.get_device_properties(device).total_memory / 2**30
                                if cuda else NA),
             cpu_cores=os.cpu_count(), torch_threads=torch.get_num_threads(),
             bf16=torch.cuda.is_bf16_supported() if cuda else NA, **origins)


def stage_ceilings(rows: Rows, args: argparse.Namespace, ceilings: dict[str, float]) -> None:
    import torch
    from roofline import copy_gbps, matmul_tflops

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    n = (2048 if args.quick else 8192) if cuda else (512 if args.quick else 2048)
    products = [("bf16", torch.bfloat16, False), ("tf32", torch.float32, True),
                ("fp32", torch.float32, False)] if cuda else [("fp32", torch.float32, False)]
    for key, dtype, tf32 in products:
        with rows.unit(f"{key} matrix product"):
            saved = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            try:
                figure = matmul_tflops(device, dtype, n)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = saved
            rows.row(key=key, what=f"{key} matrix product {n}^3", figure=figure, unit="TFLOP/s")
    if not cuda:
        rows.row(key="bf16", what="bf16 matrix product", figure=NA, unit="TFLOP/s")
    nbytes = (2**28 if args.quick else 2**31) if cuda else (2**24 if args.quick else 2**28)
    with rows.unit("copy"):
        rows.row(key="copy", what=f"{'device-to-device' if cuda else 'memory'} copy of "
                 f"{nbytes / 2**20:,.0f} MiB (read + written)",
                 figure=copy_gbps(device, nbytes), unit="GB/s")



def stage_ingest(rows: Rows, args: argparse.Namespace, ceilings: dict[str, float]) -> None:
    archive = zipfile.ZipFile(args.data)  # before the imports: a broken zip fails in a second
    import concurrent.futures as cf

    import numpy as np
    import torch
    from common import median_seconds
    from ingest import BATCH_BYTES, byte_batches, decode_batch, image_names

    from trainables.images import decode_images

    device = torch.device(args.device)
    with archive as zf:
        names = image_names(zf)
        blobs = [zf.read(n) for n in names]
    n = len(blobs)
    # The project's CPU path: trainables.ingest decodes chunks of files on worker threads
    # through decode_images (torchvision's batched libjpeg-turbo, without the GIL).
    workers = min(4, os.cpu_count() or 1)
    chunk = max(1, -(-n // (4 * workers)))
    parts = [range(i, min(i + chunk, n)) for i in range(0, n, chunk)]

    def decode_part(r: range) -> dict[int, np.ndarray]:
        decoded = decode_images([names[i] for i in r], [blobs[i] for i in r])[0]
        return {r[j]: a for j, a in decoded.items()}

    def cpu() -> dict[int, np.ndarray]:
        with cf.ThreadPoolExecutor(workers) as pool:
            return {i: a for part in pool.map(decode_part, parts) for i, a in part.items()}

    with rows.unit("cpu decode"):
        t_cpu, _ = median_seconds(cpu, 3, warmup=1)
        rows.row(path=f"CPU: decode_images on {workers} threads", images=n, seconds=t_cpu,
                 images_per_s=n / t_cpu, ratio=1.0)
    if device.type != "cuda":
        rows.row(path="GPU: nvJPEG batch decode", images=n, seconds=NA, images_per_s=NA,
                 ratio=NA)
        return
    groups = byte_batches([len(b) for b in blobs], BATCH_BYTES)
    fell_back = [0]

    def gpu() -> list[Any]:
        out, fell_back[0] = [], 0
        for g in groups:
            images, fb = decode_batch([blobs[i] for i in g], str(device))
            out += images
            fell_back[0] += fb
        torch.cuda.synchronize()
        return out

    with rows.unit("nvJPEG decode"):
        t_gpu, _ = median_seconds(gpu, 3, warmup=1)
        decoded = gpu()
        flat = cpu()
        # nvJPEG's IDCT and upsampling differ from libjpeg-turbo's by a grey level or so.
        diffs = [float(np.abs(decoded[i].permute(1, 2, 0).cpu().numpy().astype(np.int16)
                              - flat[i].astype(np.int16)).mean())
                 for i in range(min(n, 512)) if i in flat]
        rows.row(path=f"GPU: nvJPEG batch decode ({len(groups)} batches, {fell_back[0]} "
                 "fell back to PIL)", images=n, seconds=t_gpu, images_per_s=n / t_gpu,
                 ratio=t_cpu / t_gpu,
                 mean_abs_diff_vs_cpu=statistics.mean(diffs) if diffs else math.nan)


STAGE_FUNCTIONS: dict[str, Callable[[Rows, argparse.Namespace, dict[str, float]], None]] = {
    "setup": stage_setup, "ceilings": stage_ceilings, "throughput": stage_throughput,
    "recipe": stage_recipe, "packing": stage_packing, "ingest": stage_ingest}

STAGES = tuple(STAGE_FUNCTIONS)  # the order the driver runs them in


if __name__ == "__main__":
    # The bundle's tree is on PYTHONPATH already (the driver put it there); these make the
    # project's packages and the benchmark helpers importable from any working directory.
    sys.path.insert(0, str(HERE))
    sys.path.insert(1, str(REPO))
    sys.exit(stage_main())
