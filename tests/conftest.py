"""Shared fixtures: one real local Ray for the session, tiny real image folders, a tiny study."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CIFAKE_ZIP = REPO.parent / "shared" / "data" / "cifake-train.zip"


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Ingest caches go to a temporary folder, never the user's ~/.cache."""
    os.environ["CIFAKE_STUDY_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    os.environ["TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"] = "0"


@pytest.fixture(scope="session")
def ray_session():
    """One real local Ray instance (2 CPUs) shared by every test that needs Ray."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


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


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifake_folder(tmp_path_factory.mktemp("tiny") / "cifake")


@pytest.fixture(scope="session")
def data(tiny_data: Path):
    """The tiny folder, ingested (an ImageSet)."""
    from trainables.ingest import load_dataset

    return load_dataset(tiny_data, progress=False)


def snapshot(state: dict) -> dict:
    """A copy of a checkpoint state as it would be on disk (state tensors alias the live model)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


@pytest.fixture(scope="session")
def small_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smaller build of the embedded sample data (400 + 150 images per class)."""
    from trainables.sample import build_sample

    return build_sample(seed=0, n_train=400, n_test=150, ae_steps=300,
                        root=tmp_path_factory.mktemp("sample"))


@pytest.fixture(scope="session")
def tiny_study(ray_session, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished quickstart study on tiny data (6 trials, 3 epochs, ASHA at epoch 2)."""
    from study.run import main

    storage = tmp_path_factory.mktemp("studies")
    code = main(["--space", "quickstart", "--data", str(tiny_data), "--storage", str(storage),
                 "--name", "tiny", "--set", "epochs=3", "--set", "image_size=16", "--quiet"])
    assert code == 0
    return storage / "tiny"


@pytest.fixture
def study_copy(tiny_study: Path, tmp_path: Path) -> Path:
    """A copy of the tiny study for tests that write into it (the session's stays pristine)."""
    import shutil

    return Path(shutil.copytree(tiny_study, tmp_path / "tiny"))


@pytest.fixture(scope="session")
def trained_states(tiny_data: Path) -> dict:
    """Checkpoint states trained in-process (no Ray) on the tiny data, by model name.

    small_cnn reaches test accuracy 1.0 in 8 epochs, so attacks and explanations have a model
    that is right to start with; vae_detector is the anomaly detector.
    """
    from trainables.config import TrainConfig
    from trainables.ingest import load_dataset
    from trainables.train import train

    data = load_dataset(tiny_data, progress=False)
    out: dict = {}
    for model, epochs, lr in (("small_cnn", 8, 3e-3), ("vae_detector", 3, 1e-3)):

        def keep_last(metrics: dict, state, model: str = model) -> None:
            if metrics["stop_reason"]:
                out[model] = state()

        config = TrainConfig(model=model, epochs=epochs, batch_size=16, lr=lr, image_size=16)
        train(config, data, device="cpu", on_epoch=keep_last)
    return out
