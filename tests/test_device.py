"""Device paths that the CPU can exercise: host-to-device copies, memory release, OOM errors,
the deterministic-kernel settings.

Usage: ``python -m pytest tests/test_device.py``
"""

from __future__ import annotations

import gc
import os
import warnings
import weakref

import numpy as np
import pytest
import torch
from oom import out_of_memory_above

from trainables.config import TrainConfig
from trainables.device import (
    CUBLAS_WORKSPACE_CONFIG,
    TrialMemory,
    TrialOutOfMemoryError,
    cap_memory_share,
    deterministic_kernels,
    halving_on_oom,
    memory_share,
    release,
)
from trainables.loader import copy_to_device, pinned_host_mib, resident_images
from trainables.train import train

FAST = TrainConfig(model="small_cnn", batch_size=16, image_size=16, split_ratio=0.75, epochs=3)


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


def live_tensors() -> int:
    with warnings.catch_warnings():  # isinstance touches deprecated lazy module attributes
        warnings.simplefilter("ignore")
        return sum(isinstance(o, torch.Tensor) for o in gc.get_objects())


def stopped_at_first_epoch() -> tuple[list[weakref.ref], object]:
    """An on_epoch callback that stops the run as Tune does (SystemExit inside tune.report),
    and weak references to the run's model, parameters and resident images."""
    refs: list[weakref.ref] = []

    def stop(metrics: dict, state) -> None:
        run = state.__self__
        refs.extend(weakref.ref(t) for t in (run.model, *run.model.parameters(), run.images))
        raise SystemExit(0)

    return refs, stop


def test_a_stopped_trial_frees_its_tensors_before_the_stop_propagates(data) -> None:
    refs, stop = stopped_at_first_epoch()
    with pytest.raises(SystemExit), TrialMemory("cpu") as memory:
        train(FAST, data, on_epoch=stop)
    assert len(refs) > 3 and all(r() is None for r in refs)
    assert memory.start == {} and memory.end == {}  # no device figures off CUDA


def test_without_release_the_stop_keeps_the_run_alive(data) -> None:
    refs, stop = stopped_at_first_epoch()
    with pytest.raises(SystemExit) as info:
        train(FAST, data, on_epoch=stop)
    # The traceback's frames hold the run: what a reused worker's next trial would start with.
    assert all(r() is not None for r in refs)
    live = live_tensors()
    release("cpu", info.value)
    assert all(r() is None for r in refs)
    assert live_tensors() < live


def test_a_batch_that_runs_out_of_memory_is_retried_at_half_the_size() -> None:
    sizes: list[int] = []

    def rows(start: int, stop: int) -> list[int]:
        sizes.append(stop - start)
        if stop - start > 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return list(range(start, stop))

    parts = halving_on_oom(rows, 50, batch_size=32)
    assert [i for part in parts for i in part] == list(range(50))
    assert sizes[:3] == [32, 16, 8] and max(sizes[3:]) <= 8  # later batches keep the size


def test_out_of_memory_at_a_single_item_is_raised() -> None:
    def rows(start: int, stop: int) -> list[int]:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        halving_on_oom(rows, 4, batch_size=4)


def test_out_of_memory_in_training_names_model_batch_and_device(data) -> None:
    with out_of_memory_above(8), pytest.raises(TrialOutOfMemoryError) as info:
        train(FAST, data)
    message = str(info.value)
    assert "model small_cnn at batch_size 16" in message and "on cpu" in message
    assert "lower batch_size" in message and "--gpus-per-trial" in message
    # Not an OutOfMemoryError itself: nothing should treat it as a transient allocator failure.
    assert not isinstance(info.value, torch.cuda.OutOfMemoryError)
    assert isinstance(info.value.__cause__, torch.cuda.OutOfMemoryError)


def test_memory_share_is_a_gpu_setting_only() -> None:
    cap_memory_share(0.25, "cpu")  # a CPU trial: nothing to cap
    assert memory_share() == 1.0


def _kernel_flags() -> tuple[bool, bool, bool, bool]:
    return (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled())


def test_deterministic_kernels_on_cuda_are_set_within_and_handed_back_after(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Only flags and the environment: the CPU can check them for a CUDA device; whether they
    make a GPU run bit-equal is benchmarks/gpu_paths.py's figure."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")  # restored as it was after the test
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)  # as a user might leave it
    before = _kernel_flags()
    with pytest.raises(SystemExit), deterministic_kernels("cuda"):
        assert _kernel_flags() == (True, False, True, True)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE_CONFIG
        raise SystemExit(0)  # a trial stopped by Tune: the next one in the worker is unaffected
    assert _kernel_flags() == before
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # the user's own choice stays
    with deterministic_kernels("cuda"):
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_deterministic_kernels_change_nothing_on_the_cpu_or_when_not_asked() -> None:
    before = _kernel_flags()
    with deterministic_kernels("cpu"):
        assert _kernel_flags() == before
    with deterministic_kernels("cuda", enabled=False):
        assert _kernel_flags() == before
    assert TrainConfig.from_dict({"deterministic": True}).deterministic
