"""Grad-CAM: the layer chosen per model, maps that point at the evidence, study.explain.

Usage: ``python -m pytest tests/test_explain.py``
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import smooth_image
from oom import out_of_memory_above
from PIL import Image
from torch import nn

from study.explain import main
from study.trials import best_trial
from trainables.config import TrainConfig
from trainables.dataset import ImageSet
from trainables.explain import grad_cam, last_conv2d, overlay
from trainables.inference import Detector
from trainables.models import MODELS, create_model
from trainables.train import train


@pytest.mark.parametrize("name", MODELS.names())
def test_last_conv2d_is_found_for_every_registered_model(name: str) -> None:
    model = create_model(name)
    layer_name, layer = last_conv2d(model)
    assert isinstance(layer, nn.Conv2d)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert layer_name == names[-1]


def test_a_model_without_convolutions_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no Conv2d layer"):
        last_conv2d(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)))


def quadrant_data(n: int = 64, size: int = 16, seed: int = 0) -> ImageSet:
    """FAKE = a smooth image with a checker pattern in its top-left quadrant only."""
    rng = np.random.default_rng(seed)
    checker = ((np.indices((size, size)).sum(0) % 2) * 2 - 1) * 32
    checker[size // 2 :, :] = 0
    checker[:, size // 2 :] = 0
    images, labels, split = [], [], []
    for k in range(n):
        for label in (0, 1):
            image = smooth_image(rng, size).astype(int) + label * checker[..., None]
            images.append(np.clip(image, 0, 255).astype(np.uint8))
            labels.append(label)
            split.append("test" if k < n // 4 else "train")
    paths = [f"{i}.png" for i in range(len(images))]
    manifest = pd.DataFrame({"path": paths, "label": np.array(labels, np.int8), "split": split,
                             "generator": "", "content_hash": paths})  # no duplicates
    return ImageSet(np.stack(images), manifest, "quadrant", "quadrant", "generic", {})


@pytest.mark.slow  # trains a detector: ~20 s
def test_grad_cam_points_at_the_region_holding_the_fake_evidence() -> None:
    data = quadrant_data()
    states = []

    def keep_last(metrics: dict, state) -> None:
        if metrics["stop_reason"]:
            states.append(state())

    train(TrainConfig(model="small_cnn", epochs=12, batch_size=16, lr=3e-3), data,
          device="cpu", on_epoch=keep_last)
    detector = Detector.from_state(states[-1])
    test = data.manifest["split"].to_numpy() == "test"
    fake = data.images[test & (data.labels == 1)]
    cams, scores = grad_cam(detector, fake)
    assert (scores >= 0.5).mean() >= 0.75  # the model found the pattern
    share = cams[:, :8, :8].sum((1, 2)) / cams.sum((1, 2))
    # A uniform map would put a quarter of its weight on the quadrant.
    assert share.mean() > 0.5
    # With test-time flip averaging the mirror pass sees the evidence top-right; its map is
    # flipped back, so the explanation still points at the top-left quadrant.
    tta = dataclasses.replace(detector, config=dataclasses.replace(detector.config, tta=True))
    cams, _ = grad_cam(tta, fake)
    share = cams[:, :8, :8].sum((1, 2)) / cams.sum((1, 2))
    assert share.mean() > 0.5, share.mean()


@pytest.mark.parametrize("model", ["small_cnn", "vae_detector"])
def test_maps_are_sized_like_the_images_and_peak_at_one(trained_states: dict, tiny_data: Path,
                                                        model: str) -> None:
    detector = Detector.from_state(trained_states[model])
    images = np.stack([np.asarray(Image.open(p).convert("RGB"))
                       for p in sorted((tiny_data / "test" / "FAKE").glob("*.png"))[:5]])
    for target in ("predicted", "fake"):
        cams, scores = grad_cam(detector, images, target)
        assert cams.shape == (5, 16, 16) and scores.shape == (5,)
        assert cams.min() >= 0 and cams.max() <= 1 + 1e-6
        peaks = cams.reshape(5, -1).max(1)
        assert np.all((np.abs(peaks - 1) < 1e-5) | (peaks == 0))
    np.testing.assert_allclose(scores, detector.scores(images), rtol=1e-5)
    with out_of_memory_above(2) as raised:  # batches of 5 fail, of 2 fit: the same maps
        halved, halved_scores = grad_cam(detector, images, "fake", batch_size=5)
    assert raised and raised[0] == 5
    np.testing.assert_allclose(halved, cams, atol=1e-5)
    np.testing.assert_allclose(halved_scores, scores, rtol=1e-5)
    blended = overlay(images[0], cams[0], size=64)
    assert blended.shape == (64, 64, 3) and 0 <= blended.min() and blended.max() <= 1
    with pytest.raises(ValueError, match="unknown Grad-CAM target"):
        grad_cam(detector, images, "real")


def test_explain_command_writes_a_grid_for_chosen_test_images(
    study_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(study_copy), "--images", "4", "--quiet"]) == 0
    trials = pd.read_parquet(study_copy / "trials.parquet")
    png = study_copy / "figures" / f"gradcam_{best_trial(trials)['trial_id']}.png"
    out = capsys.readouterr().out
    assert str(png) in out and "Conv2d 32->64" in out
    with Image.open(png) as im:
        width, height = im.size
    assert width > 800 and height > 500  # four columns, one band of image and overlay
    target = study_copy / "one.png"
    assert main([str(study_copy), "--ids", "test/FAKE/3.png", "--target", "fake",
                 "--out", str(target), "--quiet"]) == 0
    assert target.stat().st_size > 5_000


def test_explain_names_images_missing_from_the_test_set(
    study_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(study_copy), "--ids", "train/FAKE/3.png", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "train/FAKE/3.png" in err and "test/" in err
