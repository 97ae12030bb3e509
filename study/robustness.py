"""Accuracy of trained trials under perturbations and attacks: ``python -m study.robustness``.

Usage:
    python -m study.robustness studies/grid1 --trial best
    python -m study.robustness studies/grid1 --trial 3f2a1_00004 3f2a1_00007 --limit 2000
    python -m study.robustness studies/grid1 --trial all --eps 1 2 4 8 --pgd-steps 10
    python -m study.robustness studies/grid1 --trial best --device cuda --batch-size 1024

On the study's common test set (reloaded from study.json's data source, or --data): JPEG
re-compression (quality 95, 90, 75, 50), rescaling (0.5x and 2x, each back to the original
size), Gaussian noise (sigma 2, 5, 10 on 0-255), and FGSM and PGD (10 steps of eps/4) at eps
1, 2, 4, 8 /255 in [0, 1] pixel space; see ``trainables.robustness``. Rows go to the study's
``robustness`` table (one per trial, perturbation and strength; a rerun replaces the trial's
rows), and one figure per trial to <study_dir>/figures/robustness_<trial>.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

import pandas as pd

from results.figures import robustness_figure, save
from results.tables import replace_rows
from study.cli import add_trial_args, run_command
from study.trials import (
    figure_dir,
    load_study_data,
    load_trial_state,
    resolve_refs,
    stratified_limit,
    study_info,
    test_set_of,
)
from trainables import robustness as rb
from trainables.inference import EVAL_BATCH, Detector


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m study.robustness", description=__doc__.split(
        "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_trial_args(p, several=True)
    p.add_argument("--data", help="the study's data, if it has moved (default: study.json's)")
    p.add_argument("--jpeg", type=int, nargs="*", default=list(rb.JPEG_QUALITIES),
                   metavar="Q", help="JPEG qualities (default: %(default)s)")
    p.add_argument("--scales", type=float, nargs="*", default=list(rb.SCALES), metavar="F",
                   help="rescale factors, each followed by the inverse (default: %(default)s)")
    p.add_argument("--sigmas", type=float, nargs="*", default=list(rb.NOISE_SIGMAS),
                   metavar="S", help="Gaussian noise sigmas on 0-255 (default: %(default)s)")
    p.add_argument("--eps", type=float, nargs="*", default=[1, 2, 4, 8], metavar="E",
                   help="attack budgets in 1/255 units of [0, 1] pixels (default: %(default)s)")
    p.add_argument("--pgd-steps", type=int, default=rb.PGD_STEPS)
    p.add_argument("--limit", type=int,
                   help="score at most this many test images (stratified, seeded sample)")
    p.add_argument("--seed", type=int, default=0, help="noise and --limit sampling seed")
    p.add_argument("--batch-size", type=int, default=EVAL_BATCH,
                   help="images scored or attacked at once (default %(default)s); halved "
                   "automatically when a batch runs out of GPU memory")
    p.add_argument("--out", help="folder for the figures (default: <study_dir>/figures)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    args = p.parse_args(argv)
    if any(not 1 <= q <= 100 for q in args.jpeg):
        p.error("--jpeg qualities must lie in 1..100")
    if any(s <= 0 for s in args.scales) or any(s < 0 for s in args.sigmas):
        p.error("--scales must be positive and --sigmas non-negative")
    if args.batch_size < 1:
        p.error("--batch-size must be at least 1")
    if any(not 0 < e <= 255 for e in args.eps) or args.pgd_steps < 1:
        p.error("--eps must lie in (0, 255] (units of 1/255) and --pgd-steps be >= 1")
    return args


def run(args: argparse.Namespace) -> int:
    refs = resolve_refs(args)
    states = [load_trial_state(ref) for ref in refs]  # fail before any work
    fingerprint = study_info(args.study_dir).get("data_fingerprint")
    out_dir = figure_dir(args.study_dir, args.out)
    dataset = load_study_data(args.study_dir, args.data, progress=not args.quiet)
    frames, figures = [], []
    for ref, state in zip(refs, states, strict=True):
        images, labels, _ = test_set_of(dataset, state)
        keep = stratified_limit(labels, args.limit, args.seed)
        images, labels = images[keep], labels[keep]
        detector = Detector.from_state(state, args.device)

        def say(label: str, trial: str = ref.trial_id) -> None:
            if not args.quiet:
                print(f"  {trial}: {label}", flush=True)

        rows = rb.robustness(detector, images, labels, jpeg_qualities=args.jpeg,
                             scales=args.scales, noise_sigmas=args.sigmas,
                             epsilons=[e / 255 for e in args.eps], pgd_steps=args.pgd_steps,
                             seed=args.seed, batch_size=args.batch_size, progress=say)
        df = pd.DataFrame(rows).assign(
            study=ref.study, trial_id=ref.trial_id, model=detector.config.model,
            weights=detector.weights, threshold=detector.threshold, pgd_steps=args.pgd_steps,
            data_fingerprint=fingerprint, evaluated=dt.datetime.now().replace(microsecond=0))
        frames.append(df)
        title = (f"{ref.study}/{ref.trial_id}: {detector.config.model}, "
                 f"{detector.weights} weights")
        figures.append(save(robustness_figure(df, title),
                            out_dir / f"robustness_{ref.trial_id}.png"))
        with pd.option_context("display.width", 160, "display.float_format", "{:.4f}".format):
            print(f"\n{ref.trial_id} ({detector.config.model}; test_accuracy in trials: "
                  f"{ref.row.get('test_accuracy'):.4f})")
            print(df[["condition", "accuracy", "auc", "recall", "recall_real",
                      "mean_score"]].to_string(index=False))
    table = replace_rows(args.study_dir, "robustness", pd.concat(frames, ignore_index=True),
                         ("study", "trial_id"))
    print("table:\n  " + table + "\nfigures:\n  " + "\n  ".join(map(str, figures)))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
