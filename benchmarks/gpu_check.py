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

Stages, each a row of the table printed last, each in a process of its own with its own time
budget (``--budget NAME=SECONDS``). A stage that overruns is stopped and what it finished is
kept; one that raises records the error and the next stage runs:

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
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STAGES = ("setup", "ceilings", "throughput", "recipe", "packing", "ingest")
# Seconds per stage. On one H100/H200-class GPU they add up to 445 s, with the bundle's
# unpacking (a few seconds) inside the 8 minutes; each is a cap, not an estimate.
BUDGETS = {"setup": 20, "ceilings": 25, "throughput": 140, "recipe": 80, "packing": 150,
           "ingest": 30}
# --quick: toy sizes, 3 minutes in all at most (a test runs it on 2 CPU cores).
QUICK_BUDGETS = {"setup": 15, "ceilings": 10, "throughput": 45, "recipe": 30, "packing": 70,
                 "ingest": 10}
KILL_GRACE = 5.0  # seconds between SIGTERM (a stage's clean-up: Ray's shutdown) and SIGKILL
NA = "n/a on CPU"
# The small models whose compiled step is timed too: compiling costs 10-60 s per model, so
# only the project's default CNN and the recipe's.
COMPILED = ("small_cnn", "cifake_fast")
RECIPE_EPOCHS = (1, 2, 4, 8, 16)
PACKING = (1, 2, 4, 8)  # concurrent trials per GPU
TARGETS = (0.90, 0.93)  # accuracies whose seconds the recipe stage reports
IMPORTS = {"numpy": "numpy", "torchvision": "torchvision", "PIL": "pillow", "pandas": "pandas",
           "pyarrow": "pyarrow", "xxhash": "xxhash", "tqdm": "tqdm", "yaml": "pyyaml",
           "ray": "ray", "pydantic": "pydantic", "optuna": "optuna"}


