"""What a model module declares: ``@declare_model(...)`` factories and their ``ModelSpec``.

Usage (in a model module such as ``trainables.zoo``):
    @declare_model("purba_cnn1", resolution=32, normalize="unit")
    def purba_cnn1(pretrained: bool = False) -> nn.Module: ...
    SPECS = (purba_cnn1, ...)          # trainables.models registers them

Every model returns logits of shape (N, 2) (softmax over REAL, FAKE) or (N, 1) (sigmoid of FAKE),
whichever its paper used, so parameter counts match the papers exactly. Anomaly detectors also
define ``loss(x, y)`` and ``score(x)`` (higher = more likely generated); see ``AnomalyDetector``.
This module knows no model and registers nothing: ``trainables.models`` does, in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[..., nn.Module]  # build(pretrained: bool) -> nn.Module
    resolution: int  # native input size in pixels (square)
    resolutions: tuple[int, ...]  # every size the model is tested at
    normalize: str  # "unit": x / 255; "imagenet": ImageNet mean and standard deviation
    gpu_fraction: float  # default share of one GPU per trial (packs small models)
    pretrained: bool  # whether ImageNet weights exist for it
    description: str


def declare_model(
    name: str,
    *,
    resolution: int = 32,
    resolutions: tuple[int, ...] | None = None,
    normalize: str = "unit",
    gpu_fraction: float = 0.25,
    pretrained: bool = False,
) -> Callable[[Callable[..., nn.Module]], ModelSpec]:
    """Turn a factory ``build(pretrained) -> nn.Module`` into its ``ModelSpec`` (no registration).

    The factory's first docstring line becomes the description.
    """

    def decorator(build: Callable[..., nn.Module]) -> ModelSpec:
        doc = (build.__doc__ or "").strip().splitlines()
        return ModelSpec(name, build, resolution, resolutions or (resolution,), normalize,
                         gpu_fraction, pretrained, doc[0] if doc else "")

    return decorator


def input_normalization(spec: ModelSpec, choice: str = "model") -> Any:
    """What a trial normalises its inputs with: the model's own, unless a space chose
    ``"unit"`` or ``"imagenet"`` (TrainConfig.normalize) as its paper did."""
    return spec.normalize if choice == "model" else choice


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@runtime_checkable
class AnomalyDetector(Protocol):
    """A model trained on REAL images only; its score is thresholded on the validation set."""

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def score(self, x: torch.Tensor) -> torch.Tensor: ...


def load_imagenet_weights(weights_enum: object) -> object:
    """Resolve torchvision weights; fail fast (never hang) when uncached and offline."""
    import os
    from pathlib import Path

    weights = weights_enum.DEFAULT  # type: ignore[attr-defined]
    hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
    filename = os.path.basename(weights.url)
    if not (hub_dir / filename).exists() and os.environ.get("CIFAKE_STUDY_OFFLINE", "") != "0":
        import socket

        try:
            socket.create_connection(("download.pytorch.org", 443), timeout=3).close()
        except OSError:
            raise RuntimeError(
                f"pretrained weights {filename} are not in the torch hub cache ({hub_dir}) and "
                "the download server cannot be reached. Pre-fetch them on a machine with network "
                f"access (python -m study.fetch_weights) and copy {filename} into {hub_dir}, "
                "or set pretrained=False"
            ) from None
    return weights
