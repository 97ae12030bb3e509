"""Checkpoint files that hold data, never code: ``save(state, path)``, ``load(path)``.

Usage:
    save(run.state(), "checkpoint.pt")
    state = load("checkpoint.pt")            # refuses any file that would run code
    state = load(blob_bytes)                 # the same, from bytes read off any storage

A checkpoint is a ``torch.save`` file read back with ``torch.load(weights_only=True)``: tensors,
numbers, strings, lists and dicts only, so a file planted in a study directory (on S3, NFS or a
colleague's disk) cannot execute anything when ``study.predict``, ``study.evaluate`` or a resume
reads it. Numpy arrays, which the training state holds (test scores, image ids), are stored as
tensors or lists of strings under a marker and come back as numpy; an object shared between
several places (a folded run's unchanged best records) is stored once and comes back shared.

Checkpoints written before this format pickled numpy objects and cannot be read this way.
Reading one runs the pickle machinery, which can execute code, so it needs an explicit
``--trust-checkpoints`` (or ``CIFAKE_STUDY_TRUST_CHECKPOINTS=1``): only for files you made.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

TRUST_ENV = "CIFAKE_STUDY_TRUST_CHECKPOINTS"  # "1": also read pickled (older) checkpoints
_ARRAY = "__ndarray__"  # marker: a numeric numpy array stored as a tensor
_STRINGS = "__strings__"  # marker: a numpy array of strings stored as a (nested) list
_SHAPE = "__shape__"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read safely; the message says why and what to do."""


def trusted() -> bool:
    """Whether pickled checkpoints may be read (``--trust-checkpoints`` was given)."""
    return os.environ.get(TRUST_ENV, "") == "1"


def trust_checkpoints() -> None:
    """Allow pickled checkpoints in this process and in the Ray workers it starts."""
    os.environ[TRUST_ENV] = "1"


def encode(obj: Any, memo: dict[int, Any] | None = None) -> Any:
    """``obj`` with numpy arrays and scalars replaced by what ``weights_only`` loading reads."""
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "biuf":
            out: Any = {_ARRAY: torch.from_numpy(np.ascontiguousarray(obj)).clone()}
        elif obj.dtype.kind in "USO":
            out = {_STRINGS: np.asarray(obj).astype(str).tolist(), _SHAPE: list(obj.shape)}
        else:
            raise TypeError(f"cannot store a numpy array of dtype {obj.dtype} in a checkpoint")
    elif isinstance(obj, np.generic):
        out = obj.item()
    elif isinstance(obj, dict):
        out = {}
        memo[id(obj)] = out
        out.update({k: encode(v, memo) for k, v in obj.items()})
        return out
    elif isinstance(obj, (list, tuple)):
        out = type(obj)(encode(v, memo) for v in obj)
    else:
        return obj
    memo[id(obj)] = out
    return out


def decode(obj: Any, memo: dict[int, Any] | None = None) -> Any:
    """The inverse of ``encode``."""
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, dict):
        if set(obj) == {_ARRAY}:
            out: Any = obj[_ARRAY].numpy()
        elif set(obj) == {_STRINGS, _SHAPE}:
            out = np.array(obj[_STRINGS], dtype=str).reshape(obj[_SHAPE])
        else:
            out = {}
            memo[id(obj)] = out
            out.update({k: decode(v, memo) for k, v in obj.items()})
            return out
    elif isinstance(obj, (list, tuple)):
        out = type(obj)(decode(v, memo) for v in obj)
    else:
        return obj
    memo[id(obj)] = out
    return out


def save(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a checkpoint atomically enough for Tune: to a buffer, then one write."""
    buf = io.BytesIO()
    torch.save(encode(state), buf)
    Path(path).write_bytes(buf.getvalue())


def load(source: str | os.PathLike[str] | bytes, map_location: str | torch.device = "cpu"
         ) -> dict[str, Any]:
    """A checkpoint from its path or bytes, read without executing anything in it.

    CheckpointError for a file that needs the pickle machinery (an older checkpoint, or a
    planted one) unless ``trusted()``; then it is read the old way.
    """
    name = "the checkpoint" if isinstance(source, bytes) else str(source)
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        raw = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trusted():
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"{name} holds pickled Python objects, which could run code when loaded "
                f"({first[:300]}). It was written by an older version of this project, or by "
                "someone else. It was not loaded. If you made it yourself, load it with "
                f"--trust-checkpoints (or {TRUST_ENV}=1); otherwise rerun the trial") from None
        raw = torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{name} is not a checkpoint of this project (it holds a "
                              f"{type(raw).__name__}, not a dict)")
    return decode(raw)
