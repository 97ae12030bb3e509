"""Training degradations (blur, JPEG, rescaling; Wang et al. 2020): what each does, exactly.

Usage: ``python -m pytest tests/test_degrade.py``
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from trainables.config import ConfigError, TrainConfig
from trainables.degrade import Degrade, gaussian_blur, jpeg_recompress, rescale
from trainables.loader import Preprocess


def _batch(n: int = 6, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


def _high_frequency(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels, per image."""
    return ((x[..., 1:] - x[..., :-1]) ** 2).mean(dim=(1, 2, 3))


def test_blur_with_sigma_zero_leaves_an_image_as_it_is_and_more_sigma_smooths_more() -> None:
    x = _batch()
    sigma = torch.tensor([0.0, 0.5, 1.0, 2.0, 0.0, 3.0])
    out = gaussian_blur(x, sigma)
    assert torch.equal(out[0], x[0]) or torch.allclose(out[0], x[0], atol=1e-6)
    assert torch.allclose(out[4], x[4], atol=1e-6)
    hf = _high_frequency(out)
    assert hf[1] > hf[2] > hf[3] > hf[5]
    # A blur keeps the mean (normalised kernel, reflect padding keeps it close).
    assert torch.allclose(out.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=0.02)


def test_jpeg_recompress_matches_a_real_jpeg_codec_on_the_chosen_images_only() -> None:
    x = (_batch(4) * 255).round() / 255
    chosen = torch.tensor([True, False, True, False])
    quality = torch.tensor([30, 90, 75, 50])
    out = jpeg_recompress(x, quality, chosen)
    assert torch.equal(out[1], x[1]) and torch.equal(out[3], x[3])
    for i, q in ((0, 30), (2, 75)):
        pixels = (x[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=q)
        pil = np.asarray(Image.open(buf)).astype(np.float32) / 255
        ours = out[i].permute(1, 2, 0).numpy()
        # libjpeg in both; decoders may differ by a grey level in chroma upsampling.
        assert np.abs(ours - pil).mean() < 2 / 255
        assert np.abs(ours - pixels / 255).mean() > 1 / 255  # it did compress


def test_rescale_resamples_down_and_back_only_the_chosen_images() -> None:
    x = _batch(3)
    out = rescale(x, torch.tensor([0.5, 0.5, 1.0]), torch.tensor([True, False, True]))
    assert out.shape == x.shape
    assert torch.equal(out[1], x[1]) and torch.equal(out[2], x[2])  # not chosen; factor 1
    assert _high_frequency(out[:1]) < _high_frequency(x[:1]) * 0.8


def test_degradations_are_drawn_from_the_epochs_uniforms_so_a_resume_repeats_them() -> None:
    prep = Preprocess(16, "unit", False, False, flip=True,
                      degrade=Degrade(blur=0.5, blur_sigma=1.0, jpeg=0.5, rescale=0.5))
    assert prep.uniforms == 1 + 6
    x = (_batch(8) * 255).to(torch.uint8)
    u = prep.draw(8, torch.Generator().manual_seed(3), torch.device("cpu"))
    a, b = prep(x, u=u), prep(x, u=u)
    assert torch.equal(a, b)
    c = prep(x, u=prep.draw(8, torch.Generator().manual_seed(4), torch.device("cpu")))
    assert not torch.equal(a, c)


def test_a_config_without_degradations_draws_what_it_always_drew() -> None:
    old = Preprocess(16, "unit", False, True, flip=True, translate=2)
    new = Preprocess(16, "unit", False, True, flip=True, translate=2, degrade=Degrade())
    assert old.uniforms == new.uniforms == 2 + 1 + 4
    x = (_batch(4) * 255).to(torch.uint8)
    u = old.draw(4, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert torch.equal(old(x, u=u), new(x, u=u))


@pytest.mark.parametrize("key, value, words", [
    ("blur", 1.5, "probability"), ("jpeg", -0.1, "probability"),
    ("blur_sigma", 0.0, "pixels"),
])
def test_impossible_degradation_settings_are_refused_by_name(key: str, value: float,
                                                             words: str) -> None:
    with pytest.raises(ConfigError, match=f"{key}=.*{words}"):
        TrainConfig.from_dict({key: value})
