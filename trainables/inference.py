"""Score images with a trained checkpoint: ``Detector.from_state(state).scores(images)``.

Usage:
    detector = Detector.from_state(load_state("checkpoint.pt"))
    p_fake = detector.scores(images)                   # (N, H, W, 3) uint8 -> (N,) scores
    images, names = read_images(list_images("photos/"), size=32)

A detector applies exactly the preprocessing its trial was trained and tested with (resize to the
trial's resolution, the model's normalisation) and the trial's decision threshold: 0.5 on P(FAKE)
for classifiers, the validation-tuned cut on the anomaly score for anomaly detectors.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainables.config import TrainConfig
from trainables.dataset import DataError
from trainables.device import halving_on_oom
from trainables.images import IMAGE_SUFFIXES, SYSTEM_FILES, decode_images, fit_square
from trainables.loader import Preprocess, to_device_uint8
from trainables.model_base import AnomalyDetector, input_normalization
from trainables.models import model_spec
from trainables.train import model_from_state, score_batch, select_device, weights_of

EVAL_BATCH = 256  # images per batch; halved on out-of-memory (halving_on_oom)


class UnreadableImageError(DataError):
    """Files that cannot be decoded as images; the message names every one."""


@dataclass
class Detector:
    """A trained model with its preprocessing and threshold, on one device."""

    model: nn.Module
    config: TrainConfig
    prep: Preprocess
    threshold: float  # predict FAKE when score >= threshold
    anomaly: bool  # scores are anomaly scores, not probabilities
    device: torch.device
    weights: str  # "best" (the epoch the test metrics describe) or "last"

    @classmethod
    def from_state(cls, state: dict[str, Any], device: str | torch.device | None = "cpu"
                   ) -> Detector:
        config = TrainConfig.from_dict(state["config"])
        dev = select_device(str(device) if device is not None else None)
        model = model_from_state(state).to(dev).eval()
        for p in model.parameters():
            p.requires_grad_(False)  # attacks and Grad-CAM need input gradients only
        spec = model_spec(config.model)
        prep = Preprocess(config.image_size or spec.resolution,
                          input_normalization(spec, config.normalize), False, False)
        threshold = float((state.get("best") or {}).get("threshold", 0.5))
        return cls(model, config, prep, threshold, isinstance(model, AnomalyDetector), dev,
                   weights_of(state))

    @property
    def score_name(self) -> str:
        return "anomaly_score" if self.anomaly else "p_fake"

    # -- differentiable pieces (attacks, Grad-CAM) -------------------------------------------
    def score_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Scores (N,) of float [0, 1] NCHW images: P(FAKE), or the anomaly score.

        ``score_batch``, as the trial's own evaluation: fp32, so they equal its stored scores.
        """
        return score_batch(self.model, self.prep.from_unit(x), self.anomaly, self.config.tta)[0]

    def decision(self, x: torch.Tensor) -> torch.Tensor:
        """A statistic (N,) that is >= ``decision_threshold`` exactly when FAKE is predicted.

        The log-odds of FAKE for classifiers (logit difference, or the single logit), the
        anomaly score for anomaly detectors. Attacks push it across the threshold; Grad-CAM
        explains it. Unlike P(FAKE) it does not saturate, so its gradients do not vanish.
        """
        scores, logits = score_batch(self.model, self.prep.from_unit(x), self.anomaly,
                                     self.config.tta)
        if logits is None:
            return scores
        return logits[:, 1] - logits[:, 0] if logits.shape[-1] == 2 else logits.view(-1)

    @property
    def decision_threshold(self) -> float:
        if self.anomaly:
            return self.threshold
        t = min(max(self.threshold, 1e-12), 1 - 1e-12)
        return math.log(t / (1 - t))

    # -- batch scoring -----------------------------------------------------------------------
    def to_unit(self, images: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> float [0, 1] NCHW on the detector's device."""
        return to_device_uint8(images, self.device).float().div_(255.0)

    @torch.no_grad()
    def scores(self, images: np.ndarray, batch_size: int = EVAL_BATCH) -> np.ndarray:
        """Scores (N,) float32 of uint8 NHWC images, in batches (halved on out-of-memory)."""
        out = halving_on_oom(lambda a, b: self.score_unit(self.to_unit(images[a:b])).cpu(),
                             len(images), batch_size, self.device)
        return torch.cat(out).numpy().astype(np.float32) if out else np.zeros(0, np.float32)

    def predict(self, scores: np.ndarray) -> np.ndarray:
        return (np.asarray(scores) >= self.threshold).astype(np.int8)


# ---------------------------------------------------------------------------------------------
# Image files (the predict command)


def list_images(path: str | os.PathLike[str]) -> list[Path]:
    """``path`` itself if it is a file, else every image file under the folder, sorted."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path} does not exist; pass an image file or a folder of images")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file()
                   and p.suffix.lower() in IMAGE_SUFFIXES
                   and p.name.lower() not in SYSTEM_FILES)
    if not files:
        raise DataError(f"{path} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def read_images(paths: Sequence[Path], size: int, skip_bad: bool = False
                ) -> tuple[np.ndarray, list[Path], list[tuple[Path, str]]]:
    """Decode, centre-crop to a square and resize to ``size`` exactly as ingest does.

    The same functions as the ingest (``trainables.images``), so a file gives the pixels it gave
    in training: EXIF orientation applied, 16-bit images scaled to 8 bits. Returns (images, the
    paths read, [(path, error)] of the bad ones). Unreadable files raise
    ``UnreadableImageError`` naming each of them, unless ``skip_bad``.
    """
    images, good, bad = [], [], []
    for path in paths:
        try:
            blob = path.read_bytes()
        except OSError as exc:
            bad.append((path, f"cannot be read: {exc.strerror or exc}"))
            continue
        decoded, errors = decode_images([path.name], [blob], by_suffix=False)
        if errors:
            bad.append((path, errors[0]))
            continue
        try:
            images.append(fit_square(decoded[0], size))
            good.append(path)
        except Exception as exc:  # any resize failure is a bad file, named
            bad.append((path, f"cannot be resized: {type(exc).__name__}: {exc}"))
    if bad and not skip_bad:
        shown = "\n".join(f"  {p}: {e}" for p, e in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise UnreadableImageError(
            f"{len(bad)} file(s) could not be read as images:\n{shown}{more}\n"
            "Remove or fix them, or pass --skip-bad to leave them out.")
    stacked = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return stacked, good, bad


def positions(ids: Iterable[str], wanted: Sequence[str]) -> np.ndarray:
    """Row positions of ``wanted`` ids among ``ids``; DataError naming the first missing ones."""
    index = {name: i for i, name in enumerate(ids)}
    missing = [w for w in wanted if w not in index]
    if missing:
        raise DataError(f"{len(missing)} of {len(wanted)} image(s) are not in the data, e.g. "
                        f"{missing[:3]}")
    return np.array([index[w] for w in wanted], dtype=np.int64)
