"""The model registry: ``create_model(name)``, ``MODELS.names()``, ``model_spec(name)``.

This module holds the registry and imports no model. A model module declares its factories with
``@declare_model(...)`` and lists them in ``SPECS``; ``trainables.model_zoo.register_all`` adds
every model module's specs, explicitly and in one place, on the registry's first lookup, so any
entry point (the driver, a Ray worker, a test) sees every model without importing one itself.

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


def _register_every_model(registry: Registry[ModelSpec]) -> None:
    from trainables.model_zoo import register_all  # late: the model modules import this one

    register_all(registry)


MODELS: Registry[ModelSpec] = Registry("model", populate=_register_every_model)


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


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add one model to ``MODELS`` (a duplicate name is an error)."""
    MODELS.add(spec.name, spec)
    return spec




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