# ---- the parent: bundle, stages as processes, table and JSON ---------------------------------


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
    object a line to ``rows_file`` (``{"row": ...}``, ``{"error": ...}``, ``{"done": true}``).
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
    done = False
    for line in rows_file.read_text().splitlines() if rows_file.exists() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the kill
        if "row" in record:
            result.rows.append(record["row"])
        if "error" in record:
            result.errors.append(record["error"])
        done = done or bool(record.get("done"))
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
    p.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # one stage, in-process
    p.add_argument("--rows", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--ceilings", help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.stage:
        return stage_main(args)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
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
            cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", name,
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


# ---- one stage, in its own process ---------------------------------------------------------


class Rows:
    """A stage's output: one JSON object a line, flushed at once (the parent may kill us)."""

    def __init__(self, path: Path, deadline: float | None) -> None:
        self.file = open(path, "a", buffering=1)
        self.deadline = deadline or math.inf

    def row(self, **values: Any) -> None:
        print(json.dumps({"row": values}, default=_jsonable), file=self.file, flush=True)

    def error(self, unit: str, exc: BaseException) -> None:
        print(json.dumps({"error": f"{unit}: {type(exc).__name__}: {exc}"}), file=self.file,
              flush=True)

    def left(self) -> float:
        return self.deadline - time.time()

    @contextlib.contextmanager
    def unit(self, name: str) -> Iterator[None]:
        """One unit of a stage: an exception is recorded as the unit's error and the stage
        goes on with its next unit."""
        try:
            yield
        except Exception as exc:
            self.error(name, exc)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(f"stopped at the stage's budget (signal {signum})")


def stage_main(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)  # a budget's stop runs finally: blocks
    rows = Rows(args.rows, args.deadline)
    ceilings = json.loads(args.ceilings or "{}")
    try:
        STAGE_FUNCTIONS[args.stage](rows, args, ceilings)
    except Exception as exc:
        rows.error(args.stage, exc)
        import traceback

        traceback.print_exc()
        return 1
    print(json.dumps({"done": True}), file=rows.file, flush=True)
    return 0


def _device(args: argparse.Namespace) -> Any:
    import torch

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as a trial's steps of one shape settle on
    return device


def stage_setup(rows: Rows, args: argparse.Namespace, ceilings: dict[str, float]) -> None:
    import importlib.util

    import torch

    device = _device(args)
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

    device = _device(args)
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


def typical_batch(resolution: int) -> int:
    return 256 if resolution <= 32 else 128 if resolution <= 64 else 64


def stage_throughput(rows: Rows, args: argparse.Namespace, ceilings: dict[str, float]) -> None:

    from trainables.models import BUILT_IN_MODELS

    device = _device(args)
    cuda = device.type == "cuda"
    models = ["small_cnn", "cifake_fast_s"] if args.quick else sorted(BUILT_IN_MODELS)
    variants = (["fp32", "bf16", "bf16+cl"] if cuda else ["fp32", "fp32+cl", "bf16+cl"])
    compiled = "bf16+cl+compile" if cuda else "fp32+cl+compile"
    plan = [(m, v) for m in models for v in variants]
    plan += [(m, compiled) for m in COMPILED if m in models or (args.quick and m == "small_cnn")]
    for model, variant in plan:
        with rows.unit(f"{model} {variant}"):
            rows.row(**throughput_row(model, variant, device, args, ceilings))


def throughput_row(name: str, variant: str, device: Any, args: argparse.Namespace,
                   ceilings: dict[str, float]) -> dict[str, Any]:
    """images/s, FLOPs per image, MFU and peak memory of one model's training step."""
    import torch
    from roofline import device_seconds, training_flops_per_image, training_loss

    from trainables.model_base import count_parameters
    from trainables.models import create_model, model_spec

    cuda = device.type == "cuda"
    spec = model_spec(name)
    size = spec.resolution if not args.quick else min(spec.resolution, 32)
    batch = typical_batch(spec.resolution) if not args.quick else 16
    torch.manual_seed(0)
    model = create_model(name).to(device).train()
    layout = torch.channels_last if "+cl" in variant else torch.contiguous_format
    model = model.to(memory_format=layout)
    x = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=layout)
    y = torch.randint(0, 2, (batch,), device=device)
    flops = training_flops_per_image(model, x[: min(batch, 8)], y[: min(batch, 8)])
    opt = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=1e-3,
                          momentum=0.9, nesterov=True)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled="bf16" in variant)
    step_model = model
    compile_s = None
    if "compile" in variant:
        step_model = torch.compile(model, backend=args.compile_backend)

    def step() -> None:
        with amp:
            loss = training_loss(step_model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    for _ in range(2):
        step()  # compiles (forward, then backward), plans cuDNN, fills the allocator
    if cuda:
        torch.cuda.synchronize()
    if "compile" in variant:
        compile_s = time.perf_counter() - t
    once = device_seconds(step, device, repeats=1 if args.quick else 3, warmup=0)
    steps = max(1, min(200, int((0.25 if not args.quick else 0.05) / max(once, 1e-6))))

    def block() -> None:
        for _ in range(steps):
            step()

    seconds = device_seconds(block, device, repeats=3, warmup=0) / steps
    ips = batch / seconds
    key = ("bf16" if "bf16" in variant else "tf32") if cuda else "fp32"
    ceiling = ceilings.get(key)
    return {"model": name, "variant": variant, "px": size, "batch": batch,
            "params_m": count_parameters(model) / 1e6, "images_per_s": ips,
            "gflop_per_image": flops / 1e9,
            "achieved_tflops": flops * ips / 1e12,
            "mfu": flops * ips / (ceiling * 1e12) if ceiling else "no ceiling",
            "ceiling": key,
            "peak_mib": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else NA,
            "compile_s": compile_s if compile_s is not None else ""}


def stage_recipe(rows: Rows, args: argparse.Namespace, ceilings: dict[str, float]) -> None:
    import torch

    from search_spaces import get_space
    from trainables.config import TrainConfig
    from trainables.ingest import load_dataset
    from trainables.train import train

    device = _device(args)
    with tempfile.TemporaryDirectory() as cache:
        data = load_dataset(args.data, progress=False, cache_dir=cache)
    chosen = get_space("cifake_fast_search").chosen_config()
    budgets = (1, 2) if args.quick else RECIPE_EPOCHS
    sides = [device.type] + (["cpu"] if device.type == "cuda" else [])
    for side in sides:
        fixed = per_epoch = 0.0
        for epochs in budgets:
            # A run starts only if it should end before the stage's deadline, judged by the
            # side's last run: its time outside training steps (set-up, evaluation) and its
            # time per epoch (the CPU side's is the GPU's times tens).
            if per_epoch and (fixed + per_epoch * epochs) * 1.2 > rows.left():
                rows.row(device=side, epochs=epochs, train_s="skipped: the budget would not "
                         "hold it", wall_s="", test_accuracy=math.nan, test_auc=math.nan)
                break
            with rows.unit(f"{side} {epochs} epochs"):
                curve: list[tuple[float, float]] = []
                config = TrainConfig.from_dict({**chosen, "epochs": epochs, "split_ratio": 1.0,
                                                **({"batch_size": 32} if args.quick else {})})
                start = time.perf_counter()
                m = train(config, data, device=side, on_epoch=lambda m, s, c=curve: c.append(
                    (m["train_seconds"], m["final_test_accuracy"])))
                wall = time.perf_counter() - start
                per_epoch = m["train_seconds"] / epochs
                fixed = wall - m["train_seconds"]
                rows.row(device=side, epochs=epochs, train_s=m["train_seconds"], wall_s=wall,
                         test_accuracy=m["test_accuracy"], test_auc=m["test_auc"],
                         images_per_s=m["images_per_second"], n_train=m["n_train"],
                         n_test=m["n_test"], curve=json.dumps(curve))
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def _packing_trial(config: dict[str, Any], data: Any, log: str) -> None:
    """The project's Tune trainable, with what the packing stage reads logged beside it: the
    memory allocated when the trial starts (a reused worker's next trial: 0 unless the last
    one's tensors survived, ray-project/ray#23971) and the time of every report."""
    import json as json_
    import os as os_
    import time as time_

    import torch as torch_
    from ray import tune as tune_

    from trainables import tune_adapter

    trial = tune_.get_context().get_trial_id()
    cuda = torch_.cuda.is_available() and torch_.cuda.is_initialized()
    start = {"trial": trial, "pid": os_.getpid(), "t": time_.time(),
             "allocated_mib": torch_.cuda.memory_allocated() / 2**20 if cuda else None}
    with open(log, "a") as f:
        f.write(json_.dumps({"start": start}) + "\n")
    report = tune_.report

    def logged(metrics: dict[str, Any], checkpoint: Any = None) -> None:
        with open(log, "a") as f:
            f.write(json_.dumps({"report": {
                "trial": trial, "t": time_.time(), "epoch": metrics["epoch"],
                "epoch_seconds": metrics["epoch_seconds"], "n_train": metrics["n_train"],
                "images_per_second": metrics["images_per_second"],
                "device": metrics["device"]}}) + "\n")
        report(metrics, checkpoint=checkpoint)

    tune_.report = logged
    try:
        tune_adapter.trainable(config, data)
    finally:
        tune_.report = report


def stage_packing(rows: Rows, args: argparse.Namespace, ceilings: dict[str, float]) -> None:
    import ray
    import torch
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from trainables.device import free_mib
    from trainables.ingest import load_dataset

    device = _device(args)
    cuda = device.type == "cuda"
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    with tempfile.TemporaryDirectory() as cache:
        data = load_dataset(args.data, progress=False, cache_dir=cache)
    levels = (1, 2) if args.quick or not cuda else PACKING
    epochs = 2 if args.quick else 3
    cpus = os.cpu_count() or 2
    if cuda:
        torch.cuda.init()
    ray.init(num_cpus=cpus if cuda else max(levels), num_gpus=1 if cuda else 0,
             include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             object_store_memory=(10**9 if not args.quick else 2 * 10**8))
    try:
        with tempfile.TemporaryDirectory() as storage:
            for k in levels:
                with rows.unit(f"{k} concurrent trials"):
                    rows.row(**packing_level(k, data, epochs, cuda, args.quick, storage, tune,
                                             ASHAScheduler, free_mib))
    finally:
        ray.shutdown()


def packing_level(k: int, data: Any, epochs: int, cuda: bool, quick: bool, storage: str,
                  tune: Any, asha: Any, free_mib: Callable[[str], float | None]
                  ) -> dict[str, Any]:
    """One Tune study of ``k`` concurrent small_cnn trials at 1/k of the GPU each: twice as
    many trials as slots, so ASHA stops some and workers are reused (with --quick, 2 trials
    a study: one reused worker at 1, two fresh ones at 2)."""
    trials = 2 if quick else 2 * k
    log = os.path.join(storage, f"pack{k}.jsonl")
    free_before = free_mib("cuda") if cuda else None
    resources = {"cpu": 1, "gpu": 1 / k} if cuda else {"cpu": 1}
    space = {"model": "small_cnn", "epochs": epochs, "batch_size": 32 if quick else 128,
             "lr": tune.grid_search([round(1e-3 * 1.5**i, 6) for i in range(trials)]),
             "split_ratio": 0.9, **({"image_size": 16} if quick else {})}
    start = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_packing_trial, data=data, log=log),
                            resources),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="val_loss", mode="min", max_concurrent_trials=k, reuse_actors=True,
            scheduler=asha(max_t=epochs, grace_period=1, reduction_factor=2,
                           time_attr="epoch")),
        run_config=tune.RunConfig(name=f"pack{k}", storage_path=storage, verbose=0))
    grid = tuner.fit()
    wall = time.perf_counter() - start
    errors = [str(r.error) for r in grid if r.error]
    free_after = None
    if cuda:
        for _ in range(10):  # the trials' workers exit after the study; give them a moment
            free_after = free_mib("cuda")
            if free_before is None or free_after >= free_before - 64:
                break
            time.sleep(0.5)
    events = [json.loads(line) for line in open(log)] if os.path.exists(log) else []
    starts = [e["start"] for e in events if "start" in e]
    reports = [e["report"] for e in events if "report" in e]
    if not reports:
        raise RuntimeError(f"no trial reported; errors: {errors[:2]}")
    first = min(r["t"] - r["epoch_seconds"] for r in reports)
    span = max(r["t"] for r in reports) - first
    per_trial = {}
    for r in reports:
        per_trial.setdefault(r["trial"], []).append(r["images_per_second"])
    stopped = sum(1 for r in grid if (r.metrics or {}).get("epoch", epochs) < epochs)
    seen: set[int] = set()
    reused = []  # the starts in a worker an earlier trial of this study ran in
    for s in sorted(starts, key=lambda s: s["t"]):
        if s["pid"] in seen:
            reused.append(s["allocated_mib"])
        seen.add(s["pid"])
    return {"trials": trials, "share": f"1/{k}" if cuda else "cpu", "concurrent": k,
            "wall_s": wall, "epochs_reported": len(reports), "asha_stopped": stopped,
            "total_images_per_s": sum(r["n_train"] for r in reports) / span,
            "per_trial_images_per_s": statistics.median(statistics.median(v)
                                                        for v in per_trial.values()),
            "devices": ",".join(sorted({r["device"] for r in reports})),
            "reused_starts": len(reused),
            "reused_start_allocated_mib": (NA if not cuda else max(reused) if reused
                                           else "no worker reused"),
            "gpu_mib_in_use_after": (free_before - free_after) if cuda and free_before
            is not None and free_after is not None else NA,
            "errors": len(errors), **({"first_error": errors[0][:200]} if errors else {})}


def stage_ingest(rows: Rows, args: argparse.Namespace, ceilings: dict[str, float]) -> None:
    import concurrent.futures as cf

    import numpy as np
    import torch
    from common import median_seconds
    from ingest import BATCH_BYTES, byte_batches, decode_batch, image_names

    from trainables.images import decode_images

    device = _device(args)
    with zipfile.ZipFile(args.data) as zf:
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


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.path.insert(1, str(REPO))
    sys.exit(main())
