"""The GPU check's training stages: throughput, recipe and packing, run by ``gpu_stages.py``.

Usage: ``python benchmarks/gpu_stages.py --stage throughput --device cuda --data ZIP --rows R``
(``gpu_check.py`` does this for each stage); each ``stage_*(rows, args, ceilings)`` writes its
figures to ``rows`` (``gpu_rows.Rows``) one unit at a time.

* throughput: training images/s, FLOPs per image, FLOP utilisation against the ceilings stage's
  measured rates, and peak memory, of each model in each precision and layout.
* recipe: ``cifake_fast_search``'s chosen configuration at 1 ... 16 epochs, GPU and CPU.
* packing: real Ray Tune studies of 1, 2, 4 and 8 concurrent small_cnn trials on one GPU.

``--quick`` (the CPU test's mode) keeps every stage and every kind of figure at toy size: one
model in each throughput variant, the recipe at 16 px, and both packing studies of one epoch
under one ``ray.init``. Only the standard library is imported before a stage runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from gpu_rows import NA, Rows

# The small models whose compiled step is timed too: compiling costs 10-60 s per model, so
# only the project's default CNN and the recipe's.
COMPILED = ("small_cnn", "cifake_fast")
RECIPE_EPOCHS = (1, 2, 4, 8, 16)
PACKING = (1, 2, 4, 8)  # concurrent trials per GPU
TARGETS = (0.90, 0.93)  # accuracies whose seconds the recipe stage reports
QUICK_RECIPE_IMAGES = 96  # --quick: the recipe's runs on half the toy zip's 192 images


def typical_batch(resolution: int) -> int:
    return 256 if resolution <= 32 else 128 if resolution <= 64 else 64


def stage_throughput(rows: Rows, args: argparse.Namespace, ceilings: dict[str, float]) -> None:
    import torch

    from trainables.models import BUILT_IN_MODELS

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    # --quick: one model in every variant (each kind of row, a quarter of the steps).
    models = ["small_cnn"] if args.quick else sorted(BUILT_IN_MODELS)
    variants = (["fp32", "bf16", "bf16+cl"] if cuda else ["fp32", "fp32+cl", "bf16+cl"])
    compiled = "bf16+cl+compile" if cuda else "fp32+cl+compile"
    plan = [(m, v) for m in models for v in variants]
    plan += [(m, compiled) for m in COMPILED if m in models]
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
    from trainables.dataset import sample_subset
    from trainables.ingest import load_dataset
    from trainables.train import train

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as cache:
        data = load_dataset(args.data, progress=False, cache_dir=cache)
    if args.quick and len(data) > QUICK_RECIPE_IMAGES:
        data = sample_subset(data, QUICK_RECIPE_IMAGES)  # stratified, seeded
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
    import concurrent.futures as cf

    import ray
    import torch
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from trainables.device import free_mib
    from trainables.ingest import load_dataset

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    levels = (1, 2) if args.quick or not cuda else PACKING
    epochs = 1 if args.quick else 3  # --quick: one epoch, so ASHA stops nothing there
    cpus = os.cpu_count() or 2
    if cuda:
        torch.cuda.init()
    # ray.init spends its 5-20 s waiting for Ray's own processes to start: read the data
    # meanwhile, on a thread.
    with tempfile.TemporaryDirectory() as cache, cf.ThreadPoolExecutor(1) as pool:
        loading = pool.submit(load_dataset, args.data, progress=False, cache_dir=cache)
        ray.init(num_cpus=cpus if cuda else max(levels), num_gpus=1 if cuda else 0,
                 include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                 object_store_memory=(10**9 if not args.quick else 2 * 10**8))
        data = loading.result()
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


