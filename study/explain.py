"""Grad-CAM heat maps of a trained trial on its test images: ``python -m study.explain``.

Usage:
    python -m study.explain studies/grid1 --trial best                 # 8 test images
    python -m study.explain studies/grid1 --trial 3f2a1_00004 --images 12 --target fake
    python -m study.explain studies/grid1 --ids test/FAKE/12.jpg test/REAL/3.jpg --out cam.png

The images are the study's common test set (half REAL, half FAKE, drawn with --seed), or the
manifest paths given with --ids. The explained layer is the model's last Conv2d; see
``trainables.explain``. Writes one PNG grid (each image above its heat-map overlay, titled with
its true label, the score and the prediction) to <study_dir>/figures/gradcam_<trial>.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from results.figures import DPI, save
from study.cli import add_trial_args, run_command
from study.trials import (
    TrialError,
    figure_dir,
    load_study_data,
    load_trial_state,
    resolve_refs,
    test_set_of,
)
from trainables.dataset import CLASS_NAMES
from trainables.explain import TARGETS, describe_layer, grad_cam, last_conv2d, overlay
from trainables.inference import EVAL_BATCH, Detector

PER_ROW = 4  # images per band of the grid; each band is an image row above an overlay row
DISPLAY = 128  # pixels each image and overlay are drawn at (nearest for the image itself)


def choose(labels: np.ndarray, ids: np.ndarray, n: int, wanted: list[str] | None, seed: int
           ) -> np.ndarray:
    """Positions of the images to explain: ``wanted`` ids, else n/2 per class (seeded)."""
    if wanted:
        index = {p: i for i, p in enumerate(ids)}
        missing = [w for w in wanted if w not in index]
        if missing:
            raise TrialError(f"not in the study's test set: {missing[:5]}; --ids takes "
                             f"manifest paths such as {list(ids[:2])}")
        return np.array([index[w] for w in wanted])
    rng = np.random.default_rng(seed)
    out = []
    for label, k in ((0, n // 2), (1, n - n // 2)):
        mine = np.flatnonzero(labels == label)
        out.append(rng.choice(mine, size=min(k, len(mine)), replace=False))
    return np.concatenate(out)


def grid(images: np.ndarray, cams: np.ndarray, labels: np.ndarray, scores: np.ndarray,
         detector: Detector, ids: np.ndarray, title: str) -> Figure:
    n = len(images)
    cols = min(n, PER_ROW)
    bands = -(-n // cols)
    fig = Figure(figsize=(2.6 * cols, 5.3 * bands + 0.6), dpi=DPI)
    axes = np.asarray(fig.subplots(2 * bands, cols, squeeze=False))
    name = "score" if detector.anomaly else "p_fake"
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        band, col = divmod(i, cols)
        top, bottom = axes[2 * band, col], axes[2 * band + 1, col]
        predicted = int(scores[i] >= detector.threshold)
        mark = "right" if predicted == labels[i] else "WRONG"
        top.imshow(images[i], interpolation="nearest")
        top.set_title(f"{Path(str(ids[i])).name}\ntrue {CLASS_NAMES[labels[i]]}, "
                      f"{name} {scores[i]:.3f}\n-> {CLASS_NAMES[predicted]} ({mark})",
                      fontsize=9, color="black" if mark == "right" else "firebrick")
        bottom.imshow(overlay(images[i], cams[i], size=max(DISPLAY, images.shape[1])))
        bottom.set_title("Grad-CAM (red = most weight)", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m study.explain", description=__doc__.split(
        "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_trial_args(p)
    p.add_argument("--images", type=int, default=8, help="how many test images (default 8)")
    p.add_argument("--ids", nargs="+", help="explain these test images (manifest paths)")
    p.add_argument("--target", choices=TARGETS, default="predicted",
                   help="explain the predicted class (default) or the evidence for FAKE")
    p.add_argument("--seed", type=int, default=0, help="which test images are drawn")
    p.add_argument("--batch-size", type=int, default=EVAL_BATCH,
                   help="images explained at once (default %(default)s); halved automatically "
                   "when a batch runs out of GPU memory")
    p.add_argument("--data", help="the study's data, if it has moved (default: study.json's)")
    p.add_argument("--out", help="PNG path (default: <study_dir>/figures/gradcam_<trial>.png)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.images < 1 or args.batch_size < 1:
        p.error("--images and --batch-size must be at least 1")
    return args


def run(args: argparse.Namespace) -> int:
    (ref,) = resolve_refs(args, several=False)
    state = load_trial_state(ref)
    images, labels, ids = test_set_of(
        load_study_data(args.study_dir, args.data, progress=not args.quiet), state)
    pick = choose(labels, ids, args.images, args.ids, args.seed)
    detector = Detector.from_state(state, args.device)
    layer_name, layer = last_conv2d(detector.model)
    cams, scores = grad_cam(detector, images[pick], args.target, layer, args.batch_size)
    layer_text = describe_layer(layer_name, layer)
    title = (f"{ref.study}/{ref.trial_id}: {detector.config.model} ({detector.weights} weights)"
             f"\nGrad-CAM of layer {layer_text}, target: {args.target} class")
    fig = grid(images[pick], cams, labels[pick], scores, detector, ids[pick], title)
    out = Path(args.out) if args.out else (figure_dir(args.study_dir, None)
                                           / f"gradcam_{ref.trial_id}.png")
    print(f"{ref.trial_id}: Grad-CAM of layer {layer_text} for {len(pick)} test images")
    print(save(fig, out))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
