"""Score a trained trial on another data set: ``python -m study.evaluate <study_dir> ...``.

Usage:
    python -m study.evaluate studies/grid1 --trial best --data genimage_val.zip
    python -m study.evaluate studies/grid1 --trial 3f2a1_00004 --data other/ --name other-v1
    python -m study.evaluate studies/grid1 --trial all --data archive.zip --name cifake-full

Every image of the source (both splits) is scored with the trial's checkpoint (the best epoch's
weights) at the trial's own threshold. Metrics go to the study's ``evaluations`` table (one row
per trial and evaluation set), per-image scores to ``eval_predictions``; evaluating a trial on a
set again replaces its rows. Images are centre-cropped and resized at ingest to the study's own
ingest size unless --image-size says otherwise, as the trial's training images were.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from results.schema import KEYS
from results.tables import evaluation_frames, replace_rows
from study.cli import add_trial_args, run_command
from study.trials import (
    TrialRef,
    ingest_size,
    load_trial_state,
    resolve_refs,
    resolve_source,
    study_info,
)
from trainables.dataset import ImageSet, describe
from trainables.inference import Detector
from trainables.ingest import load_dataset


def eval_set_name(data: str) -> str:
    """The default --name: the folder's or archive's name without .zip."""
    path = Path(data.rstrip("/"))
    return path.stem if path.suffix.lower() == ".zip" else path.name


def evaluate(ref: TrialRef, state: dict[str, Any], data: ImageSet, eval_set: str,
             device: str | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """(evaluations row, eval_predictions rows) of one trial on one data set."""
    detector = Detector.from_state(state, device)
    return evaluation_frames(ref.study, ref.trial_id, eval_set, detector.config.model,
                             detector.weights, data, detector.scores(data.images),
                             detector.threshold)


def by_generator(preds: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per trial and generator folder (tiny-GenImage sources)."""
    hit = preds.assign(correct=preds["label"] == preds["predicted"])
    return hit.pivot_table(index="trial_id", columns="generator", values="correct",
                           aggfunc="mean")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m study.evaluate", description=__doc__.split(
        "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_trial_args(p, several=True)
    p.add_argument("--data", required=True,
                   help="folder or .zip in a supported layout (CIFAKE, tiny-GenImage, "
                   "<class>/), or 'sample'")
    p.add_argument("--name", help="evaluation set name (default: the folder's or zip's name)")
    p.add_argument("--image-size", type=int,
                   help="ingest size in pixels (default: the study's own ingest size)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out unreadable images instead of failing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    refs = resolve_refs(args)
    states = [load_trial_state(ref) for ref in refs]  # fail before decoding any image
    info = study_info(args.study_dir)
    size = args.image_size or ingest_size(info)
    data = load_dataset(resolve_source(args.data), image_size=size, skip_bad=args.skip_bad,
                        progress=not args.quiet)
    print(describe(data))
    if data.fingerprint == info.get("data_fingerprint") or data.source == info.get(
            "data_source"):
        print("note: this is the study's own data: its training images are scored too")
    name = args.name or eval_set_name(args.data)
    rows, preds = [], []
    for ref, state in zip(refs, states, strict=True):
        row, pred = evaluate(ref, state, data, name, args.device)
        rows.append(row)
        preds.append(pred)
    rows_df = pd.DataFrame(rows)
    preds_df = pd.concat(preds, ignore_index=True)
    paths = [replace_rows(args.study_dir, "eval_predictions", preds_df,
                          ("study", "trial_id", "eval_set")),
             replace_rows(args.study_dir, "evaluations", rows_df, KEYS["evaluations"])]
    test = {r.trial_id: r.row.get("test_accuracy") for r in refs}
    shown = rows_df.assign(study_test_accuracy=rows_df["trial_id"].map(test))[
        ["trial_id", "model", "eval_set", "n_images", "accuracy", "auc", "recall",
         "recall_real", "study_test_accuracy"]]
    with pd.option_context("display.width", 160, "display.float_format", "{:.4f}".format):
        print(shown.to_string(index=False))
        if data.manifest["generator"].astype(bool).any():
            print("\naccuracy per generator:")
            print(by_generator(preds_df).to_string())
    print("tables:\n  " + "\n  ".join(paths))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
