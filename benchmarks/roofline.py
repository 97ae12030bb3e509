"""A machine's measured ceilings and a model's counted FLOPs: what utilisation is a ratio of.

Usage:
    tflops = matmul_tflops(torch.device("cuda"), torch.bfloat16, 8192)   # measured peak
    gbps = copy_gbps(torch.device("cuda"), 2 * 2**30)                    # bytes read + written
    flops = training_flops_per_image(model, x, y)                         # forward + backward
    mfu = flops * images_per_second / (tflops * 1e12)

Timed with CUDA events on a GPU (device work is asynchronous) and the host clock elsewhere;
medians over repeats, after a warm-up. The inputs are random, never zeros: a matrix product of
zeros runs faster than one of real data.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import median_seconds
from torch import nn


def device_seconds(fn: Callable[[], object], device: torch.device, repeats: int = 5,
                   warmup: int = 2) -> float:
    """Median seconds of ``fn()`` on ``device``: CUDA events around each call on a GPU, the
    host clock (after the call returns) elsewhere."""
    if device.type != "cuda":
        return median_seconds(fn, repeats, warmup)[0]
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 10) -> float:
    """Measured TFLOP/s of an n x n x n matrix product (2 n^3 FLOPs), rotating over three
    pairs of random inputs so repeats are not served from the cache."""
    pairs = [(torch.randn(n, n, device=device, dtype=dtype),
              torch.randn(n, n, device=device, dtype=dtype)) for _ in range(3)]
    out = torch.empty(n, n, device=device, dtype=dtype)
    turn = [0]

    def product() -> None:
        a, b = pairs[turn[0] % len(pairs)]
        turn[0] += 1
        torch.matmul(a, b, out=out)

    return 2 * n**3 / device_seconds(product, device, repeats, warmup=3) / 1e12


def copy_gbps(device: torch.device, nbytes: int, repeats: int = 10) -> float:
    """Measured GB/s of a device-to-device copy of ``nbytes``, counting bytes read plus bytes
    written (2 x nbytes per copy)."""
    src = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return 2 * nbytes / device_seconds(lambda: dst.copy_(src), device, repeats) / 1e9


def training_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The loss a training step of ``model`` takes on (x, y): the model's own (anomaly
    detectors define ``loss``), else cross-entropy of 2 logits or the BCE of 1, as
    ``trainables.train`` does without label smoothing."""
    if hasattr(model, "loss") and hasattr(model, "score"):
        return model.loss(x, y)
    out = model(x)
    if out.shape[-1] == 2:
        return F.cross_entropy(out.float(), y)
    return F.binary_cross_entropy_with_logits(out.float().view(-1), y.float())


def training_flops_per_image(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """FLOPs of one training step's forward and backward per image of the batch ``x``
    (``torch.utils.flop_counter``: matrix products and convolutions, which is where a
    network's arithmetic is; the optimiser's element-wise update is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counter:
        training_loss(model, x, y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(x)
