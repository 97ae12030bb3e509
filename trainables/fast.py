"""``cifake_fast``: a small, fast CNN for 32x32 real-vs-generated detection.

Usage: ``create_model("cifake_fast")``; trained with the recipe fields of ``TrainConfig``
(``schedule="onecycle"``, ``ema``, ``tta``, ``flip``, ``translate``, ``label_smoothing``).

Built after the CIFAR-10 speed records (Keller Jordan's airbench, 2024) and for forensics:

* The first layer is a fixed 2x2 patch-whitening convolution (stride 1, no padding) computed
  from the training images (``init_whitening``): the eigenvectors of the 12-dimensional 2x2x3
  patch covariance, scaled by 1/sqrt(eigenvalue), in both signs. It decorrelates neighbouring
  pixels, so the low-variance, high-frequency directions (where generators and JPEG leave their
  traces) reach the network at the same scale as the dominant smooth ones.
* No stride or pooling before the first 3x3 convolution: it sees every pixel at full
  resolution. Then three conv-pool-BN-GELU-conv-BN-GELU groups and a global max pool, whose
  widths set the speed (the variants below).
* Logits are scaled down (airbench's 1/9) so training starts in the linear part of the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainables.device import autocast_off
from trainables.model_base import declare_model

WHITEN_KERNEL = 2
WHITEN_EPS = 5e-4
LOGIT_SCALE = 1 / 9


class _ConvGroup(nn.Sequential):
    def __init__(self, cin: int, cout: int, momentum: float = 0.4) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(cout, momentum=momentum),
            nn.GELU(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout, momentum=momentum),
            nn.GELU(),
        )


class CifakeFast(nn.Module):
    """Whitened 2x2 stem at full resolution, three conv groups, global max pool, 2 logits."""

    def __init__(self, widths: tuple[int, int, int]) -> None:
        super().__init__()
        dims = 3 * WHITEN_KERNEL**2
        self.widths = widths
        self.whiten = nn.Conv2d(3, 2 * dims, WHITEN_KERNEL, padding=0, bias=True)
        # Fixed once computed from data; only its bias trains.
        self.whiten.weight.requires_grad_(False)
        self.register_buffer("whitened", torch.zeros((), dtype=torch.bool))
        self.groups = nn.Sequential(
            _ConvGroup(2 * dims, widths[0]),
            _ConvGroup(widths[0], widths[1]),
            _ConvGroup(widths[1], widths[2]),
        )
        self.head = nn.Linear(widths[2], 2, bias=False)

    @torch.no_grad()
    def init_whitening(self, x: torch.Tensor, eps: float = WHITEN_EPS) -> None:
        """Set the stem to whiten 2x2 patches of ``x``, float (N, 3, H, W) training images."""
        k = WHITEN_KERNEL
        x = x.float().contiguous()
        patches = x.unfold(2, k, 1).unfold(3, k, 1)  # (N, 3, H-1, W-1, k, k)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * k * k).double()
        patches = patches - patches.mean(0, keepdim=True)
        cov = patches.T @ patches / max(len(patches) - 1, 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        filters = eigenvectors.T.reshape(-1, 3, k, k) / torch.sqrt(eigenvalues + eps).view(
            -1, 1, 1, 1)
        weight = torch.cat([filters, -filters]).to(self.whiten.weight)
        self.whiten.weight.copy_(weight)
        self.whiten.bias.zero_()
        self.whitened.fill_(True)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """The whitening convolution and its GELU, in fp32 even under autocast.

        The filters scale each patch direction by 1/sqrt(eigenvalue): the low-variance,
        high-frequency directions are amplified most (about 45x at WHITEN_EPS). bf16 keeps
        8 bits of mantissa, so a bf16 input is rounded to about one grey level (1/255) of a
        [0, 1] image exactly where those directions live; the stem is 12 -> 24 channels of
        2x2 filters, cheap in fp32.
        """
        with autocast_off(x.device.type):
            return F.gelu(self.whiten(x.float()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.groups(x)
        x = torch.amax(x, dim=(2, 3))
        return self.head(x) * LOGIT_SCALE


# Widths chosen for a 2-core CPU (benchmarks/train_throughput.py prints their images/s); on a
# GPU airbench's own (64, 256, 256) fits the same code: cifake_fast_l.
@declare_model("cifake_fast_s", resolution=32, resolutions=(32,), gpu_fraction=0.125)
def cifake_fast_s(pretrained: bool = False) -> nn.Module:
    """cifake_fast at widths 16/32/64: the fastest variant, for CPU budgets of minutes."""
    return CifakeFast((16, 32, 64))


@declare_model("cifake_fast", resolution=32, resolutions=(32,), gpu_fraction=0.125)
def cifake_fast(pretrained: bool = False) -> nn.Module:
    """Whitened-stem CNN for 32 px real-vs-fake (widths 32/64/128), airbench-style recipe."""
    return CifakeFast((32, 64, 128))


@declare_model("cifake_fast_l", resolution=32, resolutions=(32,), gpu_fraction=0.25)
def cifake_fast_l(pretrained: bool = False) -> nn.Module:
    """cifake_fast at airbench's widths 64/256/256: for GPUs and long CPU budgets."""
    return CifakeFast((64, 256, 256))


SPECS = (cifake_fast_s, cifake_fast, cifake_fast_l)
