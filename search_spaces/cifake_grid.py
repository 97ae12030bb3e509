"""cifake_grid: every architecture x batch size x epochs x split ratio, under ASHA.

The ranges are the seeds': batch sizes 16-128 and 40-80 epochs (Bartos & Akyol, Table 2 and
Section III.D), split ratios 0.70/0.75/0.80 (Bartos & Akyol, Table 1).

Every model trains from scratch here (``pretrained`` is False, the default), so architectures
are compared on equal terms and the grid runs offline. The seeds themselves start ``resnet18``,
``resnet50_*``, ``vgg16`` and ``convnext_small`` from ImageNet weights; for that comparison run
one family per study with its weights (``python -m study.fetch_weights`` once), e.g.
``--set model=resnet18 --set pretrained=true``, and compare the studies in one leaderboard.
"""

from __future__ import annotations

from search_spaces.base import Asha, Space, grid

# Every architecture of the seeds, plus the project's own small CNN and a CIFAR-stem ResNet-18.
MODELS = (
    "purba_cnn1", "purba_cnn2", "purba_cnn3", "vgg16", "iacob_cnn", "small_cnn",
    "resnet18_cifar", "resnet18", "resnet50_frozen_head", "resnet50_dense_head",
    "convnext_small", "vae_detector",
)

SPACE = Space(
    name="cifake_grid",
    description="all architectures x batch {16..128} x epochs {40..80} x split {0.70..0.80}",
    params={
        "model": grid(*MODELS),
        "batch_size": grid(16, 32, 64, 128),
        "epochs": grid(40, 50, 60, 70, 80),
        "split_ratio": grid(0.70, 0.75, 0.80),
    },
    fixed={"lr": 1e-3, "optimizer": "adam"},
    # Rungs at 10, 20 and 40 epochs: every budget (>= 40) reaches all three, so ASHA compares
    # trials of different budgets on equal footing; budgets above 40 run on from the last rung.
    asha=Asha(grace_period=10, reduction_factor=2),
    data_hint="a CIFAKE archive or folder (--data archive.zip)",
)
