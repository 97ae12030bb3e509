"""Peak memory of one node running 1, 2 and 4 concurrent trials: ``python benchmarks/memory.py``.

The data set enters Ray's object store once per study and every trial on the node maps that
one copy, so each added trial should add its model and activations, well under one copy of the
data set. Memory is the machine's used memory (total - available, shared memory included)
above the level measured after Ray started and the data set was put in the object store,
sampled every 0.2 s while the study runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

import ray
from ray import tune

from trainables.data import load_dataset, subset
from trainables.sample import build_sample
from trainables.tune_adapter import trainable

CIFAKE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifake-train.zip"


def used() -> int:
    vm = psutil.virtual_memory()
    return vm.total - vm.available


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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=30000, help="CIFAKE images (0 = all)")
    args = p.parse_args()
    data = load_dataset(CIFAKE if CIFAKE.exists() else build_sample(), progress=False)
    if args.images and args.images < len(data):
        data = subset(data, range(0, len(data), len(data) // args.images)[: args.images])
    mb = data.images.nbytes / 2**20
    rows = []
    for k in (1, 2, 4):
        ray.init(num_cpus=k, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        fn = tune.with_parameters(trainable, data=data)  # puts the data in the object store
        base = used()
        tuner = tune.Tuner(
            tune.with_resources(fn, {"cpu": 1}),
            param_space={"model": "small_cnn", "epochs": 1, "batch_size": 128,
                         "seed": tune.grid_search(list(range(k)))},
            tune_config=tune.TuneConfig(metric="val_accuracy", mode="max"),
            run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(), verbose=0),
        )
        peak = peak_during(tuner.fit)
        ray.shutdown()
        rows.append([k, (peak - base) / 2**20])
    one = rows[0][1]
    for row in rows:
        k = row[0]
        row += [(row[1] - one) / (k - 1) if k > 1 else float("nan"),
                ((row[1] - one) / (k - 1) / mb) if k > 1 else float("nan")]
    print_table(
        f"Peak memory above idle Ray with the data set in the object store "
        f"({len(data):,} images, {mb:.0f} MiB as uint8)",
        ["concurrent trials", "peak MiB", "MiB per added trial", "added trial / data set"],
        rows)


if __name__ == "__main__":
    main()
