"""Peak memory of one node running 1, 2 and 4 concurrent trials: ``python benchmarks/memory.py``.

Options: ``--trials 1,2,4``; ``--images N`` (a CIFAKE subset); ``--upscale S`` (each image S x S
times larger by pixel repetition, a stand-in for GenImage-sized data: the cost of a trial should
not grow with it).

The data set enters Ray's object store once per study and every trial on the node maps that
one copy, so each added trial should add its worker process, model and activations, but no copy
of the data set. The baseline is the same trainable handed a private copy of the images, as a
trial that copies its data out of the object store (or reads it from disk itself) holds.
Memory is the machine's used memory (total - available, shared memory included)
above the level measured once Ray has started (and its start-up has settled) and the data set
was put in the object store, sampled every 0.2 s while the study runs.

An added trial's cost splits into its worker process (Python, torch, Ray and this project's
imports; measured alone as idle actors that only import the trainable's modules) and the trial's
own working set (model, optimiser, batches, allocator caches): the last columns show both. A
second table follows one trial through its stages in a fresh worker and shows what each adds to
its private memory, next to the shared object-store pages it has read and the pinned host
memory PyTorch's caching host allocator holds (``torch.cuda.host_memory_stats``; with
``--gpus-per-trial`` the stages run on the GPU, where copying the data set to the device should
leave at most the loader's one 64 MiB staging block pinned; "n/a on CPU" otherwise).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

import ray
from ray import tune

from trainables.dataset import subset
from trainables.ingest import load_dataset
from trainables.sample import build_sample
from trainables.tune_adapter import trainable

CIFAKE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifake-train.zip"
TRIAL = {"model": "small_cnn", "epochs": 1, "batch_size": 128,  # cifake_grid's largest batch
         "split_ratio": 0.05}  # memory, not learning: keep the epoch short


def used() -> int:
    """Bytes in use on this machine: MemTotal - MemAvailable of /proc/meminfo (Linux)."""
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    kib = int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])
    return kib * 1024


def settled(limit_s: float = 15.0) -> int:
    """used() once Ray's start-up (its idle workers starting after ``ray.init`` returns) has
    stopped moving it: less than 4 MiB of change over one second, or after ``limit_s``."""
    last, deadline = used(), time.time() + limit_s
    while time.time() < deadline:
        time.sleep(1.0)
        now = used()
        if abs(now - last) < 4 * 2**20:
            return now
        last = now
    return last


def peak_during(fn) -> int:
    peak, stop = [used()], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], used())
            time.sleep(0.2)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        fn()
    finally:
        stop.set()
        t.join()
    return peak[0]


@ray.remote(num_cpus=1)
class ImportsOnly:
    """A worker process holding what a trial process imports, and nothing else."""

    def __init__(self) -> None:
        import trainables.tune_adapter  # noqa: F401

    def ready(self) -> int:
        return os.getpid()


def idle_worker_cost(k: int) -> float:
    """MiB that each of ``k`` processes importing the trainable adds to the machine's use."""
    ray.init(num_cpus=k, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    base = settled()
    actors = [ImportsOnly.remote() for _ in range(k)]
    ray.get([a.ready.remote() for a in actors])
    time.sleep(1)
    cost = (used() - base) / k / 2**20
    ray.shutdown()
    return cost


def resident_mib() -> dict[str, float]:
    """This process's resident private (anonymous) and shared memory, MiB (Linux)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssShmem"):
            out[key] = int(value.split()[0]) / 1024
    return out


def stage_memory() -> dict[str, float | None]:
    """``resident_mib()`` plus the pinned host memory PyTorch's allocator holds (None: n/a)."""
    from trainables.loader import pinned_host_mib

    pinned = pinned_host_mib()
    return {**resident_mib(), "pinned": pinned["pinned_mib"] if pinned else None}


@ray.remote(num_cpus=1)
def trial_stages(data, config: dict, device: str = "cpu"
                 ) -> list[tuple[str, dict[str, float | None]]]:
    """A trial's memory as it goes, in a fresh worker: what each stage adds."""
    import torch

    from trainables.config import TrainConfig
    from trainables.train import _Run

    torch.set_num_threads(1)
    stages = [("worker with torch, this project and the data set's handle", stage_memory())]
    torch.optim.SGD([torch.zeros(1, requires_grad=True)]).zero_grad()
    stages.append(("first torch.optim call (imports torch._dynamo)", stage_memory()))
    run = _Run(TrainConfig.from_dict(config), data, torch.device(device))
    stages.append(("model, optimiser, splits (the data set on a GPU)", stage_memory()))
    run.train_epoch()
    stages.append(("a training epoch (activations, allocator caches)", stage_memory()))
    run.evaluate("val")
    run.evaluate("test")
    stages.append(("validation and test", stage_memory()))
    return stages


def copying_trainable(config, data):
    """Baseline: the same trial, holding its own copy of the images."""
    trainable(config, dataclasses.replace(data, images=data.images.copy()))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=0, help="CIFAKE images (0 = all)")
    p.add_argument("--trials", default="1,2", help="concurrent trials to measure")
    p.add_argument("--gpus-per-trial", type=float, default=0.0,
                   help="GPU variant: host memory with trials on GPUs (device memory is per "
                   "trial by design: the whole uint8 set lives on each trial's device)")
    p.add_argument("--upscale", type=int, default=1,
                   help="repeat each pixel S x S times: a larger data set, the same trial")
    args = p.parse_args()
    data = load_dataset(CIFAKE if CIFAKE.exists() else build_sample(), progress=False)
    if args.images and args.images < len(data):
        data = subset(data, range(0, len(data), len(data) // args.images)[: args.images])
    if args.upscale > 1:
        big = data.images.repeat(args.upscale, axis=1).repeat(args.upscale, axis=2)
        data = dataclasses.replace(data, images=big)
    mb = data.images.nbytes / 2**20
    rows = []
    counts = [int(k) for k in args.trials.split(",")]
    variants = (("copy per trial (baseline)", copying_trainable),
                ("shared object store (project)", trainable))
    for (name, fn_), k in itertools.product(variants, counts):
        ray.init(num_cpus=k, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        fn = tune.with_parameters(fn_, data=data)  # puts the data in the object store
        base = settled()
        tuner = tune.Tuner(
            tune.with_resources(fn, {"cpu": 1, "gpu": args.gpus_per_trial}),
            param_space={**TRIAL, "seed": tune.grid_search(list(range(k)))},
            tune_config=tune.TuneConfig(metric="val_accuracy", mode="max"),
            run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(), verbose=0),
        )
        peak = peak_during(tuner.fit)
        ray.shutdown()
        rows.append([name, k, (peak - base) / 2**20])
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    gpu = args.gpus_per_trial > 0
    stages = ray.get(trial_stages.options(num_gpus=args.gpus_per_trial).remote(
        ray.put(data), {**TRIAL, "seed": 0}, "cuda" if gpu else "cpu"))
    ray.shutdown()
    worker = idle_worker_cost(max(counts))
    for row in rows:
        first = next(r for r in rows if r[0] == row[0])
        k = row[1]
        added = (row[2] - first[2]) / (k - first[1]) if k > first[1] else float("nan")
        row += [added, added / mb, added - worker]
    side = data.images.shape[1]
    print_table(
        f"Peak memory above idle Ray with the data set in the object store "
        f"({len(data):,} images of {side} px, {mb:.0f} MiB as uint8); a worker process that "
        f"only imports the trainable costs {worker:.0f} MiB",
        ["trials hold", "concurrent trials", "peak MiB", "MiB per added trial",
         "added trial / data set", "added trial - worker process"], rows)
    table, last = [], 0.0
    for name, mem in stages:
        pinned = "n/a on CPU" if mem["pinned"] is None else mem["pinned"]
        table.append([name, mem["RssAnon"] - last, mem["RssAnon"], mem["RssShmem"], pinned])
        last = mem["RssAnon"]
    print_table(
        f"Where one trial's memory goes (small_cnn, batch {TRIAL['batch_size']}, "
        f"{'cuda' if gpu else 'cpu'}): private MiB each stage adds, the object store's shared "
        "pages the trial has read, and the pinned host memory PyTorch's allocator keeps",
        ["stage", "adds MiB", "private MiB", "shared MiB (data set, held once)",
         "pinned host MiB"], table)


if __name__ == "__main__":
    main()
