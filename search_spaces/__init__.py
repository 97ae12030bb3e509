"""Named search spaces: ``get_space(name)``, ``space_names()``; one module per space."""

from __future__ import annotations

from search_spaces.base import Asha, Param, Space, SpaceError, choice, grid, loguniform, uniform
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
from search_spaces import cifake_grid, quickstart  # noqa: E402

for _module in (cifake_grid, quickstart):
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
    "space_names",
    "uniform",
]
