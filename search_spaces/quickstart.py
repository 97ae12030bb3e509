"""quickstart: a small space that runs a real ASHA study on the embedded data in minutes."""

from __future__ import annotations

from search_spaces.base import Asha, Space, grid

SPACE = Space(
    name="quickstart",
    description="small CNN x batch {32, 64, 128} x epochs {4, 8} x split {0.75, 0.8} on 2 CPUs",
    params={
        "batch_size": grid(32, 64, 128),
        "epochs": grid(4, 8),
        "split_ratio": grid(0.75, 0.80),
    },
    fixed={"model": "small_cnn", "lr": 1e-3},
    asha=Asha(grace_period=2, reduction_factor=2),
)
