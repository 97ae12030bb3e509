"""Retrain a study's chosen configuration on the whole training split; score the test split.

Usage:
    python -m study.train_best --space cifake_fast_search --data cifake-train.zip
    python -m study.train_best --study studies/fast1 --data cifake-train.zip --set epochs=16
    python -m study.train_best --space cifake_fast_search --data archive.zip --out models/fast

The configuration is the space's recorded choice (``Space.chosen``, the winner of the study
documented with the space) or, with ``--study``, the best trial of a finished study (highest
validation accuracy, as ``--trial best`` everywhere). ``--set KEY=VALUE`` overrides a value.
By default every image of the training pool trains (``split_ratio=1``, no validation); the
score is on the data's own test split: CIFAKE's official ``test/`` folder when the archive
holds one (Kaggle's ``archive.zip``), else the fixed, duplicate-aware hold-out carved from the
training split. ``--validation 0.1`` keeps a validation set to watch instead.

Prints one row per epoch (training time, wall time, test accuracy) and writes to ``--out``
(default ``models/<space or study>``): ``checkpoint.pt`` (what ``study.predict --checkpoint``
and the Python ``Detector`` load), ``curve.parquet`` (the per-epoch rows) and ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from results.schema import HYPERPARAMETER_NAMES
from results.storage import replace_atomically
from search_spaces.files import resolve_space
from study.cli import add_plugin_arg, parse_overrides, resolve_data, run_command
from study.trials import best_trial, trials_table
from trainables.config import ConfigError, TrainConfig
from trainables.dataset import ImageSet, origin_of_test_split, sample_subset
from trainables.train import save_state, train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m study.train_best",
                                description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--space", help="retrain the configuration this space records as chosen")
    which.add_argument("--study", help="retrain the best trial of this study directory")
    p.add_argument("--data", default="sample",
                   help="folder or .zip (e.g. cifake-train.zip or Kaggle's archive.zip), or "
                   "'sample'")
    p.add_argument("--subset", type=int, metavar="N", help="train on a seeded subset of N images")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the configuration (e.g. --set epochs=16)")
    p.add_argument("--validation", type=float, default=0.0,
                   help="fraction of the pool kept for validation (default 0: train on all)")
    p.add_argument("--seed", type=int, help="training seed (default: the configuration's)")
    p.add_argument("--device", help="cpu, cuda or mps (default: the best available)")
    add_plugin_arg(p)
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")
    p.add_argument("--out", help="output folder (default: models/<space or study name>)")
    return p.parse_args(argv)


def chosen_config(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """(configuration, where it came from) before overrides."""
    if args.space:
        space = resolve_space(args.space)
        return space.chosen_config(), f"space {space.name} (chosen configuration)"
    row = best_trial(trials_table(args.study))
    config = {k: row[k].item() if hasattr(row[k], "item") else row[k]
              for k in HYPERPARAMETER_NAMES if k in row.index and pd.notna(row[k])}
    return config, f"study {args.study}, best trial {row['trial_id']}"


def final_config(args: argparse.Namespace) -> tuple[TrainConfig, str]:
    values, origin = chosen_config(args)
    if not 0.0 <= args.validation < 1.0:
        raise ConfigError(f"--validation {args.validation} must lie in [0, 1)")
    values = {**values, **parse_overrides(args.set), "split_ratio": 1.0 - args.validation}
    if args.seed is not None:
        values["seed"] = args.seed
    return TrainConfig.from_dict(values), origin


def test_split_name(data: ImageSet) -> str:
    held_out = origin_of_test_split(data) == "holdout"
    return ("the hold-out carved from the training split (the data has no test split)"
            if held_out else "the data's own test split")


def run(args: argparse.Namespace) -> int:
    import torch

    config, origin = final_config(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = resolve_data(args.data, None, False)
    if args.subset:
        data = sample_subset(data, args.subset, config.seed)
    out = Path(args.out or Path("models") / (args.space or Path(args.study).name))
    out.mkdir(parents=True, exist_ok=True)
    print(f"configuration from {origin}:")
    print("  " + " ".join(f"{k}={v}" for k, v in config.asdict().items()))
    print(f"scored on {test_split_name(data)}; {torch.get_num_threads()} CPU threads")
    rows: list[dict[str, Any]] = []
    final: dict[str, Any] = {}
    started = time.perf_counter()
    print(f"{'epoch':>5} {'train s':>8} {'wall s':>8} {'val acc':>8} {'test acc':>8} "
          f"{'test auc':>8}", flush=True)

    def on_epoch(metrics: dict[str, Any], state: Any) -> None:
        wall = time.perf_counter() - started
        row = {"epoch": metrics["epoch"], "train_seconds": metrics["train_seconds"],
               "wall_seconds": wall, "train_loss": metrics["train_loss"],
               "val_accuracy": metrics["val_accuracy"], "test_accuracy": metrics["test_accuracy"],
               "test_auc": metrics["test_auc"], "lr": metrics["lr"]}
        rows.append(row)
        print(f"{row['epoch']:>5} {row['train_seconds']:>8.1f} {wall:>8.1f} "
              f"{row['val_accuracy']:>8.4f} {row['test_accuracy']:>8.4f} "
              f"{row['test_auc']:>8.4f}", flush=True)
        if metrics["stop_reason"]:
            final["state"] = state()
            final["metrics"] = metrics

    metrics = train(config, data, device=args.device, on_epoch=on_epoch)
    replace_atomically(out / "checkpoint.pt", lambda tmp: save_state(final["state"], tmp))
    replace_atomically(out / "curve.parquet",
                  lambda tmp: pd.DataFrame(rows).to_parquet(tmp, index=False))
    summary = {
        "origin": origin, "config": config.asdict(), "data": data.source,
        "data_fingerprint": data.fingerprint, "test_split": test_split_name(data),
        "n_train": metrics["n_train"], "n_val": metrics["n_val"], "n_test": metrics["n_test"],
        "threads": torch.get_num_threads(), "device": metrics["device"],
        "train_seconds": metrics["train_seconds"], "compile_seconds": metrics["compile_seconds"],
        "wall_seconds": rows[-1]["wall_seconds"],
        **{k: v for k, v in metrics.items() if k.startswith("test_")},
    }
    replace_atomically(out / "summary.json",
                  lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1, default=str)))
    print(f"test accuracy {metrics['test_accuracy']:.4f} (AUC {metrics['test_auc']:.4f}) on "
          f"{metrics['n_test']} images after {metrics['train_seconds']:.0f} s of training "
          f"({rows[-1]['wall_seconds']:.0f} s wall); wrote {out}/checkpoint.pt, curve.parquet, "
          "summary.json")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
