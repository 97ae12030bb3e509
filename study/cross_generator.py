"""Train on one generator, test on every generator: ``python -m study.cross_generator``.

Usage:
    python -m study.cross_generator --data tiny-genimage.zip --set model=resnet18_cifar \\
        --set epochs=20 --image-size 64
    python -m study.cross_generator --data genimage/ --generators adm biggan sdv4 --no-control
    python -m study.cross_generator --data genimage/ --jpeg-quality 96 --out studies/xgen1

For GenImage-style data (<generator>/{train,val}/{ai,nature}/): for each generator G, one
detector is trained on G's train folder (a validation part carved out as in every trial) with the
configuration given by --set, and tested on the val folder of every generator; the diagonal is
the in-distribution score. The JPEG control does it all again after re-encoding every image,
REAL and FAKE alike, as JPEG at one quality (in memory, PIL): GenImage's REAL images are JPEGs
and its FAKE ones PNGs, so a detector can learn the format instead of the generator's traces;
if the matrix collapses under the control, it had. Writes <out>/cross_generator.parquet (long
form: one row per encoding, trained_on, tested_on with every metric) and prints the matrices.

Training runs in this process with ``trainables.train.train``, one generator after another, not
as a Ray Tune study: study.run has no per-generator data filter, each cell needs the model kept
to score the other generators, and 2 x G short trainings need no scheduler. On a cluster, run
one command per --generators subset on several nodes and concatenate the tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from results.tables import write_table
from study.cli import add_plugin_arg, parse_overrides, run_command
from study.trials import resolve_source
from trainables.config import TrainConfig
from trainables.dataset import DataError, ImageSet, describe, select_generators
from trainables.inference import Detector
from trainables.ingest import load_dataset
from trainables.metrics import classification_metrics
from trainables.robustness import jpeg
from trainables.train import train

# Quality factor 96: Grommelt et al. (2024), "Fake or JPEG? Revealing Common Biases in Generated
# Image Detection Datasets", find GenImage's REAL (ImageNet) JPEGs mostly at quality 96.
JPEG_QUALITY = 96


def reencode(data: ImageSet, quality: int) -> ImageSet:
    """Every image encoded as JPEG at ``quality`` and decoded again (the format control)."""
    return dataclasses.replace(data, images=jpeg(data.images, quality))


def train_detector(config: TrainConfig, data: ImageSet, device: str | None
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(final checkpoint state, last epoch's metrics) of one in-process training run."""
    captured: dict[str, Any] = {}

    def keep_last(metrics: dict[str, Any], state: Any) -> None:
        if metrics["stop_reason"]:  # the last epoch: budget or early stopping
            captured["state"] = state()

    metrics = train(config, data, device=device, on_epoch=keep_last)
    return captured["state"], metrics


def matrix(config: TrainConfig, data: ImageSet, generators: list[str], encoding: str,
           quality: int | None, device: str | None, say: Any = print) -> list[dict[str, Any]]:
    """One row per (trained_on, tested_on) generator pair."""
    test = data.manifest["split"].to_numpy() == "test"
    gen = data.manifest["generator"].to_numpy()
    rows = []
    for g in generators:
        started = time.perf_counter()
        state, metrics = train_detector(config, select_generators(data, [g]), device)
        seconds = time.perf_counter() - started
        detector = Detector.from_state(state, device)
        for h in generators:
            where = np.flatnonzero(test & (gen == h))
            labels = data.labels[where]
            scores = detector.scores(data.images[where])
            rows.append({
                "encoding": encoding, "jpeg_quality": quality, "trained_on": g, "tested_on": h,
                "model": config.model, "seed": config.seed,
                "config": json.dumps(config.asdict(), sort_keys=True),
                "data_source": data.source, "data_fingerprint": data.fingerprint,
                "n_train": metrics["n_train"], "n_images": len(where),
                "threshold": detector.threshold,
                **classification_metrics(labels, scores, detector.threshold),
                "train_seconds": seconds,
            })
        diag = next(r for r in rows[-len(generators):] if r["tested_on"] == g)
        say(f"  {encoding}: trained on {g} in {seconds:.0f} s, accuracy on {g} "
            f"{diag['accuracy']:.3f}")
    return rows


