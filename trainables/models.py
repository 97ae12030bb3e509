"""The model registry: ``create_model(name)``, ``MODELS.names()``, ``model_spec(name)``.

Every model is registered here, explicitly and in one place (as ``search_spaces`` registers its
spaces): the model modules declare their factories with ``trainables.model_base.declare_model``
and list them in ``SPECS``, and import nothing from this module, so no import order matters and
any entry point (the driver, a Ray worker, a test) sees every model.
"""

from __future__ import annotations

from torch import nn

from trainables import baselines, fast, zoo
from trainables.model_base import ModelSpec
from trainables.registry import Registry, UnknownNameError
from trainables.timm_models import is_timm_name, timm_spec

MODELS: Registry[ModelSpec] = Registry("model")


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add one model to ``MODELS`` (a duplicate name is an error)."""
    MODELS.add(spec.name, spec)
    return spec


def model_spec(name: str) -> ModelSpec:
    """The spec of a registered model, or of ``timm/<architecture>`` (registered on first
    use, so that it is then a model like any other)."""
    if is_timm_name(name) and name not in MODELS:
        try:
            register_model(timm_spec(name))
        except ValueError as exc:
            raise UnknownNameError(f"unknown model {name!r}: {exc}") from None
    return MODELS.get(name)


def create_model(name: str, pretrained: bool = False) -> nn.Module:
    spec = model_spec(name)
    if pretrained and not spec.pretrained:
        raise ValueError(f"model {name!r} has no pretrained weights; set pretrained=False")
    return spec.build(pretrained=pretrained)


# The project's baselines, the seed papers' models, then the fast recipe's CNNs.
for _module in (baselines, zoo, fast):
    for _spec in _module.SPECS:
        register_model(_spec)
BUILT_IN_MODELS = frozenset(MODELS.names())  # before any plugin or timm model
