"""Study overhead: ``python benchmarks/study_overhead.py [--trials 4] [--epochs 10]``.

Runs the same small study (small_cnn on the embedded data, no ASHA) through Ray Tune twice —
with worker reuse (the project's setting) and without (Tune's default) — and compares the
study's wall time with the sum of its trials' own time (Tune's ``time_total_s``: from the
trial's start to its last report, i.e. training, evaluation and checkpoints). Overhead = the
share of the study's wall time not covered by trials' own time, with 2 trials running at once:
scheduling, worker start-up (imports), result and checkpoint handling in the driver.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

import ray
from ray import tune

from trainables.ingest import load_dataset
from trainables.sample import build_sample
from trainables.tune_adapter import trainable


def run_study(data, trials: int, epochs: int, reuse: bool, storage: str,
              gpus: float = 0.0) -> tuple[float, list]:
    param_space = {"model": "small_cnn", "epochs": epochs, "batch_size": 64,
                   "seed": tune.grid_search(list(range(trials)))}
    fn = tune.with_resources(tune.with_parameters(trainable, data=data), {"cpu": 1, "gpu": gpus})
    tuner = tune.Tuner(
        fn, param_space=param_space,
        tune_config=tune.TuneConfig(metric="val_accuracy", mode="max", reuse_actors=reuse),
        run_config=tune.RunConfig(storage_path=storage, name=f"overhead-{reuse}", verbose=0,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
    )
    start = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - start
    return wall, [r.metrics for r in grid]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--gpus-per-trial", type=float, default=0.0,
                   help="GPU variant: e.g. 0.5 packs two trials per GPU")
    args = p.parse_args()
    data = load_dataset(build_sample(), progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    slots = 2  # trials at once: 2 CPUs, 1 CPU per trial
    if args.gpus_per_trial:
        slots = min(slots, int(ray.cluster_resources().get("GPU", 0) / args.gpus_per_trial))
    rows = []
    storage = tempfile.mkdtemp(prefix="bench-overhead-")
    for reuse in (False, True):
        wall, metrics = run_study(data, args.trials, args.epochs, reuse, storage,
                                  args.gpus_per_trial)
        train = sum(m["train_seconds"] for m in metrics) / len(metrics)
        own = sum(m["time_total_s"] for m in metrics) / len(metrics)
        ideal = own * len(metrics) / slots
        rows.append([
            "reuse_actors=True (project)" if reuse else "reuse_actors=False (Tune default)",
            wall, train, own, ideal, 1 - ideal / wall,
        ])
    ray.shutdown()
    print_table(
        f"Study overhead: {args.trials} trials x {args.epochs} epochs of small_cnn on the "
        f"embedded data, {slots} at a time",
        ["setting", "wall s", "train s per trial", "trial's own s (train+eval+ckpt)",
         "ideal wall s (own / slots)", "overhead share of wall"], rows)


if __name__ == "__main__":
    main()
