"""Search spaces from YAML or JSON files, and built-in spaces written out as files.

Usage:
    space = resolve_space("cifake_grid")          # a built-in space, by name
    space = resolve_space("my_space.yaml")        # a file (.yaml, .yml or .json)
    write_space_file(get_space("cifake_grid"), "my_space.yaml")   # a file to start from

A file holds the same validated schema as the built-in spaces, with one key per parameter kind:

    name: my_space
    description: two CNNs x two batch sizes, ASHA
    search: grid                 # grid | random | optuna_tpe
    num_samples: 1
    metric: val_accuracy
    mode: max
    asha: {grace_period: 1, reduction_factor: 2}     # or null: no early stopping
    params:
      model: {grid: [small_cnn, purba_cnn1]}
      batch_size: {grid: [32, 64]}
      lr: {loguniform: [1.0e-4, 1.0e-2]}             # also uniform, randint ([low, high))
      augment: {choice: [true, false]}               # random and optuna_tpe searches
      pretrained: {per_model: {small_cnn: false, purba_cnn1: false}}
    fixed:
      epochs: 10

Every error names the file, the key and its line. YAML is read with ``yaml.safe_load``'s loader
(no tags that construct objects), so a space file, like everything else a study reads, cannot
run code.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from search_spaces import SPACES, get_space
from search_spaces.base import Asha, Param, Space, SpaceError

SUFFIXES = (".yaml", ".yml", ".json")
TOP_KEYS = ("name", "description", "search", "num_samples", "metric", "mode", "asha", "params",
            "fixed", "paper", "data_hint", "chosen")
RANGES = ("uniform", "loguniform", "randint")


def is_space_file(arg: str) -> bool:
    """Whether ``--space`` names a file rather than a built-in space."""
    return arg.lower().endswith(SUFFIXES) or ("/" in arg and Path(arg).exists())


def resolve_space(arg: str) -> Space:
    """The space ``--space`` names: a built-in one, or one read from a file."""
    return load_space_file(arg) if is_space_file(arg) else get_space(arg)


class _Lines:
    """Line numbers (1-based) of the keys of a YAML document, by key path."""

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[str, ...], int] = {}
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            self._walk(node, ())

    def _walk(self, node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, str(key.value))
                self.lines.setdefault(sub, key.start_mark.line + 1)
                self._walk(value, sub)

    def of(self, *path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None


def _error(source: str, lines: _Lines, path: tuple[str, ...], msg: str) -> SpaceError:
    line = lines.of(*path)
    where = f"{source}, line {line}" if line else source
    key = ".".join(path)
    return SpaceError(f"{where}: {key + ': ' if key else ''}{msg}")


def _param(source: str, lines: _Lines, key: str, spec: Any) -> Param:
    path = ("params", key)
    kinds = "grid, choice, uniform, loguniform, randint or per_model"
    if not isinstance(spec, dict) or len(spec) != 1:
        raise _error(source, lines, path, f"give exactly one of {kinds}, e.g. "
                     f"'{key}: {{grid: [a, b]}}' (got {spec!r})")
    (kind, value), = spec.items()
    if kind in ("grid", "choice"):
        if not isinstance(value, list) or not value:
            raise _error(source, lines, path, f"{kind} needs a non-empty list of values")
        return Param(kind, tuple(value))
    if kind in RANGES:
        if (not isinstance(value, list) or len(value) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           for v in value)):
            raise _error(source, lines, path, f"{kind} needs [low, high] (two numbers)")
        return Param(kind, low=value[0], high=value[1])
    if kind == "per_model":
        if not isinstance(value, dict) or not value:
            raise _error(source, lines, path, "per_model needs a mapping of model -> value")
        return Param(kind, tuple(sorted(value.items())))
    raise _error(source, lines, path, f"unknown kind {kind!r}; use one of {kinds}")


def space_from_dict(d: Any, source: str = "<space>", text: str = "") -> Space:
    """A validated Space from a file's parsed content; errors name the key and its line."""
    lines = _Lines(text) if text else _Lines("")
    if not isinstance(d, dict):
        raise _error(source, lines, (), "a space file holds a mapping of keys (name, params, "
                     f"...); got {type(d).__name__}")
    unknown = [k for k in d if k not in TOP_KEYS]
    if unknown:
        raise _error(source, lines, (str(unknown[0]),), f"unknown key; a space has "
                     f"{', '.join(TOP_KEYS)}")
    for key in ("name", "params"):
        if key not in d:
            raise _error(source, lines, (), f"the key {key!r} is missing")
    if not isinstance(d["name"], str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", d["name"]):
        raise _error(source, lines, ("name",), "a name of letters, digits, '_', '.' or '-'")
    if d["name"] in SPACES.names():
        raise _error(source, lines, ("name",), f"{d['name']!r} is a built-in space; give "
                     "your space a name of its own (or pass --space "
                     f"{d['name']} for the built-in one)")
    if not isinstance(d["params"], dict):
        raise _error(source, lines, ("params",), "a mapping of hyperparameter -> values")
    params = {str(k): _param(source, lines, str(k), v) for k, v in d["params"].items()}
    fixed = d.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise _error(source, lines, ("fixed",), "a mapping of hyperparameter -> value")
    asha = d.get("asha", {})
    if asha not in (None, False):
        if not isinstance(asha, dict) or set(asha) - {"grace_period", "reduction_factor"}:
            raise _error(source, lines, ("asha",), "null, or {grace_period: N, "
                         "reduction_factor: N}")
    kwargs = {k: d[k] for k in ("description", "search", "num_samples", "metric", "mode",
                                "paper", "data_hint", "chosen") if k in d}
    try:
        space = Space(name=d["name"], description=str(d.get("description", "")),
                      params=params, fixed=dict(fixed),
                      asha=Asha(**asha) if asha not in (None, False) else None,
                      **{k: v for k, v in kwargs.items() if k != "description"})
        return space.validate()
    except (SpaceError, TypeError, ValueError) as exc:
        raise _error(source, lines, _path_in(str(exc), d), _strip(str(exc))) from None


def _strip(msg: str) -> str:
    return re.sub(r"^space '[^']*': ", "", msg)


def _path_in(msg: str, d: dict[str, Any]) -> tuple[str, ...]:
    """The key path a validation message is about: the first quoted name it mentions that
    is a key of the file (a parameter, a fixed value or a top-level key)."""
    text = _strip(msg)
    for name in [*re.findall(r"'([^']+)'", text), *re.findall(r"\b(\w+)=", text)]:
        for section in ("params", "fixed"):
            if name in (d.get(section) or {}):
                return (section, name)
        if name in d:
            return (name,)
    for word in re.findall(r"[A-Za-z_]+", text):
        if word in d:
            return (word,)
    return ()


def load_space_file(path: str | Path) -> Space:
    """The space a YAML or JSON file declares; SpaceError naming the key and line if not."""
    path = Path(path).expanduser()
    source = str(path)
    if not path.is_file():
        raise SpaceError(f"no space file {source}; --space takes a built-in space "
                         f"({', '.join(SPACES.names())}) or a .yaml/.json file")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpaceError(f"{source}, line {exc.lineno}: not valid JSON ({exc.msg})"
                             ) from None
    else:
        try:
            d = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{source}, line {mark.line + 1}" if mark else source
            problem = getattr(exc, "problem", None) or str(exc)
            raise SpaceError(f"{where}: not valid YAML ({problem})") from None
    return space_from_dict(d, source, text)


def space_to_dict(space: Space) -> dict[str, Any]:
    """The file form of a space (the inverse of ``space_from_dict``)."""
    def param(p: Param) -> dict[str, Any]:
        if p.kind in ("grid", "choice"):
            return {p.kind: list(p.values)}
        if p.kind == "per_model":
            return {p.kind: dict(p.values)}
        return {p.kind: [p.low, p.high]}

    out: dict[str, Any] = {
        "name": space.name, "description": space.description, "search": space.search,
        "num_samples": space.num_samples, "metric": space.metric, "mode": space.mode,
        "asha": ({"grace_period": space.asha.grace_period,
                  "reduction_factor": space.asha.reduction_factor} if space.asha else None),
        "params": {k: param(p) for k, p in space.params.items()},
        "fixed": dict(space.fixed),
    }
    for key in ("paper", "data_hint", "chosen"):
        if getattr(space, key):
            out[key] = getattr(space, key)
    return out


def write_space_file(space: Space, path: str | Path, name: str | None = None) -> Path:
    """Write ``space`` as a YAML (or, for .json, JSON) file; ``name`` renames it (a file may
    not reuse a built-in space's name). Refuses to overwrite an existing file."""
    path = Path(path).expanduser()
    if path.suffix.lower() not in SUFFIXES:
        raise SpaceError(f"--export {path}: name a .yaml, .yml or .json file")
    if path.exists():
        raise SpaceError(f"--export {path}: the file exists; remove it or name another")
    d = space_to_dict(space)
    d["name"] = name or (f"my_{space.name}" if space.name in SPACES.names() else space.name)
    if path.suffix.lower() == ".json":
        text = json.dumps(d, indent=2) + "\n"
    else:
        header = (f"# Search space written from the built-in space {space.name!r}; the schema is"
                  " described in search_spaces/files.py.\n")
        text = header + yaml.safe_dump(d, sort_keys=False, default_flow_style=None)
    path.write_text(text, encoding="utf-8")
    return path
