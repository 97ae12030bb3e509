"""The cifake_fast model and recipe: whitening, augmentation, schedule, EMA, TTA, whole-pool
training and its search space (retraining the winner: test_train_best.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import snapshot

from search_spaces import SpaceError, get_space
from study.run import main as run_main
from trainables.config import ConfigError, TrainConfig
from trainables.dataset import make_splits
from trainables.fast import CifakeFast
from trainables.inference import Detector
from trainables.ingest import load_dataset
from trainables.loader import random_flip, random_translate
from trainables.train import _OneCycle, classify, load_state, save_state, train

RECIPE = dict(model="cifake_fast_s", optimizer="sgd", lr=0.05, weight_decay=5e-4,
              schedule="onecycle", warmup=0.2, ema=0.99, tta=True, flip=True, translate=2,
              label_smoothing=0.2, batch_size=32, split_ratio=0.75, image_size=16)


def test_whitening_decorrelates_the_patches_it_was_fitted_on() -> None:
    torch.manual_seed(0)
    # Strongly correlated neighbouring pixels, as in photographs: a smooth field plus noise.
    smooth = torch.nn.functional.interpolate(torch.rand(64, 3, 5, 5), size=16, mode="bilinear")
    x = smooth + 0.2 * torch.randn(64, 3, 16, 16)
    model = CifakeFast((8, 8, 8)).eval()
    assert not model.whitened and not model.whiten.weight.requires_grad
    model.init_whitening(x)
    assert model.whitened
    with torch.no_grad():
        out = model.whiten(x)[:, :12] - model.whiten.bias[:12].view(1, -1, 1, 1)
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12).double()
    cov = torch.cov(flat.T)
    # Identity up to the eps regularisation (eigenvalue / (eigenvalue + eps), here > 0.95).
    assert torch.allclose(cov.diagonal(), torch.ones(12, dtype=torch.float64), atol=0.05)
    off = cov - torch.diag(cov.diagonal())
    assert off.abs().max() < 0.02
    # Both signs: the second half of the filters is the negation of the first.
    w = model.whiten.weight
    assert torch.equal(w[12:], -w[:12])


def test_whitened_stem_runs_in_fp32_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(16, 3, 5, 5), size=16, mode="bilinear")
    x = (smooth + 0.01 * torch.randn(16, 3, 16, 16)).clamp(0, 1)
    model = CifakeFast((8, 8, 8)).eval()
    model.init_whitening(x)
    with torch.no_grad():
        fp32 = model.stem(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model.stem(x)
            rounded = torch.nn.functional.gelu(model.whiten(x))  # the stem as bf16 would run
            logits = model(x)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, fp32)
    # What fp32 avoids: bf16 moves these unit-variance features by up to a sixth of a unit.
    assert rounded.dtype == torch.bfloat16 and (rounded.float() - fp32).abs().max() > 0.05
    assert logits.shape == (16, 2)  # the rest of the network still autocasts


def test_translation_moves_whole_pixels_within_the_bound() -> None:
    x = torch.arange(4 * 3 * 8 * 8, dtype=torch.float32).view(4, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    out = random_translate(x, 2, gen)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    for i in range(4):  # each image is one 8x8 window of its reflect-padded self
        hits = [(dy, dx) for dy in range(5) for dx in range(5)
                if torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8])]
        assert hits, f"image {i} is not a whole-pixel shift of at most 2"
    shifts = {tuple(int(v) for v in random_translate(x, 2, gen)[:, 0, 2, 2] - x[:, 0, 2, 2])
              for _ in range(5)}
    assert len(shifts) > 1  # random, not one fixed shift
    flipped = random_flip(x, torch.Generator().manual_seed(1))
    assert all(torch.equal(f, o) or torch.equal(f, o.flip(-1)) for f, o in zip(flipped, x,
                                                                               strict=True))


def test_one_cycle_rises_to_the_peak_and_anneals_to_zero() -> None:
    f = _OneCycle(total_steps=100, warmup=0.2)
    assert f(0) == pytest.approx(0.1)
    assert f(20) == pytest.approx(1.0)
    assert f(10) == pytest.approx(0.55)
    assert f(60) == pytest.approx(0.5)
    assert f(100) == 0.0 and f(130) == 0.0


def test_recipe_run_resumes_exactly_on_the_cpu_with_ema_and_schedule(data, tmp_path: Path
                                                                     ) -> None:
    """Exact on the CPU, where these tests run; on CUDA with deterministic=True only."""
    history: list[dict] = []
    states: list[dict] = []
    config = TrainConfig(**{**RECIPE, "epochs": 3})
    full = train(config, data, device="cpu",
                 on_epoch=lambda m, s: (history.append(m), states.append(snapshot(s()))))
    assert states[0]["ema"] is not None and states[0]["steps"] > 0
    # The learning rate follows the one-cycle shape: up, then down to zero at the budget.
    assert history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    path = tmp_path / "ckpt.pt"
    save_state(states[0], str(path))
    resumed = train(config, data, device="cpu", resume=load_state(str(path)))
    assert resumed["val_loss"] == pytest.approx(full["val_loss"], rel=1e-6)
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], rel=1e-6)


def test_tta_averages_the_mirror_image_and_detector_reproduces_training_scores(data) -> None:
    states: list[dict] = []
    train(TrainConfig(**{**RECIPE, "epochs": 2}), data,
          on_epoch=lambda m, s: states.append(snapshot(s())))
    state = states[-1]
    detector = Detector.from_state(state)
    x = torch.rand(5, 3, 16, 16)
    z = detector.prep.from_unit(x)
    with torch.no_grad():
        expected = (detector.model(z) + detector.model(z.flip(-1))) / 2
        assert torch.allclose(classify(detector.model, z, tta=True), expected)
    # The trial's stored test scores (EMA weights, TTA) are what the detector computes.
    splits = make_splits(data, RECIPE["split_ratio"], 0)
    scores = detector.scores(data.images[splits.test])
    np.testing.assert_allclose(scores, state["best"]["test_scores"], atol=1e-5)


def test_recipe_learns_the_embedded_data_in_seconds(small_sample: Path) -> None:
    """The default embedded data (a smaller build): clearly better than chance in a few epochs."""
    data = load_dataset(small_sample, progress=False)
    metrics = train(TrainConfig(**{**RECIPE, "epochs": 4, "image_size": 0, "batch_size": 64,
                                   "split_ratio": 0.8}), data)
    # 300 test images: chance is 0.5 with a standard error of 0.03.
    assert metrics["test_accuracy"] > 0.8, metrics["test_accuracy"]
    assert metrics["train_seconds"] < 60


def test_whole_pool_training_has_no_validation_and_keeps_the_last_epoch(data) -> None:
    history: list[dict] = []
    final = train(TrainConfig(**{**RECIPE, "epochs": 2, "split_ratio": 1.0}), data,
                  on_epoch=lambda m, s: history.append(m))
    assert final["n_val"] == 0 and final["n_train"] == 96
    assert np.isnan(final["val_accuracy"]) and np.isnan(final["val_loss"])
    assert [m["best_epoch"] for m in history] == [1, 2]  # each epoch's model is the latest
    assert 0.0 <= final["test_accuracy"] <= 1.0
    with pytest.raises(ConfigError, match="early stopping needs a validation set"):
        TrainConfig.from_dict({"split_ratio": 1.0, "patience": 2})
    with pytest.raises(ConfigError, match="anomaly detector"):
        train(TrainConfig(model="vae_detector", epochs=1, split_ratio=1.0, image_size=16), data)


@pytest.mark.parametrize(("key", "value", "match"), [
    ("schedule", "cosine", "must be one of"), ("ema", 1.0, r"\[0, 1\)"),
    ("translate", 9, "0-8 pixels"), ("warmup", 1.0, r"\[0, 1\)")])
def test_impossible_recipe_values_are_named(key: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=f"{key}=.*{match}"):
        TrainConfig.from_dict({key: value})


def test_search_space_validates_dry_runs_and_has_a_chosen_configuration(
        capsys: pytest.CaptureFixture) -> None:
    space = get_space("cifake_fast_search")
    assert space.search == "optuna_tpe" and space.asha is not None
    assert set(space.models()) == {"cifake_fast_s", "cifake_fast"}
    config = TrainConfig.from_dict(space.chosen_config())
    assert config.schedule == "onecycle" and config.split_ratio < 1.0
    assert run_main(["--space", "cifake_fast_search", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "optuna_tpe, 24 trials" in out and "rungs at epochs [2, 6]" in out
    with pytest.raises(SpaceError, match="split_ratio=1 leaves no validation"):
        space.with_overrides({"split_ratio": 1.0})
