"""Detectors from outside the package: ``load_plugins(["my_detectors", "path/to/mine.py"])``.

Usage:
    load_plugins(["my_detectors"])     # imports the module; its register_model(...) calls add
    check_model("my_detector")         # refuses one whose output does not fit, before a study

A plugin is a module, named by its dotted name or by the path of its ``.py`` file, that calls
``trainables.models.register_model(spec)`` for each model it offers (``spec`` from
``trainables.model_base.declare_model``, which declares its native resolution, normalisation
and GPU share like a built-in model). Installed packages can also offer models through the
entry-point group ``cifake_study.models``: every entry point of that group names such a module,
and ``load_plugins`` imports them all. Nothing is imported unless named here or installed under
that group; a name that clashes with a registered model is an error.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path

import torch

from trainables.config import ConfigError

ENTRY_POINT_GROUP = "cifake_study.models"


class PluginError(ConfigError):
    """A plugin that cannot be loaded or whose model does not fit; the message says why."""


def _import_path(path: Path) -> None:
    if not path.is_file():
        raise PluginError(f"plugin file {path} does not exist")
    name = "cifake_study_plugin_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    if name in sys.modules:  # loaded before in this process (a reused worker): once only
        return
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin file {path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def is_plugin_file(target: str) -> bool:
    """Whether a --plugin value names a .py file (else a dotted module name)."""
    return target.endswith(".py") or "/" in target


def load_plugins(names: Iterable[str] = (), installed: bool = True) -> None:
    """Import the plugin modules ``names`` (dotted names or .py paths) and, with
    ``installed``, those of the ``cifake_study.models`` entry points."""
    import trainables.models  # noqa: F401  the built-in models first: clashes are the plugin's

    targets = [(n, None) for n in names]
    if installed:
        targets += [(ep.value.split(":")[0], ep.name)
                    for ep in entry_points(group=ENTRY_POINT_GROUP)]
    for target, ep_name in targets:
        where = f"entry point {ep_name!r} ({target})" if ep_name else f"plugin {target!r}"
        try:
            if is_plugin_file(target):
                _import_path(Path(target).expanduser())
            else:
                importlib.import_module(target)
        except PluginError:
            raise
        except ModuleNotFoundError as exc:
            raise PluginError(f"{where}: cannot import it ({exc}); pass a module on the "
                              "Python path or the path of a .py file") from None
        except ValueError as exc:  # Registry.add: a name registered twice
            raise PluginError(f"{where}: {exc}; give the model a name of its own") from None


def check_model(name: str) -> None:
    """Build model ``name`` and run two images through it at its native resolution: its output
    must be floating-point logits of shape (2, 2) or (2, 1). PluginError naming what it gave."""
    from trainables.models import create_model, model_spec

    spec = model_spec(name)
    try:
        model = create_model(name).eval()
        with torch.no_grad():
            out = model(torch.zeros(2, 3, spec.resolution, spec.resolution))
    except Exception as exc:
        raise PluginError(f"model {name!r} fails on a batch of 2 images of 3x{spec.resolution}"
                          f"x{spec.resolution} (its declared resolution): "
                          f"{type(exc).__name__}: {exc}") from None
    if (not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2
            or out.shape[1] not in (1, 2) or not out.is_floating_point()):
        got = (f"{tuple(out.shape)} {out.dtype}" if isinstance(out, torch.Tensor)
               else type(out).__name__)
        raise PluginError(f"model {name!r} must return floating-point logits of shape (N, 2) "
                          f"(REAL, FAKE) or (N, 1) (FAKE); for N=2 it returned {got}")
