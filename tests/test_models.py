"""Every registered model, tested by being registered (timm style), plus the seed papers' counts.

Usage: ``python -m pytest tests/test_models.py`` (CPU only, well under a minute).
"""

from __future__ import annotations

import functools
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainables import baselines, fast, zoo
from trainables.config import TrainConfig
from trainables.dataset import ImageSet
from trainables.model_base import AnomalyDetector, ModelSpec, count_parameters
from trainables.models import MODELS, create_model, model_spec
from trainables.train import train

# The ImageNet-sized models (half a GPU or more per trial) take 4-30 s a case on 2 CPU cores.
CASES = [pytest.param(name, res, id=f"{name}-{res}",
                      marks=[pytest.mark.slow] if model_spec(name).gpu_fraction >= 0.5 else [])
         for name in MODELS.names() for res in model_spec(name).resolutions]
PRETRAINED = [n for n in MODELS.names() if model_spec(n).pretrained]
NOT_PRETRAINED = [n for n in MODELS.names() if not model_spec(n).pretrained]

# Table 1 of the Purba & Suparwito seed ("Number of Parameters"), at 32x32x3 input.
PURBA_TABLE_1 = {
    "purba_cnn1": 78_945,
    "purba_cnn2": 89_633,
    "purba_cnn3": 360_609,
    "vgg16": 14_879_041,
}


@functools.lru_cache(maxsize=1)  # one model alive at a time; resolutions of a model reuse it
def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name)


@pytest.mark.parametrize(("name", "resolution"), CASES)
def test_model_runs_forward_and_backward_at_each_declared_resolution(
    name: str, resolution: int
) -> None:
    spec = model_spec(name)
    assert spec.description, f"{name}'s factory needs a one-line docstring"
    model = _model(name)
    model.zero_grad(set_to_none=True)
    model.train()
    x = torch.rand(2, 3, resolution, resolution)
    y = torch.tensor([0, 1])
    if isinstance(model, AnomalyDetector):
        loss = model.loss(x, y)
        assert loss.ndim == 0 and torch.isfinite(loss) and loss.requires_grad
        loss.backward()
        with torch.no_grad():
            scores = model.score(x)
        assert scores.shape == (2,) and torch.isfinite(scores).all()
    else:
        logits = model(x)
        assert logits.shape in ((2, 2), (2, 1)), f"{name} returned {tuple(logits.shape)}"
        assert torch.isfinite(logits).all()
        loss = (F.cross_entropy(logits, y) if logits.shape[1] == 2
                else F.binary_cross_entropy_with_logits(logits.view(-1), y.float()))
        loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads, f"{name}: no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads)


