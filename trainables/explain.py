"""Grad-CAM heat maps (Selvaraju et al. 2017), as Bird & Lotfi used them to explain CIFAKE.

Usage:
    cams, scores = grad_cam(detector, images)            # (N, H, W) in [0, 1], (N,) scores
    name, layer = last_conv2d(detector.model)            # the layer explained, chosen per model
    rgb = overlay(images[0], cams[0])                    # (H, W, 3) float in [0, 1]

The explained quantity is the detector's decision statistic (``Detector.decision``: the log-odds
of FAKE, or the anomaly score), so a hot region is one that pushed the image towards FAKE. With
``target="predicted"`` (the default) the statistic is negated for images predicted REAL, so the
map shows the evidence for whichever class the model chose, as Grad-CAM does for the class score.
The layer is the model's last ``nn.Conv2d``; its output (before any normalisation or activation)
gives the feature maps A^k, and the weights are the spatial means of d(statistic)/dA^k.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainables.device import halving_on_oom
from trainables.inference import EVAL_BATCH, Detector

TARGETS = ("predicted", "fake")


def last_conv2d(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """(qualified name, module) of the last ``nn.Conv2d`` in registration order."""
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not found:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer for Grad-CAM to explain")
    return found[-1]


def grad_cam(detector: Detector, images: np.ndarray, target: str = "predicted",
             layer: nn.Module | None = None, batch_size: int = EVAL_BATCH
             ) -> tuple[np.ndarray, np.ndarray]:
    """Heat maps (N, H, W) in [0, 1] at the images' size, and the detector's scores (N,)."""
    if target not in TARGETS:
        raise ValueError(f"unknown Grad-CAM target {target!r}; use one of {TARGETS}")
    layer = layer if layer is not None else last_conv2d(detector.model)[1]
    captured: list[torch.Tensor] = []

    def hook(_: nn.Module, __: object, output: torch.Tensor) -> torch.Tensor:
        captured.append(output)
        # Hand a copy on, so an in-place activation next (ReLU(inplace=True)) cannot modify the
        # captured maps or their gradient.
        return output.clone()

    def one(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        captured.clear()
        try:
            # The parameters are frozen: the input carries the graph to the maps.
            x = detector.to_unit(images[start:stop]).requires_grad_(True)
            with torch.enable_grad():
                stat = detector.decision(x)
                sign = torch.ones_like(stat)
                if target == "predicted":
                    sign = torch.where(stat >= detector.decision_threshold, 1.0, -1.0)
                grads = torch.autograd.grad((sign * stat).sum(), captured)
            # One forward pass, or two with test-time flip averaging (the image, then its
            # mirror): each pass's weighted maps count, the mirror's flipped back into place.
            cam = torch.zeros(())
            for j, (maps, grad) in enumerate(zip(captured, grads, strict=True)):
                part = (grad.mean(dim=(2, 3), keepdim=True) * maps).sum(1, keepdim=True)
                cam = cam + (part.flip(-1) if j == 1 else part)
            cam = F.relu(cam).detach()
            cam = F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear",
                                align_corners=False)
            peak = cam.flatten(1).max(1).values.view(-1, 1, 1, 1)
            with torch.no_grad():
                score = detector.score_unit(x.detach()).cpu()
            return (cam / peak.clamp_min(1e-12)).squeeze(1).cpu(), score
        finally:
            captured.clear()  # an out-of-memory retry must not keep the failed batch's maps

    handle = layer.register_forward_hook(hook)
    try:
        # Input gradients through the whole network: a batch that runs out of GPU memory is
        # retried at half the size; each image's map does not depend on its batch (eval mode).
        parts = halving_on_oom(one, len(images), batch_size, detector.device)
    finally:
        handle.remove()
    cams = [c for c, _ in parts]
    scores = [sc for _, sc in parts]
    if not cams:
        return np.zeros((0, *images.shape[1:3]), np.float32), np.zeros(0, np.float32)
    return torch.cat(cams).numpy().astype(np.float32), torch.cat(scores).numpy()


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45, cmap: str = "jet",
            size: int | None = None) -> np.ndarray:
    """The image (H, W, 3) uint8 blended with the coloured heat map; float RGB in [0, 1].

    ``size`` enlarges both for display: the image's pixels stay sharp (nearest neighbour), the
    heat map is smooth (bilinear), so a 32-pixel image stays readable under its map.
    """
    import matplotlib
    from PIL import Image

    if size:
        image = np.asarray(Image.fromarray(image).resize((size, size),
                                                         Image.Resampling.NEAREST))
        cam = np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize(
            (size, size), Image.Resampling.BILINEAR))
    heat = matplotlib.colormaps[cmap](np.clip(cam, 0.0, 1.0))[..., :3]
    return np.clip((1 - alpha) * image.astype(np.float32) / 255.0 + alpha * heat, 0.0, 1.0)


def describe_layer(name: str, layer: nn.Conv2d) -> str:
    """E.g. "2.0 (Conv2d 32->64, 3x3)": sequential models name layers by position only."""
    k = "x".join(map(str, layer.kernel_size))
    return f"{name} (Conv2d {layer.in_channels}->{layer.out_channels}, {k})"
