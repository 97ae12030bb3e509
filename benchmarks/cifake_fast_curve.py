"""Accuracy against training time of the cifake_fast recipe, and of a seed recipe, on CIFAKE.

Usage:
    python benchmarks/cifake_fast_curve.py --data ../shared/data/cifake-train.zip
    python benchmarks/cifake_fast_curve.py --data cifake-train.zip --runs 4 8 cifake_fast_s:8
    python benchmarks/cifake_fast_curve.py --data archive.zip --runs 4 8 16 32 --device cuda

Each run (``EPOCHS``, or ``MODEL:EPOCHS`` for another width) is a complete run of
``cifake_fast_search``'s chosen configuration with that many epochs (the one-cycle schedule
anneals to zero at the budget, so a 4-epoch run is not the first half of an 8-epoch run). Every
run trains on the whole training pool (``split_ratio=1``) and is scored on the hold-out (or the
archive's own test split). The baseline, in the same script, is the best seed recipe that trains
at 32 px on a CPU: Purba & Suparwito's CNN #3 with Adam at 0.001 and batch 32, as the paper
trained it.
Prints one table: recipe, epochs, training seconds, wall seconds, test accuracy and AUC.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table

from search_spaces import get_space
from study.cli import resolve_data
from trainables.config import TrainConfig
from trainables.dataset import sample_subset
from trainables.train import train

BASELINE = {"model": "purba_cnn3", "optimizer": "adam", "lr": 1e-3, "batch_size": 32}


def run_once(values: dict, data, device: str | None) -> list:
    config = TrainConfig.from_dict({**values, "split_ratio": 1.0})
    start = time.perf_counter()
    m = train(config, data, device=device)
    wall = time.perf_counter() - start
    print(f"  {config.model} {config.epochs} epochs: test acc {m['test_accuracy']:.4f} "
          f"in {m['train_seconds']:.0f} s of training", flush=True)
    return [config.model, config.epochs, m["train_seconds"], wall, m["test_accuracy"],
            m["test_auc"]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="the CIFAKE archive or folder")
    p.add_argument("--subset", type=int, help="a seeded subset of N images (quick looks)")
    p.add_argument("--runs", nargs="*", default=["2", "4", "8"],
                   help="EPOCHS (the chosen model) or MODEL:EPOCHS, one complete run each")
    p.add_argument("--baseline-epochs", type=int, nargs="*", default=[2],
                   help="epochs of each baseline run (none: skip the baseline)")
    p.add_argument("--device", help="cpu, cuda or mps (default: the best available)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = resolve_data(args.data, None, False)
    if args.subset:
        data = sample_subset(data, args.subset, 0)
    chosen = get_space("cifake_fast_search").chosen_config()
    rows = []
    for spec in args.runs:
        model, _, epochs = spec.rpartition(":")
        values = {**chosen, "epochs": int(epochs), **({"model": model} if model else {})}
        label = f"{values['model']} ({'chosen' if not model else 'chosen recipe'})"
        rows.append([label, *run_once(values, data, args.device)[1:]])
    for epochs in args.baseline_epochs:
        rows.append(["seed: purba_cnn3, Adam", *run_once({**BASELINE, "epochs": epochs}, data,
                                                          args.device)[1:]])
    print_table(
        f"accuracy against training time ({len(data.manifest):,} images, "
        f"{torch.get_num_threads()} threads, device {args.device or 'auto'})",
        ["recipe", "epochs", "train s", "wall s", "test acc", "test AUC"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
