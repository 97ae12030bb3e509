"""A trial's device: autocast scope.

Usage:
    with autocast_off(x.device.type):     # fp32 as written, also inside an autocast region
        scores = model(x.float())

Framework-free (no Ray).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch


def autocast_off(device_type: str) -> contextlib.AbstractContextManager[Any]:
    """A context in which autocast is off on ``device_type`` (fp32 as written), also inside an
    autocast region; a no-op context for device types autocast does not know."""
    if device_type in ("cuda", "cpu"):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()
