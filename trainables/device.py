"""A trial's device: memory share and OOM errors, clean-up after a stop, fp32 scopes,
deterministic kernels.

Usage:
    cap_memory_share(0.5, torch.device("cuda"))      # a fractional GPU caps memory, too
    with TrialMemory(device) as memory:               # frees the run's tensors however it ends
        train(config, data, device=device, ...)
    with deterministic_kernels(device, config.deterministic):   # flags restored on exit
        ...
    with autocast_off(x.device.type):                 # fp32 as written, inside autocast too
        scores = model(x.float())
    parts = halving_on_oom(lambda a, b: score(images[a:b]), len(images), batch_size=256)

Framework-free (no Ray): ``trainables.tune_adapter`` calls it around each trial, and the analysis
code runs its input-gradient batches through ``halving_on_oom``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import traceback
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

log = logging.getLogger(__name__)
T = TypeVar("T")
MIB = 2**20

_share = 1.0  # this process's GPU memory share, as last set by cap_memory_share
# One cuBLAS workspace of 4096 KiB per handle and stream, 8 of them: one of the two settings
# with which cuBLAS results do not depend on which workspace a call gets (cuBLAS docs, "Results
# reproducibility"; torch's deterministic mode asks for ":4096:8" or ":16:8"). 32 MiB, which is
# PyTorch's default on Hopper and Blackwell anyway (8.1 MiB on earlier GPUs).
CUBLAS_WORKSPACE_CONFIG = ":4096:8"


class TrialOutOfMemoryError(RuntimeError):
    """A trial ran out of GPU memory; the message names model, batch size, share and free memory.

    Not a ``torch.cuda.OutOfMemoryError``: retrying the same configuration on the same share
    fails the same way, so the trial's error says what to change instead.
    """


def cap_memory_share(share: float, device: torch.device | str) -> None:
    """Hold this process to ``share`` of the GPU's memory (a fractional GPU from Ray).

    Ray's fractional GPUs divide scheduling, not memory: two trials at 0.5 may each grow into
    the whole card. PyTorch's caching allocator raises an out-of-memory error beyond the
    fraction instead (``torch.cuda.set_per_process_memory_fraction``). A whole GPU sets 1.0,
    which also undoes a smaller cap a reused worker kept from its previous trial.
    """
    global _share
    device = torch.device(device)
    if device.type != "cuda":
        return
    share = min(max(float(share), 0.0), 1.0) or 1.0
    torch.cuda.set_per_process_memory_fraction(share, device)
    _share = share


def memory_share() -> float:
    """The GPU memory share set by ``cap_memory_share`` (1.0: the whole device)."""
    return _share


def out_of_memory_error(model: str, batch_size: int, device: torch.device | str
                        ) -> TrialOutOfMemoryError:
    """The error a trial raises for ``torch.cuda.OutOfMemoryError``: what ran, where, and how
    much was free, so the fix (a smaller batch, a larger ``--gpus-per-trial``) is plain."""
    free = free_mib(device)
    where = (f"GPU share {memory_share():g}, {free:,.0f} MiB free on {device}" if free is not None
             else f"on {device}")
    return TrialOutOfMemoryError(
        f"out of memory: model {model} at batch_size {batch_size} ({where}); lower batch_size "
        "or give each trial more of a GPU (--gpus-per-trial). Retrying the same trial on the "
        "same share fails the same way")


def autocast_off(device_type: str) -> contextlib.AbstractContextManager[Any]:
    """A context in which autocast is off on ``device_type`` (fp32 as written), also inside an
    autocast region; a no-op context for device types autocast does not know."""
    if device_type in ("cuda", "cpu"):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def memory_mib(device: torch.device | str) -> dict[str, float]:
    """Allocated and reserved MiB of the caching allocator on a CUDA ``device``, else empty."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return {}
    return {"allocated_mib": torch.cuda.memory_allocated(device) / MIB,
            "reserved_mib": torch.cuda.memory_reserved(device) / MIB}


