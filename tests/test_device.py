"""Device paths that the CPU can exercise: host-to-device copies, memory release, OOM errors.

Usage: ``python -m pytest tests/test_device.py``
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainables.loader import copy_to_device, pinned_host_mib, resident_images


@pytest.mark.parametrize("chunk_bytes", [1, 2 * 16 * 16 * 3, 10**9])
def test_chunked_copy_equals_the_plain_copy(chunk_bytes: int) -> None:
    # One row per chunk, chunks of two rows with a remainder, one chunk for everything.
    images = np.random.default_rng(0).integers(0, 256, (7, 16, 16, 3), dtype=np.uint8)
    images.flags.writeable = False  # as the object store's shared copy is
    out = copy_to_device(images, torch.device("cpu"), chunk_bytes=chunk_bytes, pin=False)
    assert out.dtype == torch.uint8 and out.shape == images.shape and out.is_contiguous()
    assert torch.equal(out, torch.from_numpy(images.copy()))
    assert out.data_ptr() != images.ctypes.data  # a copy, not a view


def test_chunked_copy_of_nothing_is_empty() -> None:
    out = copy_to_device(np.zeros((0, 4, 4, 3), np.uint8), torch.device("cpu"), pin=False)
    assert out.shape == (0, 4, 4, 3)


def test_resident_images_on_the_cpu_stay_a_view_and_pinned_memory_is_unknown_there() -> None:
    images = np.zeros((3, 4, 4, 3), np.uint8)
    assert resident_images(images, torch.device("cpu")).data_ptr() == images.ctypes.data
    if not torch.cuda.is_available():
        assert pinned_host_mib() is None
