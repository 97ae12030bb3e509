"""Named search spaces: ``get_space(name)``, ``space_names()``; one module per space."""

from __future__ import annotations

from search_spaces.base import (
    Asha,
    Param,
    Space,
    SpaceError,
    choice,
    grid,
    loguniform,
    per_model,
    uniform,
)
from trainables.registry import Registry

SPACES: Registry[Space] = Registry("space")


def register_space(space: Space) -> Space:
    SPACES.add(space.name, space)
    return space


def get_space(name: str) -> Space:
    return SPACES.get(name).validate()


def space_names() -> list[str]:
    return SPACES.names()


# Registration happens here, explicitly, so importing one space module has no hidden effects.
from search_spaces import (  # noqa: E402
    bartos_batch,
    bartos_split,
    bartos_vae_mse,
    cifake_fast_search,
    cifake_grid,
    cifake_tpe,
    generalise,
    iacob_genimage,
    kumar_resnet18,
    prudhvi_resnet50,
    purba_cnns,
    quickstart,
)

# The seed papers' protocols (one space per experiment), then the project's own studies.
for _module in (bartos_split, bartos_batch, bartos_vae_mse, kumar_resnet18, purba_cnns,
                iacob_genimage, prudhvi_resnet50, cifake_grid, cifake_tpe, cifake_fast_search,
                generalise, quickstart):
    register_space(_module.SPACE)

__all__ = [
    "SPACES",
    "Asha",
    "Param",
    "Space",
    "SpaceError",
    "choice",
    "get_space",
    "grid",
    "loguniform",
    "per_model",
    "space_names",
    "uniform",
]