def free_mib(device: torch.device | str) -> float | None:
    """Free memory of a CUDA ``device`` as the driver reports it, MiB; None elsewhere."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return free / MIB


def release(device: torch.device | str, exc: BaseException | None = None) -> None:
    """Free what a finished or stopped run held: its frames, then the allocator's cache.

    An exception that ends a run (Tune stops a function trainable with ``SystemExit`` raised in
    ``tune.report``) keeps every frame it passed through alive in its traceback, and with them
    the run's model, optimiser and resident data set. Clearing those frames' locals first is
    what lets ``empty_cache`` hand the memory back to a worker Tune reuses for the next trial
    (ray-project/ray#23971 is that failure: a reused worker starts its trial with the last
    one's memory still held).
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:  # the exception and its causes
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__
    gc.collect()
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()


class TrialMemory:
    """Context around one trial: logs its device memory at start and end, frees it at exit.

    ``start`` and ``end`` hold the figures (empty off CUDA). A trial that starts with memory
    already allocated is in a worker whose previous trial did not let go; that start is logged
    as a warning.
    """

    def __init__(self, device: torch.device | str, name: str = "trial") -> None:
        self.device = torch.device(device)
        self.name = name
        self.start: dict[str, float] = {}
        self.end: dict[str, float] = {}

    def __enter__(self) -> TrialMemory:
        self.start = memory_mib(self.device)
        if self.start:
            level = logging.WARNING if self.start["allocated_mib"] > 0 else logging.INFO
            log.log(level, "%s starts with %.0f MiB allocated, %.0f MiB reserved on %s",
                    self.name, self.start["allocated_mib"], self.start["reserved_mib"],
                    self.device)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        release(self.device, exc)
        self.end = memory_mib(self.device)
        if self.end:
            log.info("%s ends with %.0f MiB allocated, %.0f MiB reserved on %s", self.name,
                     self.end["allocated_mib"], self.end["reserved_mib"], self.device)
        # The exception, if any, propagates (returning None): Tune must see its stop.


def pin_cublas_workspace() -> None:
    """Set ``CUBLAS_WORKSPACE_CONFIG`` for deterministic cuBLAS, unless the user set it.

    PyTorch reads it once per process, at the first cuBLAS call (``getChosenWorkspaceSize``
    caches it), so it must be set before the process multiplies anything on a GPU: the Tune
    trainable calls this before its trial touches CUDA. In a reused worker whose earlier
    trial already ran cuBLAS, the workspace keeps the size that trial's process chose; a
    trial runs on one CUDA stream, for which cuBLAS is bit-reproducible with any workspace.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)


@contextlib.contextmanager
def deterministic_kernels(device: torch.device | str, enabled: bool = True) -> Iterator[None]:
    """Within: deterministic CUDA kernels on a CUDA ``device`` when ``enabled``; the previous
    settings are restored on exit, so the next trial of a reused worker runs as it asked.

    cuDNN picks deterministic algorithms and stops benchmarking (which could pick another
    algorithm per run), cuBLAS gets a fixed workspace (``pin_cublas_workspace``) and torch's
    deterministic algorithms are on: ops that have a deterministic CUDA implementation use it,
    and the few that have none (e.g. bilinear upsampling's backward, which adds with atomics)
    warn instead of failing (``warn_only``), naming the op that breaks bit-equality. A no-op on
    the CPU, whose kernels are already deterministic for this project's ops.
    """
    if not enabled or torch.device(device).type != "cuda":
        yield
        return
    if "CUBLAS_WORKSPACE_CONFIG" not in os.environ and torch.cuda.is_initialized():
        log.info("CUBLAS_WORKSPACE_CONFIG is set after CUDA started in this process; if cuBLAS "
                 "ran already, its workspace keeps the size chosen then")
    pin_cublas_workspace()
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[:2]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


def halving_on_oom(fn: Callable[[int, int], T], n: int, batch_size: int,
                   device: torch.device | str | None = None) -> list[T]:
    """``[fn(start, stop), ...]`` over ``range(n)`` in batches of ``batch_size`` or fewer.

    A batch that raises ``torch.cuda.OutOfMemoryError`` is retried at half the size (after
    freeing the failed attempt's tensors), down to one item, which re-raises. Later batches
    keep the smaller size. ``fn`` must not depend on how the items are batched (attacks and
    Grad-CAM in eval mode do not).
    """
    out: list[T] = []
    start, size = 0, max(1, int(batch_size))
    while start < n:
        stop = min(start + size, n)
        failed = False
        try:
            out.append(fn(start, stop))
        except torch.cuda.OutOfMemoryError as exc:
            if stop - start <= 1:
                raise
            release(device or "cpu", exc)
            failed = True
        if failed:
            # Outside the except block: the exception (and the batch's tensors in its frames)
            # is gone before the cache is emptied for the smaller retry.
            release(device or "cpu")
            size = max(1, (stop - start) // 2)
            log.warning("out of memory at a batch of %d; retrying with %d", stop - start, size)
            continue
        start = stop
    return out
