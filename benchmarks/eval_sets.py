"""What scoring evaluation sets (``study.run --eval-data``) costs a trial.

Usage: ``python benchmarks/eval_sets.py [--data ../shared/data/cifake-train.zip] [--subset 10000]
[--eval ../shared/data/external-dev.zip] [--eval-images 2000] [--model small_cnn] [--epochs 6]
[--repeats 3]``

Trains the same configuration (the default schedule: the sets are scored at every epoch whose
validation loss is the best so far, as the test set is) without evaluation sets (the baseline),
with the ``--eval`` set, and with a set of ``--eval-images`` images as large as a real
GenImage subset would be, and prints the median seconds per trial, the ratio to the baseline,
and the share of each trial's time that scoring its sets took, timed inside the trial (on a
loaded machine the wall-clock ratio drifts; that share does not).
Without ``--data`` it uses the embedded sample data.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import median_seconds, print_table
from trainables.config import TrainConfig
from trainables.dataset import ImageSet, sample_subset, subset
from trainables.ingest import load_dataset
from trainables.sample import build_sample
from trainables.train import train


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data")
    p.add_argument("--subset", type=int, default=10000)
    p.add_argument("--eval", help="a folder or .zip to evaluate on (e.g. external-dev.zip)")
    p.add_argument("--eval-images", type=int, default=2000)
    p.add_argument("--model", default="small_cnn")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    pool = load_dataset(args.data or build_sample(), progress=False)
    size = int(pool.images.shape[1])
    data = sample_subset(pool, args.subset, seed=0) if args.subset < len(pool) else pool
    # The large set: other images of the same source, so it costs what a real set would.
    rest = ~pool.manifest["path"].isin(set(data.manifest["path"])).to_numpy()
    big = subset(pool, np.flatnonzero(rest)[: args.eval_images])
    cases: dict[str, dict[str, ImageSet]] = {"no evaluation set (baseline)": {}}
    if args.eval:
        small = load_dataset(args.eval, image_size=size, progress=False)
        cases[f"{Path(args.eval).name} ({len(small)} images)"] = {"ext": small}
    cases[f"{len(big)} images"] = {"big": big}
    config = TrainConfig(model=args.model, epochs=args.epochs, batch_size=args.batch_size)
    print(f"{args.model}, {args.epochs} epochs, batch {args.batch_size}, {len(data)} images "
          f"({size} px), device {args.device}, median of {args.repeats}")
    # Rounds over the cases, so that a machine's drift (other load, thermals) spreads evenly;
    # the share each trial itself spent scoring its sets does not depend on that drift.
    times: dict[str, list[float]] = {label: [] for label in cases}
    shares: dict[str, list[float]] = {label: [] for label in cases}
    median_seconds(lambda: train(config, data, device=args.device), 1)  # warm-up
    for _ in range(args.repeats):
        for label, sets in cases.items():
            start = time.perf_counter()
            out = train(config, data, device=args.device, eval_sets=sets)
            wall = time.perf_counter() - start
            times[label].append(wall)
            shares[label].append(out["eval_sets_seconds"] / wall)
    base = statistics.median(times[next(iter(cases))])
    rows = [[label, sum(len(s) for s in cases[label].values()), statistics.median(t),
             statistics.median(t) / base, 100 * statistics.median(shares[label])]
            for label, t in times.items()]
    print_table("seconds per trial with evaluation sets",
                ["evaluation sets", "images", "median s", "x baseline",
                 "% of the trial scoring them"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