def test_every_declared_model_is_registered_from_the_registry_alone() -> None:
    # A fresh process that imports only the registry (as a Ray worker or study.predict does)
    # sees every model the model modules declare, whatever it imported before.
    code = ("import sys; from trainables.models import MODELS; print(' '.join(MODELS.names()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], check=True)
    names = out.stdout.split()
    declared = {value.name for module in (baselines, zoo, fast) for value in vars(module).values()
                if isinstance(value, ModelSpec)}  # a factory left out of its module's SPECS
    assert set(names) == declared == set(MODELS.names())
    assert {"small_cnn", "resnet18", "purba_cnn1", "vae_detector", "cifake_fast"} <= declared


def test_model_modules_import_nothing_from_the_registry() -> None:
    """They declare; trainables.models registers: no import order can matter."""
    import ast

    for module in (baselines, zoo, fast):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "trainables.models" not in imported, module.__name__


@pytest.mark.parametrize("name", sorted(PURBA_TABLE_1))
def test_purba_models_have_table_1_parameter_counts(name: str) -> None:
    assert model_spec(name).resolution == 32
    assert count_parameters(create_model(name)) == PURBA_TABLE_1[name]


@pytest.mark.parametrize("name", ["purba_cnn1", "purba_cnn2", "purba_cnn3", "iacob_cnn"])
def test_pooling_before_relu_is_the_papers_relu_then_pooling(name: str) -> None:
    # The zoo pools before the ReLU (faster); the papers' Keras order, on the same modules,
    # must give the same outputs and the same gradients.
    torch.manual_seed(0)
    model = create_model(name).train()
    layers = list(model)
    keras = list(layers)
    for i in range(len(keras) - 1):
        if isinstance(keras[i], nn.MaxPool2d) and isinstance(keras[i + 1], nn.ReLU):
            keras[i], keras[i + 1] = keras[i + 1], keras[i]
    assert keras != layers
    x = torch.randn(8, 3, 32, 32)
    grads = []
    for order in (layers, keras):
        model.zero_grad()
        torch.manual_seed(1)  # the same dropout mask
        out = nn.Sequential(*order)(x)
        out.square().sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        if order is layers:
            first = out.detach()
    assert torch.allclose(out, first, atol=1e-6)
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_dense_model_at_undeclared_resolution_names_the_supported_one() -> None:
    with pytest.raises(ValueError, match="built for 32x32 input"):
        create_model("purba_cnn1")(torch.rand(2, 3, 64, 64))


@pytest.mark.parametrize("name", NOT_PRETRAINED)
def test_pretrained_request_for_model_without_weights_raises(name: str) -> None:
    with pytest.raises(ValueError, match="no pretrained weights"):
        create_model(name, pretrained=True)


@pytest.fixture
def empty_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("CIFAKE_STUDY_OFFLINE", raising=False)


@pytest.mark.parametrize("name", PRETRAINED)
def test_uncached_weights_with_unreachable_server_fail_fast_naming_prefetch(
    name: str, empty_torch_home: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    timeouts: list[float | None] = []

    def unreachable(address: tuple[str, int], timeout: float | None = None,
                    *args: object, **kwargs: object) -> socket.socket:
        timeouts.append(timeout)
        raise OSError("network is unreachable (simulated)")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(RuntimeError, match=r"(?i)pre-fetch.*study\.fetch_weights"):
        create_model(name, pretrained=True)
    assert timeouts and all(t is not None and t <= 5 for t in timeouts)


def test_uncached_weights_offline_fail_within_seconds(empty_torch_home: None) -> None:
    """The real connection attempt on this offline machine; skipped where a download would run."""
    try:
        socket.create_connection(("download.pytorch.org", 443), timeout=3).close()
    except OSError:
        pass
    else:
        pytest.skip("download.pytorch.org is reachable; pretrained=True would download weights")
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"(?i)pre-fetch"):
        create_model("resnet50_frozen_head", pretrained=True)
    assert time.perf_counter() - start < 10


def test_resnet50_frozen_head_freezes_base_only_when_pretrained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import trainables.zoo

    # Stand-in for cached ImageNet weights: torchvision then initialises randomly.
    monkeypatch.setattr(trainables.zoo, "load_imagenet_weights", lambda weights_enum: None)
    frozen = create_model("resnet50_frozen_head", pretrained=True)
    assert not any(p.requires_grad for p in frozen.backbone.parameters())
    assert all(p.requires_grad for p in frozen.head.parameters())
    frozen.train()
    assert frozen.head.training and not frozen.backbone.training  # batch norm keeps statistics
    trainable = create_model("resnet50_frozen_head", pretrained=False)
    assert all(p.requires_grad for p in trainable.parameters())


def test_vae_loss_of_batch_without_real_images_is_zero_with_grad() -> None:
    model = create_model("vae_detector")
    loss = model.loss(torch.rand(2, 3, 32, 32), torch.tensor([1, 1]))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()


def _smooth_images(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Sums of three low-frequency sinusoids per channel around grey, in [0, 1]."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.full((n, size, size, 3), 0.5)
    for i in range(n):
        for _ in range(3):
            fx, fy = rng.integers(0, 3, 2)
            phase = rng.uniform(0, 2 * np.pi, 3)
            amplitude = rng.uniform(0.05, 0.15, 3)
            out[i] += amplitude * np.sin(2 * np.pi * (fx * xx + fy * yy)[..., None] + phase)
    return out


def _smooth_vs_noisy(n_train: int, n_test: int, size: int = 32, noise: float = 0.1) -> ImageSet:
    """REAL = smooth images; FAKE = the same distribution plus white noise (sd ``noise``)."""
    rng = np.random.default_rng(0)
    n = n_train + n_test
    real = _smooth_images(rng, n, size)
    fake = _smooth_images(rng, n, size) + rng.normal(0.0, noise, (n, size, size, 3))
    images = (np.clip(np.concatenate([real, fake]), 0, 1) * 255).round().astype(np.uint8)
    split = ["train"] * n_train + ["test"] * n_test
    manifest = pd.DataFrame({
        "path": [f"img{i}.png" for i in range(2 * n)],
        "label": np.repeat(np.array([0, 1], dtype=np.int8), n),
        "split": split * 2,
        "generator": "",
        "content_hash": [f"hash{i}" for i in range(2 * n)],
    })
    return ImageSet(images, manifest, "smooth-vs-noisy", "synthetic", "generic")


@pytest.mark.slow  # trains the VAE: ~10 s
def test_vae_detector_trained_on_real_images_flags_noisy_fakes() -> None:
    # Noise raises the reconstruction error of even a barely trained VAE, so this checks the
    # anomaly path end to end (loss on REAL only, score direction, threshold fitted on
    # validation) more than the quality of the VAE; the falling validation loss checks learning.
    data = _smooth_vs_noisy(n_train=80, n_test=40)
    config = TrainConfig(model="vae_detector", epochs=3, batch_size=32, image_size=32, seed=0)
    val_losses: list[float] = []
    metrics = train(config, data, device="cpu",
                    on_epoch=lambda m, state: val_losses.append(m["val_loss"]))
    assert metrics["n_test"] == 80
    assert metrics["test_accuracy"] > 0.7, metrics
    assert val_losses[-1] < val_losses[0]  # negative ELBO of held-out REAL images
