"""Shared fixtures: one real local Ray for the session, tiny real image folders, a tiny study.

Plain helper functions live in ``helpers.py``; this file holds fixtures, and the hook that
marks the tests using the costly ones `slow`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import write_cifake_folder

# Fixtures that cost tens of seconds on 2 cores the first time a session needs them (a real
# Ray, a Ray study, the sample data's build, in-process training): a test that uses any of them,
# directly or through another fixture, is `slow`, so `pytest -m "not slow"` never builds them.
SLOW_FIXTURES = frozenset({"ray_session", "tiny_study", "small_sample", "trained_states"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


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


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifake_folder(tmp_path_factory.mktemp("tiny") / "cifake")


@pytest.fixture(scope="session")
def data(tiny_data: Path):
    """The tiny folder, ingested (an ImageSet)."""
    from trainables.ingest import load_dataset

    return load_dataset(tiny_data, progress=False)


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
