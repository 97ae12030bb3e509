"""A frequency-domain detector as a plugin of cifake-study: ``spectrum_cnn``.

Usage:
    python -m study.run --plugin cifake_spectrum --space examples/spectrum_vs_seeds.yaml ...
    pip install examples/cifake_spectrum     # then its entry point registers it everywhere

Generators upsample, and upsampling leaves periodic peaks in an image's 2-D spectrum that
photographs do not have (Durall et al., CVPR 2020, "Watch your up-convolution"; Frank et al.,
ICML 2020, "Leveraging frequency analysis for deep fake image recognition"). The model takes the
log-magnitude of each image's centred 2-D Fourier spectrum (grey levels, per-image standardised)
and classifies it with a small CNN: it sees the artefacts, not the picture.
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.model_base import declare_model
from trainables.models import register_model


class LogSpectrum(nn.Module):
    """(N, 3, H, W) images in [0, 1] -> (N, 1, H, W) standardised log-magnitude spectra."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The FFT runs in fp32 even under autocast: half-precision FFTs need powers of two
        # and lose the small high-frequency magnitudes that carry the artefacts.
        with torch.autocast(x.device.type, enabled=False):
            grey = x.float().mean(dim=1)
            grey = grey - grey.mean(dim=(-2, -1), keepdim=True)
            spectrum = torch.fft.fftshift(torch.fft.fft2(grey, norm="ortho"), dim=(-2, -1))
            logmag = torch.log1p(spectrum.abs())
            mean = logmag.mean(dim=(-2, -1), keepdim=True)
            std = logmag.std(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
            return ((logmag - mean) / std).unsqueeze(1)


@declare_model("spectrum_cnn", resolution=32, resolutions=(32, 64), normalize="unit",
               gpu_fraction=0.25)
def spectrum_cnn(pretrained: bool = False) -> nn.Module:
    """A CNN on the log-magnitude 2-D spectrum (Durall et al. 2020; Frank et al. 2020)."""

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True), nn.MaxPool2d(2))

    return nn.Sequential(LogSpectrum(), block(1, 16), block(16, 32), block(32, 64),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 2))


register_model(spectrum_cnn)
