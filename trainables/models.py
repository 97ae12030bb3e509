"""The model registry: ``create_model(name)``, ``MODELS.names()``, ``model_spec(name)``.

Every model returns logits of shape (N, 2) (softmax over REAL, FAKE) or (N, 1) (sigmoid of FAKE),
whichever its paper used, so parameter counts match the papers exactly. Anomaly detectors also
define ``loss(x, y)`` and ``score(x)`` (higher = more likely generated); see ``AnomalyDetector``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from trainables.registry import Registry

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


MODELS: Registry[ModelSpec] = Registry("model")


def register_model(
    name: str,
    *,
    resolution: int = 32,
    resolutions: tuple[int, ...] | None = None,
    normalize: str = "unit",
    gpu_fraction: float = 0.25,
    pretrained: bool = False,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorator(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        doc = (build.__doc__ or "").strip().splitlines()
        MODELS.add(
            name,
            ModelSpec(name, build, resolution, resolutions or (resolution,), normalize,
                      gpu_fraction, pretrained, doc[0] if doc else ""),
        )
        return build

    return decorator


def model_spec(name: str) -> ModelSpec:
    return MODELS.get(name)


def create_model(name: str, pretrained: bool = False) -> nn.Module:
    spec = MODELS.get(name)
    if pretrained and not spec.pretrained:
        raise ValueError(f"model {name!r} has no pretrained weights; set pretrained=False")
    return spec.build(pretrained=pretrained)


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


# ---------------------------------------------------------------------------------------------
# Base models; the seed papers' models live in trainables.zoo


@register_model("small_cnn", resolution=32, resolutions=(32, 64), gpu_fraction=0.25)
def small_cnn(pretrained: bool = False) -> nn.Module:
    """A small fast CNN (3 conv blocks with batch norm, global pooling), for quick studies."""

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )

    return nn.Sequential(
        block(3, 16), block(16, 32), block(32, 64),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 2),
    )


@register_model("resnet18", resolution=224, resolutions=(224, 64), normalize="imagenet",
                gpu_fraction=1.0, pretrained=True)
def resnet18(pretrained: bool = False) -> nn.Module:
    """ResNet-18 as fine-tuned by Kumar: ImageNet stem, 224x224 input, two-way head."""
    from torchvision.models import ResNet18_Weights
    from torchvision.models import resnet18 as tv_resnet18

    weights = load_imagenet_weights(ResNet18_Weights) if pretrained else None
    model = tv_resnet18(weights=weights)
    model.fc = nn.Linear(model.fc.in_features, 2)
    return model


@register_model("resnet18_cifar", resolution=32, resolutions=(32,), gpu_fraction=0.5)
def resnet18_cifar(pretrained: bool = False) -> nn.Module:
    """ResNet-18 with a CIFAR-style stem (3x3 conv, stride 1, no max-pool) for 32x32 input."""
    from torchvision.models import resnet18 as tv_resnet18

    model = tv_resnet18(weights=None, num_classes=2)
    model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


import trainables.fast  # noqa: E402  registers cifake_fast and its variants
import trainables.zoo  # noqa: E402,F401  registers the seed papers' models
