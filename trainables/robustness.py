"""Accuracy under perturbations and attacks: ``robustness(detector, images, labels) -> rows``.

Usage:
    rows = robustness(Detector.from_state(state), images, labels)   # one dict per condition
    jpeg(images, 75); rescale(images, 0.5); gaussian_noise(images, 5.0, seed=0)
    x_adv = pgd(detector, x, labels, eps=4 / 255)

Image perturbations map (N, H, W, 3) uint8 to uint8 of the same shape, as a saved file would be:
JPEG re-compression and re-scaling through PIL (what a platform or an editor does to an image),
Gaussian noise on the 0-255 scale, rounded and clipped. Attacks work on float [0, 1] images
(not re-quantised to 8 bits) and push the detector's decision statistic (the log-odds of FAKE,
or the anomaly score of an anomaly detector) across its threshold: for FAKE images downwards,
for REAL ones upwards. For a classifier, sign-gradient steps on this margin equal those on the
cross-entropy of the true label (both gradients differ by a positive factor per image).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from trainables.device import halving_on_oom
from trainables.inference import EVAL_BATCH, Detector
from trainables.metrics import classification_metrics

# Defaults of ``python -m study.robustness``: the strengths the issue asks for.
JPEG_QUALITIES = (95, 90, 75, 50)  # PIL quality, 4:2:0 chroma subsampling (PIL's default)
SCALES = (0.5, 2.0)  # resize by the factor, then back to the original size (bicubic)
NOISE_SIGMAS = (2.0, 5.0, 10.0)  # standard deviation on the 0-255 scale
EPSILONS = (1 / 255, 2 / 255, 4 / 255, 8 / 255)  # L-infinity budget in [0, 1] pixel space
PGD_STEPS = 10  # step size eps / 4, as the issue specifies; start at the image (no random start)


def jpeg(images: np.ndarray, quality: int) -> np.ndarray:
    """Each image encoded as JPEG at ``quality`` (1-95 is PIL's useful range) and decoded."""
    from PIL import Image

    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality {quality} must lie in 1..100")
    out = np.empty_like(images)
    for i, image in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
        with Image.open(buf) as im:
            out[i] = np.asarray(im.convert("RGB"))
    return out


def rescale(images: np.ndarray, factor: float) -> np.ndarray:
    """Resize by ``factor`` (bicubic, at least 1 pixel), then back to the original size."""
    from PIL import Image

    if factor <= 0:
        raise ValueError(f"scale factor {factor} must be positive")
    out = np.empty_like(images)
    for i, image in enumerate(images):
        h, w = image.shape[:2]
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        im = Image.fromarray(image).resize(size, Image.Resampling.BICUBIC)
        out[i] = np.asarray(im.resize((w, h), Image.Resampling.BICUBIC))
    return out


def gaussian_noise(images: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Add N(0, sigma^2) noise on the 0-255 scale; round and clip to uint8 (seeded)."""
    rng = np.random.default_rng(seed)
    noisy = images.astype(np.float32) + rng.normal(0.0, sigma, images.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Attacks


def _margin_grad(detector: Detector, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient of (1 - 2y) * decision(x): the direction that moves x towards the wrong side."""
    x = x.detach().requires_grad_(True)
    sign = 1.0 - 2.0 * y.float()  # REAL (0): raise the statistic; FAKE (1): lower it
    loss = (sign * detector.decision(x)).sum()
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm(detector: Detector, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size eps, clipped."""
    return (x + eps * _margin_grad(detector, x, y).sign()).clamp(0.0, 1.0).detach()


def pgd(detector: Detector, x: torch.Tensor, y: torch.Tensor, eps: float,
        steps: int = PGD_STEPS, step_size: float | None = None) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018) in the L-infinity ball of radius eps.

    ``steps`` sign steps of ``step_size`` (default eps / 4), each projected back onto the ball
    and onto [0, 1]. It starts at the image itself, so it is deterministic.
    """
    step = eps / 4 if step_size is None else step_size
    adv = x.detach().clone()
    for _ in range(steps):
        adv = adv + step * _margin_grad(detector, adv, y).sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0.0, 1.0).detach()
    return adv


# ---------------------------------------------------------------------------------------------
# The sweep


Attack = Callable[[Detector, torch.Tensor, torch.Tensor, float], torch.Tensor]


def attacked_scores(detector: Detector, images: np.ndarray, labels: np.ndarray, attack: Attack,
                    eps: float, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Scores of the images after ``attack`` at ``eps``, batch by batch.

    Attacks hold input gradients, several times an inference batch's memory: a batch that runs
    out of GPU memory is retried at half the size (``halving_on_oom``). Each image's attack is
    independent of its batch (eval mode, no random start), so the scores do not change.
    """

    def one(start: int, stop: int) -> torch.Tensor:
        x = detector.to_unit(images[start:stop])
        y = torch.as_tensor(labels[start:stop], device=detector.device)
        adv = attack(detector, x, y, eps)
        with torch.no_grad():
            return detector.score_unit(adv).cpu()

    out = halving_on_oom(one, len(images), batch_size, detector.device)
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros(0, np.float32)


def conditions(jpeg_qualities: Sequence[int] = JPEG_QUALITIES,
               scales: Sequence[float] = SCALES,
               noise_sigmas: Sequence[float] = NOISE_SIGMAS,
               epsilons: Sequence[float] = EPSILONS,
               ) -> list[tuple[str, float, str]]:
    """(perturbation, strength, label) of every condition, the clean one first."""
    out = [("none", 0.0, "clean")]
    out += [("jpeg", float(q), f"JPEG q{q}") for q in jpeg_qualities]
    out += [("rescale", float(s), f"{s:g}x and back") for s in scales]
    out += [("noise", float(s), f"noise sigma {s:g}") for s in noise_sigmas]
    for name in ("fgsm", "pgd"):
        out += [(name, float(e), f"{name.upper()} eps {e * 255:g}/255") for e in epsilons]
    return out


def robustness(detector: Detector, images: np.ndarray, labels: np.ndarray, *,
               jpeg_qualities: Sequence[int] = JPEG_QUALITIES,
               scales: Sequence[float] = SCALES,
               noise_sigmas: Sequence[float] = NOISE_SIGMAS,
               epsilons: Sequence[float] = EPSILONS,
               pgd_steps: int = PGD_STEPS, seed: int = 0, batch_size: int = EVAL_BATCH,
               progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """One row per condition: perturbation, strength, label, n_images and every metric.

    ``batch_size`` images are scored (or attacked) at once, halved on out-of-memory.
    """
    labels = np.asarray(labels).astype(np.int64)
    rows = []
    for name, strength, label in conditions(jpeg_qualities, scales, noise_sigmas, epsilons):
        if progress is not None:
            progress(label)
        if name == "none":
            scores = detector.scores(images, batch_size)
        elif name == "jpeg":
            scores = detector.scores(jpeg(images, int(strength)), batch_size)
        elif name == "rescale":
            scores = detector.scores(rescale(images, strength), batch_size)
        elif name == "noise":
            scores = detector.scores(gaussian_noise(images, strength, seed), batch_size)
        elif name == "fgsm":
            scores = attacked_scores(detector, images, labels, fgsm, strength, batch_size)
        else:
            def attack(d: Detector, x: torch.Tensor, y: torch.Tensor, e: float) -> torch.Tensor:
                return pgd(d, x, y, e, steps=pgd_steps)

            scores = attacked_scores(detector, images, labels, attack, strength, batch_size)
        metrics = classification_metrics(labels, scores, detector.threshold)
        rows.append({"perturbation": name, "strength": strength, "condition": label,
                     "n_images": len(labels), "mean_score": float(np.mean(scores)), **metrics})
    return rows
