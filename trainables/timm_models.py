"""timm's architectures as study candidates: ``model=timm/<name>`` (``pip install ".[timm]"``).

Usage:
    spec = timm_spec("timm/convnext_small")    # resolution and normalisation from timm's config
    model = spec.build(pretrained=False)         # two logits, REAL and FAKE

The input size and the normalisation are read from the model's own pretrained configuration
(``pretrained_cfg``), so a timm model is trained as timm trains it. Pretrained weights come from
the local Hugging Face cache only: a study never downloads; fetch them once where there is
network access (``python -m study.fetch_weights --timm <name>``, or ``huggingface-cli download
<hub id>``), and an uncached model fails at once with that advice.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from trainables.model_base import IMAGENET_MEAN, IMAGENET_STD, ModelSpec

PREFIX = "timm/"


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ImportError("timm models need timm: pip install '.[timm]' (or pip install "
                          "timm)") from None
    return timm


def is_timm_name(name: str) -> bool:
    return name.startswith(PREFIX)


def _normalize(cfg: dict[str, Any]) -> str | tuple[tuple[float, ...], tuple[float, ...]]:
    mean = tuple(float(v) for v in cfg.get("mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in cfg.get("std", IMAGENET_STD))
    if (mean, std) == (IMAGENET_MEAN, IMAGENET_STD):
        return "imagenet"
    if mean == (0.0, 0.0, 0.0) and std == (1.0, 1.0, 1.0):
        return "unit"
    return (mean, std)


def _cached(hub_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(hub_id, f), str)
               for f in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"))


def timm_spec(name: str) -> ModelSpec:
    """The ModelSpec of ``timm/<architecture>``; ValueError naming the fix for unknown ones."""
    timm = _timm()
    arch = name[len(PREFIX):]
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch.split('.')[0][:6]}*")[:8]
        raise ValueError(f"timm has no model {arch!r}" + (f"; similar: {', '.join(close)}"
                                                           if close else ""))
    cfg = timm.create_model(arch, pretrained=False, num_classes=2).pretrained_cfg
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    hub_id = cfg.get("hf_hub_id")

    def build(pretrained: bool = False) -> nn.Module:
        if not pretrained:
            return timm.create_model(arch, pretrained=False, num_classes=2)
        if not hub_id or not _cached(hub_id):
            raise RuntimeError(
                f"pretrained weights of timm model {arch!r} are not in the local Hugging Face "
                f"cache ({os.environ.get('HF_HOME', '~/.cache/huggingface')}); fetch them "
                f"where there is network access (huggingface-cli download {hub_id}) and copy "
                "the cache here, or set pretrained=false")
        before = os.environ.get("HF_HUB_OFFLINE")
        os.environ["HF_HUB_OFFLINE"] = "1"  # a study reads the cache, never the network
        try:
            return timm.create_model(arch, pretrained=True, num_classes=2)
        finally:
            if before is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = before

    return ModelSpec(name, build, size, (size,), _normalize(cfg),  # type: ignore[arg-type]
                     gpu_fraction=0.5 if size >= 160 else 0.25, pretrained=bool(hub_id),
                     description=f"timm's {arch} (two logits)")
