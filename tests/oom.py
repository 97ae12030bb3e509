"""A real CUDA out-of-memory error on the CPU: ``with out_of_memory_above(4): model(x)``.

Through ``torch.nn.modules.module.register_module_forward_pre_hook`` (PyTorch's global hook),
every module call with an input batch larger than ``limit`` raises ``torch.cuda.OutOfMemoryError``
as the caching allocator would; the hook is removed on exit. Tests of the OOM paths use it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.nn.modules.module import register_module_forward_pre_hook


@contextlib.contextmanager
def out_of_memory_above(limit: int) -> Iterator[list[int]]:
    """Raise OOM for batches above ``limit``; yields the list of batch sizes that raised."""
    raised: list[int] = []

    def hook(module: torch.nn.Module, args: tuple) -> None:
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] > limit:
            raised.append(x.shape[0])
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {x.shape[0]} MiB (simulated)")

    handle = register_module_forward_pre_hook(hook)
    try:
        yield raised
    finally:
        handle.remove()
