"""Helpers shared by the tests: real study directories, real image folders, checkpoint copies.

Usage: ``from helpers import write_cifake_folder`` in a test module (pytest puts ``tests/`` on
the import path, as it does for ``conftest.py``); fixtures stay in ``conftest.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

# The project's modules are imported where used: conftest imports this module, and the tests
# that need no torch (cluster configs, spaces) should not pay for importing it.
if TYPE_CHECKING:
    from results.tables import TrialOutcome

REPO = Path(__file__).resolve().parents[1]
# The real CIFAKE training split, where a checkout has one beside it (the project ships none).
CIFAKE_ZIP = REPO.parent / "shared" / "data" / "cifake-train.zip"



def poll(condition: Callable[[], Any], timeout: float, every: float) -> Any:
    """The first true value ``condition()`` gives, asked every ``every`` seconds; None once
    ``timeout`` seconds have passed without one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    return None


IDS = [f"test/{c}/{i}.png" for c in ("REAL", "FAKE") for i in range(4)]
LABELS = [0] * 4 + [1] * 4


def outcome(root: Path, trial_id: str, *, epochs: int = 3, seed: int = 0, batch_size: int = 32,
            accuracy: float = 0.75, scores: list[float] | None = None, labels: bool = True
            ) -> TrialOutcome:
    """A trial as a study ends with it: its reported history and a real checkpoint file."""
    import pandas as pd

    from results.tables import TrialOutcome
    from trainables.train import save_state

    history = pd.DataFrame([{
        "epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "val_accuracy": 0.5 + e / 10,
        "best_epoch": e, "best_val_loss": 1.1 / e, "test_accuracy": accuracy, "test_auc": 0.8,
        "threshold": 0.5, "train_seconds": float(e), "wall_seconds": e + 1.0,
        "images_per_second": 100.0 * e, "num_params": 1234, "n_train": 8, "n_val": 2,
        "n_test": 8, "node": "node-a", "device": "cpu", "lr": 1e-3, "epoch_seconds": 1.0,
        "stop_reason": "budget" if e == epochs else "", "restarts": 0,
    } for e in range(1, epochs + 1)])
    scores = scores if scores is not None else [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]
    folder = root / "checkpoints" / trial_id / f"checkpoint_{epochs:06d}"
    folder.mkdir(parents=True, exist_ok=True)
    state = {"best": {"test_scores": np.array(scores, dtype=np.float32), "threshold": 0.5},
             "test_ids": np.array(IDS)}
    if labels:
        state["test_labels"] = np.array(LABELS, dtype=np.int8)
    save_state(state, str(folder / "checkpoint.pt"))
    config = {"model": "small_cnn", "batch_size": batch_size, "epochs": epochs, "seed": seed}
    return TrialOutcome(trial_id, config, history, None, str(folder))


def info(name: str, created: str = "2025-01-02T03:04:05") -> dict:
    """What study.run writes to study.json."""
    return {"name": name, "space": {"name": "unit", "params": {}}, "overrides": {}, "seed": 0,
            "data_fingerprint": "abc", "data_source": "/data", "data_report": {"layout": "cifake"},
            "created": created, "versions": {"python": "3.x", "ray": "2.x", "torch": "2.y",
                                             "platform": "test-os"}}


def write(study_dir: Path, study: str, outcomes: list[TrialOutcome], **kw) -> list[str]:
    """A study directory's tables as ``study.run`` writes them; returns the paths written."""
    from results.tables import write_study_tables

    kw.setdefault("info", info(study))
    kw.setdefault("revision", "deadbeef")
    return write_study_tables(str(study_dir), study, outcomes, **kw)[1]


def smooth_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A 'photograph': a smooth random colour field (upsampled 4x4 noise)."""
    from PIL import Image

    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))


def generated_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A 'generated' image: the same kind of field with a periodic high-frequency pattern."""
    base = smooth_image(rng, size).astype(np.int16)
    checker = (np.indices((size, size)).sum(0) % 2 * 2 - 1)[..., None] * 24
    return np.clip(base + checker, 0, 255).astype(np.uint8)


def write_cifake_folder(root: Path, n_train: int = 48, n_test: int = 16, size: int = 16,
                        seed: int = 0) -> Path:
    """A real CIFAKE-layout folder of JPEG/PNG files: train/ and test/, REAL/ and FAKE/."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for label, make in (("REAL", smooth_image), ("FAKE", generated_image)):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                # PNG keeps the generated pattern exact; JPEG (as CIFAKE) for the real ones.
                ext = "png" if label == "FAKE" else "jpg"
                Image.fromarray(make(rng, size)).save(folder / f"{i}.{ext}")
    return root


def snapshot(state: dict) -> dict:
    """A copy of a checkpoint state as it would be on disk (state tensors alias the live model)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)