def pivot(rows: pd.DataFrame, encoding: str, metric: str = "accuracy") -> pd.DataFrame:
    """The matrix (rows trained_on, columns tested_on) with the mean over the other generators."""
    sub = rows[rows["encoding"] == encoding]
    order = list(dict.fromkeys(sub["trained_on"]))
    table = sub.pivot(index="trained_on", columns="tested_on", values=metric)
    table = table.loc[order, order]
    off = ~np.eye(len(order), dtype=bool)
    others = [np.nanmean(np.where(off[i], table.to_numpy()[i], np.nan)) if len(order) > 1
              else np.nan for i in range(len(order))]
    return table.assign(**{"mean (others)": others})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m study.cross_generator",
                                description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True,
                   help="folder or .zip in the tiny-GenImage layout "
                   "<generator>/{train,val}/{ai,nature}/")
    p.add_argument("--generators", nargs="+", help="a subset of the generators (default: all)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a training hyperparameter for every cell, e.g. --set epochs=10")
    p.add_argument("--jpeg-quality", type=int, default=JPEG_QUALITY,
                   help="quality of the JPEG control (default %(default)s)")
    p.add_argument("--no-control", action="store_true", help="skip the JPEG control")
    p.add_argument("--out", help="output folder (default: studies/cross_generator-<time>)")
    p.add_argument("--image-size", type=int, help="resize images to this size at ingest")
    p.add_argument("--skip-bad", action="store_true", help="leave out unreadable images")
    p.add_argument("--device", help="cpu, cuda or mps (default: the best available)")
    add_plugin_arg(p)
    p.add_argument("--quiet", action="store_true", help="less progress output")
    args = p.parse_args(argv)
    if not 1 <= args.jpeg_quality <= 100:
        p.error("--jpeg-quality must lie in 1..100")
    return args


def run(args: argparse.Namespace) -> int:
    config = TrainConfig.from_dict(parse_overrides(args.set))
    data = load_dataset(resolve_source(args.data), image_size=args.image_size,
                        skip_bad=args.skip_bad, progress=not args.quiet)
    print(describe(data))
    known = sorted(g for g in data.manifest["generator"].unique() if g)
    generators = list(dict.fromkeys(args.generators or known))
    select_generators(data, generators)  # unknown names fail here, listing the known ones
    if len(generators) < 2:
        raise DataError(f"a cross-generator matrix needs at least two generators; "
                        f"{data.source} holds {known or 'none'}")
    out = Path(args.out or f"studies/cross_generator-{dt.datetime.now():%Y%m%d-%H%M%S}")
    say = (lambda _: None) if args.quiet else (lambda m: print(m, flush=True))
    runs = [("original", None, data)]
    if not args.no_control:
        runs.append(("jpeg", args.jpeg_quality, reencode(data, args.jpeg_quality)))
    print(f"{len(generators)} generators x {len(runs)} encoding(s): "
          f"{len(generators) * len(runs)} trainings of {config.model}, {config.epochs} epochs")
    rows = []
    for encoding, quality, images in runs:
        rows += matrix(config, images, generators, encoding, quality, args.device, say)
    df = pd.DataFrame(rows)
    path = write_table(df, "cross_generator", str(out))
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        for encoding, quality, _ in runs:
            what = ("as stored" if quality is None
                    else f"every image re-encoded as JPEG quality {quality}")
            print(f"\naccuracy, rows trained on, columns tested on ({encoding}: {what}):")
            print(pivot(df, encoding).to_string())
        if len(runs) == 2:
            print("\noriginal minus JPEG control (a large positive gap: the format was learned):")
            print((pivot(df, "original") - pivot(df, "jpeg")).to_string())
    print(f"table:\n  {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
