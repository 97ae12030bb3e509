"""Every model, registered in one explicit place: ``register_all(MODELS)``.

Usage: nothing to call; ``trainables.models.MODELS`` runs ``register_all`` on its first lookup, so
``create_model(name)``, ``model_spec(name)`` and ``MODELS.names()`` see every model from any
entry point. A new model module lists its ``@declare_model`` factories in ``SPECS`` and is added
to ``MODULES`` here.
"""

from __future__ import annotations

from trainables import baselines, fast, zoo
from trainables.models import ModelSpec
from trainables.registry import Registry

# The project's baselines, the seed papers' models, then the fast recipe's CNNs.
MODULES = (baselines, zoo, fast)


def register_all(registry: Registry[ModelSpec]) -> None:
    for module in MODULES:
        for spec in module.SPECS:
            registry.add(spec.name, spec)
