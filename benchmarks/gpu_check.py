"""Every GPU-side figure in one run: ``python benchmarks/gpu_check.py --device cuda``.

Usage:
    python benchmarks/gpu_check.py --device cuda --bundle benchmarks/gpu_data \\
        --out $OUT/gpu_check.json                     # on the GPU node: at most 8 minutes
    python benchmarks/gpu_check.py --device cpu --quick   # the same stages at toy size
    python benchmarks/gpu_check.py --only ceilings,throughput --budget throughput=60

``--bundle`` is the folder ``gpu_bundle.py`` builds on a machine with a package registry: its
``site.tar.xz`` (Ray Tune, Optuna and what else the node lacks) is unpacked into a temporary
folder and put on every stage's ``PYTHONPATH`` in front of the node's packages, whose torch,
torchvision and numpy are used; its ``cifake-subset.zip`` is the data (``--data`` overrides).
Without ``--bundle`` the stages use this environment, and ``--quick`` makes toy JPEGs when no
``--data`` is given.

Stages, each a row of the table printed last, each in a process of its own
(``gpu_stages.py``; the training stages' bodies are in ``gpu_training_stages.py``) with its own
time budget (``--budget NAME=SECONDS``). A stage that overruns is stopped and what it finished
is kept; one that raises records the error and the next stage runs:

0. ``setup``: Python, torch, CUDA, the device, and where each imported package came from.
1. ``ceilings``: a large bf16 (and TF32, fp32) matrix product and a device-to-device copy,
   timed with CUDA events: the measured TFLOP/s and GB/s the other stages are ratios of.
2. ``throughput``: training images/s of each registered model at its native resolution and a
   typical batch (256 at 32 px, 128 at 64 px, 64 at 224 px) in fp32, bf16 autocast, bf16 with
   channels_last and, for the small models, ``torch.compile``; training FLOPs per image
   (``torch.utils.flop_counter``), the model FLOP utilisation against the ceiling, peak memory.
3. ``recipe``: ``cifake_fast_search``'s chosen configuration trained on the data at 1, 2, 4,
   8 and 16 epochs (each a complete one-cycle run): hold-out accuracy against training
   seconds, the seconds to 0.90 and 0.93, and the same runs on the CPU beside them.
4. ``packing``: real Ray Tune studies (ASHA, reused workers, the project's trainable) of
   small_cnn with 1, 2, 4 and 8 concurrent trials at 1/1 ... 1/8 of the GPU: total and
   per-trial images/s, memory allocated when a reused worker's next trial starts (0 unless
   ray-project/ray#23971 is back), and the GPU memory still in use after each study.
5. ``ingest``: nvJPEG batch decoding of the data's JPEGs against the project's CPU decoder.

The JSON written to ``--out`` (default ``$OUT/gpu_check.json`` where ``OUT`` is set) holds
every figure. Exit status: 0 every stage finished, 1 a stage failed, 2 a stage overran (and
none failed), 3 the check could not start (no data, a broken bundle).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gpu_rows import read_rows
from gpu_stages import STAGES
from gpu_training_stages import TARGETS

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STAGE_SCRIPT = HERE / "gpu_stages.py"  # one stage in its own process
# Seconds per stage. On one H100/H200-class GPU they add up to 445 s, with the bundle's
# unpacking (a few seconds) inside the 8 minutes; each is a cap, not an estimate.
BUDGETS = {"setup": 20, "ceilings": 25, "throughput": 140, "recipe": 80, "packing": 150,
           "ingest": 30}
# --quick: toy sizes, 3 minutes in all at most (a test runs it on 2 CPU cores).
QUICK_BUDGETS = {"setup": 15, "ceilings": 10, "throughput": 45, "recipe": 30, "packing": 70,
                 "ingest": 10}
KILL_GRACE = 5.0  # seconds between SIGTERM (a stage's clean-up: Ray's shutdown) and SIGKILL


@dataclass
class StageResult:
    name: str
    status: str = "not run"  # ok | failed | overran | not run
    seconds: float = 0.0
    budget: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    summary: str = ""


def unpack_bundle(bundle: Path, into: Path) -> dict[str, Any]:
    """Unpack ``bundle``'s ``site.tar.xz`` into ``into`` after checking it against the
    manifest's sha256; the manifest, with the seconds the unpacking took."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    site = manifest.get("site")
    if site is None:
        raise SystemExit(f"{bundle}/manifest.json lists no site.tar.xz; build it with "
                         "benchmarks/gpu_bundle.py")
    start = time.perf_counter()
    path = bundle / site["file"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != site["sha256"]:
        raise SystemExit(f"{path}: sha256 {digest} is not the manifest's {site['sha256']}")
    with tarfile.open(path, "r:xz") as tar:
        tar.extractall(into, filter="tar" if hasattr(tarfile, "tar_filter") else None)
    manifest["unpack_seconds"] = time.perf_counter() - start
    return manifest


def toy_jpeg_zip(path: Path, per_class: int = 96, size: int = 32, seed: int = 0) -> Path:
    """A CIFAKE-shaped zip of toy JPEGs: smooth 'photographs' and the same with a checker
    pattern ('generated'), learnable in an epoch (``--quick`` without ``--data``)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.indices((size, size))
    checker = ((yy + xx) % 2 * 2 - 1)[..., None] * 40.0
    with zipfile.ZipFile(path, "w") as zf:
        for label in ("REAL", "FAKE"):
            for i in range(per_class):
                small = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
                image = np.asarray(Image.fromarray(small).resize((size, size),
                                                                 Image.Resampling.BILINEAR),
                                   dtype=np.float32)
                if label == "FAKE":
                    image = image + checker
                buf = io.BytesIO()
                Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
                    buf, format="JPEG", quality=95)
                zf.writestr(f"train/{label}/{i} ({i % 10 + 1}).jpg", buf.getvalue())
    return path


def run_stage(name: str, argv: list[str], budget: float, env: dict[str, str] | None = None,
              rows_file: Path | None = None) -> StageResult:
    """Run one stage's process ``argv`` for at most ``budget`` seconds; it appends one JSON
    object a line to ``rows_file`` (``gpu_rows``: a row, an error, its last line ``done``).
    Over budget, its process group gets SIGTERM, then SIGKILL after ``KILL_GRACE``; the rows
    it finished are kept either way."""
    result = StageResult(name, budget=budget)
    owned = rows_file is None
    if rows_file is None:
        fd, tmp = tempfile.mkstemp(prefix=f"gpu-check-{name}-", suffix=".jsonl")
        os.close(fd)
        rows_file = Path(tmp)
    start = time.perf_counter()
    proc = subprocess.Popen([*argv, "--rows", str(rows_file)], env=env, start_new_session=True)
    overran = False
    try:
        proc.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        overran = True
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=KILL_GRACE)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    result.seconds = time.perf_counter() - start
    result.rows, result.errors, done = read_rows(rows_file)
    if owned:
        rows_file.unlink(missing_ok=True)
    if overran and not done:
        result.status = "overran"
        result.errors.append(f"stopped at its {budget:g} s budget; {len(result.rows)} "
                             "rows finished before")
    elif overran:  # every row was in: only the process's exit outlasted the budget
        result.status = "failed" if result.errors else "ok"
    elif proc.returncode != 0 or not done:
        result.status = "failed"
        if not result.errors:
            result.errors.append(f"exit status {proc.returncode}")
    else:
        result.status = "failed" if result.errors else "ok"
    return result


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def summarise(result: StageResult) -> str:
    """One cell of key figures from a stage's rows."""
    rows = result.rows
    try:
        if result.name == "setup":
            r = rows[0]
            return f"{r['device_name']}; torch {r['torch']}, Python {r['python']}"
        if result.name == "ceilings":
            return "; ".join(f"{r['what']} {_num(r['figure'])} {r['unit']}" for r in rows)
        if result.name == "throughput":
            done = [r for r in rows if isinstance(r.get("images_per_s"), float)]
            if not done:
                return ""
            best = max(done, key=lambda r: r["mfu"] if isinstance(r["mfu"], float) else -1)
            models = len({r["model"] for r in done})
            mfu = (f"; best MFU {best['mfu']:.1%} ({best['model']}, {best['variant']})"
                   if isinstance(best["mfu"], float) else "")
            return f"{models} models, {len(done)} variants{mfu}"
        if result.name == "recipe":
            parts = []
            for device in dict.fromkeys(r["device"] for r in rows):
                runs = [r for r in rows if r["device"] == device]
                best = max(runs, key=lambda r: r["test_accuracy"])
                hits = ", ".join(f"{t:.2f} in {_seconds_to(runs, t)}" for t in TARGETS)
                parts.append(f"{device}: {best['test_accuracy']:.4f} in "
                             f"{best['train_s']:.1f} s; {hits}")
            return "; ".join(parts)
        if result.name == "packing":
            return "; ".join(f"{r['concurrent']} at {r['share']}: "
                             f"{_num(r['total_images_per_s'])} img/s, reused start "
                             f"{_num(r['reused_start_allocated_mib'])} MiB" for r in rows)
        if result.name == "ingest":
            return "; ".join(f"{r['path']} {_num(r['images_per_s'])} img/s" for r in rows)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        return f"(no summary: {type(exc).__name__} {exc})"
    return ""


def _seconds_to(runs: list[dict[str, Any]], target: float) -> str:
    hits = [r["train_s"] for r in runs if r["test_accuracy"] >= target]
    return f"{min(hits):.1f} s" if hits else "not reached"


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def print_results(results: list[StageResult], device: str, quick: bool) -> None:
    from common import print_table

    for r in results:
        if r.rows:
            keys = list(dict.fromkeys(k for row in r.rows for k in row))
            print_table(f"{r.name} ({r.status}, {r.seconds:.1f} s of {r.budget:g} s)", keys,
                        [[_num(row.get(k, "")) for k in keys] for row in r.rows])
    print_table(f"GPU check on {device}{' (quick, toy sizes)' if quick else ''}",
                ["stage", "status", "seconds / budget", "figures", "errors"],
                [[r.name, r.status, f"{r.seconds:.1f} / {r.budget:g}", r.summary,
                  " | ".join(e.replace("\n", " ")[:300] for e in r.errors)] for r in results])


def exit_status(results: list[StageResult]) -> int:
    if any(r.status == "failed" for r in results):
        return 1
    return 2 if any(r.status == "overran" for r in results) else 0


def parse_budgets(items: list[str], quick: bool) -> dict[str, float]:
    budgets = dict(QUICK_BUDGETS if quick else BUDGETS)
    for item in items:
        name, _, seconds = item.partition("=")
        if name not in budgets or not seconds:
            raise SystemExit(f"--budget {item!r}: use NAME=SECONDS, NAME one of "
                             f"{', '.join(STAGES)}")
        budgets[name] = float(seconds)
    return budgets


def _cuda_visible() -> bool:
    import torch  # here, not above: with --device cpu the driver never pays its import

    return torch.cuda.is_available()


def default_out() -> Path:
    return Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else Path(
        "gpu_check.json")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if visible)")
    p.add_argument("--quick", action="store_true", help="toy sizes (the CPU test's mode)")
    p.add_argument("--bundle", type=Path, help="the folder gpu_bundle.py built")
    p.add_argument("--data", type=Path, help="a CIFAKE-layout zip (default: the bundle's)")
    p.add_argument("--out", type=Path, default=None, help="the JSON of every figure")
    p.add_argument("--only", help="comma-separated stages (default: all)")
    p.add_argument("--budget", action="append", default=[], metavar="NAME=SECONDS")
    p.add_argument("--compile-backend", default=None,
                   help="torch.compile backend (default: inductor; aot_eager with --quick on "
                        "the CPU, where inductor compiles for a minute per model)")
    args = p.parse_args(argv)
    device = args.device or ("cuda" if _cuda_visible() else "cpu")
    if device.startswith("cuda") and not _cuda_visible():
        print("--device cuda: torch sees no CUDA GPU here", file=sys.stderr)
        return 3
    budgets = parse_budgets(args.budget, args.quick)
    stages = args.only.split(",") if args.only else list(STAGES)
    unknown = set(stages) - set(STAGES)
    if unknown:
        print(f"--only: unknown stages {sorted(unknown)}; known: {', '.join(STAGES)}",
              file=sys.stderr)
        return 3
    out = args.out or default_out()
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    start = time.perf_counter()
    try:
        meta: dict[str, Any] = {"device": device, "quick": args.quick,
                                "budgets": {s: budgets[s] for s in stages},
                                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        path_parts = [str(REPO), str(HERE)]
        if args.bundle:
            site = work / "site"
            try:
                manifest = unpack_bundle(args.bundle, site)
            except (OSError, tarfile.TarError, json.JSONDecodeError, KeyError) as exc:
                print(f"cannot use the bundle {args.bundle}: {exc}", file=sys.stderr)
                return 3
            path_parts.insert(0, str(site))
            meta["bundle"] = {"unpack_seconds": manifest["unpack_seconds"],
                              "built": manifest.get("built"),
                              "bundled": [f"{d['name']}=={d['version']}"
                                          for d in manifest["site"]["bundled"]],
                              "subset": manifest.get("subset")}
        data = args.data
        if data is None and args.bundle and (args.bundle / "cifake-subset.zip").exists():
            data = args.bundle / "cifake-subset.zip"
        if data is None and args.quick:
            data = toy_jpeg_zip(work / "toy.zip")
        if data is None or not data.exists():
            print("no data: pass --data ZIP or a --bundle with cifake-subset.zip (or --quick)",
                  file=sys.stderr)
            return 3
        meta["data"] = str(data)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
            [*path_parts, *filter(None, [os.environ.get("PYTHONPATH")])])}
        backend = args.compile_backend or ("aot_eager" if args.quick and device == "cpu"
                                           else "inductor")
        results: list[StageResult] = []
        ceilings: dict[str, float] = {}
        for name in stages:
            cmd = [sys.executable, str(STAGE_SCRIPT), "--stage", name,
                   "--device", device, "--data", str(data), "--compile-backend", backend,
                   "--ceilings", json.dumps(ceilings),
                   "--deadline", str(time.time() + budgets[name] - KILL_GRACE)]
            if args.quick:
                cmd.append("--quick")
            print(f"== {name} (budget {budgets[name]:g} s)", flush=True)
            result = run_stage(name, cmd, budgets[name], env)
            result.summary = summarise(result)
            results.append(result)
            if name == "ceilings":
                ceilings = {r["key"]: r["figure"] for r in result.rows
                            if isinstance(r.get("figure"), float)}
        meta["seconds"] = time.perf_counter() - start
        record = {"meta": meta, "stages": {r.name: asdict(r) for r in results}}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1, default=str) + "\n")
        print_results(results, device, args.quick)
        print(f"\n{meta['seconds']:.0f} s in all; every figure in {out}")
        return exit_status(results)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
