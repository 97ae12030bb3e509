"""The probability that images are AI-generated, from a trained trial: ``python -m study.predict``.

Usage:
    python -m study.predict photo.jpg --study studies/grid1                # --trial best
    python -m study.predict photos/ --study studies/grid1 --trial 3f2a1_00004 --out preds.csv
    python -m study.predict photos/ --checkpoint models/cifake_fast_search/checkpoint.pt

Prints one row per image: its path, p_fake (the model's probability of FAKE; an anomaly
detector prints its anomaly score instead, which is not a probability) and the label at the
trial's threshold. Images are centre-cropped and resized as the study's training images were at
ingest (--image-size overrides), then preprocessed as the trial's model expects.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from study.cli import add_device_arg, run_command
from study.trials import ingest_size, load_trial_state, resolve_trials, study_info
from trainables.dataset import CLASS_NAMES
from trainables.inference import Detector, list_images, read_images
from trainables.models import model_spec
from trainables.train import load_state


def predict(paths_arg: str, study_dir: str | None, trial: str, image_size: int | None = None,
            skip_bad: bool = False, device: str | None = None, checkpoint: str | None = None
            ) -> tuple[pd.DataFrame, Detector, str, list]:
    """(table, detector, trial id, bad files) for an image file or a folder of them.

    The model is a study's trial, or a checkpoint file (``study.train_best`` writes one).
    """
    if checkpoint:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"checkpoint {checkpoint} does not exist; "
                                    "python -m study.train_best writes <out>/checkpoint.pt")
        detector = Detector.from_state(load_state(checkpoint), device)
        name, info = Path(checkpoint).name, {}
    else:
        (ref,) = resolve_trials(study_dir, [trial])
        detector = Detector.from_state(load_trial_state(ref), device)
        name, info = ref.trial_id, study_info(study_dir)
    size = (image_size or ingest_size(info)
            or detector.config.image_size or model_spec(detector.config.model).resolution)
    images, paths, bad = read_images(list_images(paths_arg), size, skip_bad)
    scores = detector.scores(images)
    table = pd.DataFrame({
        "path": [str(p) for p in paths],
        detector.score_name: scores.astype(float),
        "label": [CLASS_NAMES[k] for k in detector.predict(scores)],
    })
    return table, detector, name, bad


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m study.predict", description=__doc__.split(
        "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="an image file or a folder (searched recursively)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--study", help="the study directory (<storage>/<name>)")
    which.add_argument("--checkpoint", help="a checkpoint file (study.train_best's output)")
    p.add_argument("--trial", default="best", help="a trial id, or 'best' (the default)")
    p.add_argument("--out", help="also write the table as CSV to this path")
    p.add_argument("--image-size", type=int,
                   help="ingest size in pixels (default: the study's own ingest size)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out unreadable files (listed) instead of failing")
    add_device_arg(p)
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    table, detector, trial_id, bad = predict(args.path, args.study, args.trial,
                                             args.image_size, args.skip_bad, args.device,
                                             args.checkpoint)
    with pd.option_context("display.width", 200, "display.max_rows", 10_000,
                           "display.max_colwidth", 120, "display.float_format",
                           "{:.4f}".format):
        print(table.to_string(index=False))
    fake = int((table["label"] == "FAKE").sum())
    what = ("anomaly score, not a probability" if detector.anomaly
            else "P(FAKE)")
    print(f"\n{len(table)} image(s): {fake} FAKE, {len(table) - fake} REAL; model {trial_id} "
          f"({detector.config.model}, {detector.weights} weights), {detector.score_name} = "
          f"{what}, threshold {detector.threshold:.4g}")
    for path, error in bad:
        print(f"skipped {path}: {error}", file=sys.stderr)
    if args.out:
        table.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
