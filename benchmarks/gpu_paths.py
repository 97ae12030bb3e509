"""GPU-path checks: ``python benchmarks/gpu_paths.py --device cuda [--images N] [--compile]``.

The figures only a GPU can give for the device paths of ``trainables`` (bf16 autocast, the
resident data set, fractional GPUs, ``torch.compile``), at toy size, in one process:

- memory at the start of a trial in a reused worker, after the previous trial was stopped as
  Tune stops one (``SystemExit`` in its epoch callback): allocated MiB should be 0;
- pinned host memory PyTorch's host allocator holds after a trial (the loader's one staging
  block, at most 64 MiB);
- the largest difference between a trial's stored test scores (training's evaluation) and the
  scores inference computes from its checkpoint: 0 up to float rounding (<= 1e-6);
- the record of a forced out-of-memory error: on CUDA a real one (the trial's memory share
  capped to a sliver), elsewhere one raised by a global forward hook;
- recompilations with ``torch.compile`` over two successive trials of different models in one
  process, as a reused worker runs them: each should compile as many frames as the first (not
  0, which is the recompile limit's silent fall-back to eager), with its compile seconds apart
  from its first epoch's time (``--compile``; on by default on CUDA);
- host synchronisations per training step (``torch.cuda.set_sync_debug_mode``; CUDA only);
- the cost of ``deterministic=True``: the median epoch time of ``small_cnn`` and
  ``resnet18_cifar`` (8x the toy images, batch 128) with and without it, and whether two runs
  and a resumed run are bit-equal to a first run with and without it (CUDA only).

``gpu_path_checks(device)`` returns the figures as a dict; "n/a on CPU" marks the ones the CPU
cannot give. ``--device cpu`` runs everything else at toy size (the test suite does).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import print_table

from trainables.config import TrainConfig
from trainables.dataset import ImageSet, make_splits
from trainables.device import TrialMemory, TrialOutOfMemoryError, cap_memory_share
from trainables.inference import Detector
from trainables.loader import pinned_host_mib
from trainables.train import _Run, train

NA = "n/a on CPU"


def toy_data(n: int = 256, size: int = 32, seed: int = 0) -> ImageSet:
    """Random smooth 'photographs' and the same with a checker pattern ('generated'), a
    train/test split in the CIFAKE manner: learnable in an epoch or two."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 4, 4, 3)).astype(np.float32)
    images = torch.nn.functional.interpolate(torch.from_numpy(small).permute(0, 3, 1, 2),
                                             size=size, mode="bilinear").permute(0, 2, 3, 1)
    images = images.numpy()
    labels = np.arange(n) % 2
    checker = (np.indices((size, size)).sum(0) % 2 * 2 - 1)[None, ..., None] * 24.0
    images = np.clip(images + labels[:, None, None, None] * checker, 0, 255).astype(np.uint8)
    split = np.where(np.arange(n) < n * 3 // 4, "train", "test")
    manifest = pd.DataFrame({"path": [f"{s}/{'FAKE' if y else 'REAL'}/{i}.png"
                                      for i, (s, y) in enumerate(zip(split, labels,
                                                                     strict=True))],
                             "label": labels, "split": split, "generator": "",
                             "content_hash": [f"{i:08x}" for i in range(n)]})
    return ImageSet(images, manifest, "toy", "toy", "cifake")


def _stop_after_first_epoch(metrics: dict[str, Any], state: Any) -> None:
    raise SystemExit(0)  # as Tune stops a function trainable, inside tune.report


@contextlib.contextmanager
def _raise_oom_above(limit: int):
    """A real torch.cuda.OutOfMemoryError from every module call on a batch above ``limit``."""
    from torch.nn.modules.module import register_module_forward_pre_hook

    def hook(module: torch.nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], torch.Tensor) and args[0].shape[0] > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (forced)")

    handle = register_module_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _reused_worker(config: TrainConfig, data: ImageSet, device: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in (1, 2):
        with contextlib.suppress(SystemExit), TrialMemory(device, f"trial {k}") as memory:
            train(config, data, device=device, on_epoch=_stop_after_first_epoch)
        if k == 2:
            out["trial 2 start: allocated MiB"] = memory.start.get("allocated_mib", NA)
            out["trial 2 start: reserved MiB"] = memory.start.get("reserved_mib", NA)
            out["trial 2 end: allocated MiB"] = memory.end.get("allocated_mib", NA)
    pinned = pinned_host_mib()
    out["pinned host MiB after the trials"] = pinned["pinned_mib"] if pinned else NA
    return out


def _score_equality(config: TrainConfig, data: ImageSet, device: str) -> dict[str, Any]:
    states: list[dict[str, Any]] = []
    train(config, data, device=device, on_epoch=lambda m, s: states.append(s()))
    state = states[-1]
    images = data.images[make_splits(data, config.split_ratio, config.seed).test]
    scores = Detector.from_state(state, device).scores(images)
    diff = float(np.max(np.abs(scores - state["best"]["test_scores"])))
    return {"max |training - inference| test score": diff}


def _forced_oom(config: TrainConfig, data: ImageSet, device: str) -> dict[str, Any]:
    cuda = torch.device(device).type == "cuda"
    try:
        if cuda:
            torch.cuda.empty_cache()  # the cap counts the allocator's reserved memory
            cap_memory_share(1e-6, device)  # about 140 KiB of an H200: the data set fails
            guard: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        else:
            guard = _raise_oom_above(config.batch_size // 2)
        with guard:
            train(config, data, device=device)
        record = "no error (not forced)"
    except TrialOutOfMemoryError as exc:
        record = str(exc)
    finally:
        if cuda:
            cap_memory_share(1.0, device)
            torch.cuda.empty_cache()
    return {"forced out-of-memory record" + ("" if cuda else " (hook-raised)"): record}


def _recompilations(config: TrainConfig, data: ImageSet, device: str) -> dict[str, Any]:
    """Frames and graphs dynamo compiled in each of two successive trials of one process, of
    two models (both ``nn.Sequential``, whose compiled forward shares one code object): the
    second trial should compile as much as the first (a reset), not pile up recompilations on
    the first one's cache entries until the limit falls back to eager."""
    from torch._dynamo.utils import counters

    out: dict[str, Any] = {}
    for k, model in ((1, "small_cnn"), (2, "purba_cnn1")):
        compiled = TrainConfig(**{**config.asdict(), "model": model, "compile": True,
                                  "epochs": 1, "image_size": 32})
        frames, graphs = counters["frames"]["ok"], counters["stats"]["unique_graphs"]
        metrics = train(compiled, data, device=device)
        out[f"trial {k} ({model}): frames compiled"] = counters["frames"]["ok"] - frames
        out[f"trial {k} ({model}): unique graphs"] = counters["stats"]["unique_graphs"] - graphs
        out[f"trial {k} ({model}): compile s"] = metrics["compile_seconds"]
        out[f"trial {k} ({model}): epoch 1 s, compiling excluded"] = metrics["epoch_seconds"]
    return out


def _syncs_per_step(config: TrainConfig, data: ImageSet, device: str) -> dict[str, Any]:
    if torch.device(device).type != "cuda":
        return {"host syncs per training step": NA}
    run = _Run(config, data, torch.device(device))
    run.train_epoch()  # warm-up: allocator, cuDNN plans
    steps = len(run.y["train"]) // config.batch_size
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run.train_epoch()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    return {"host syncs per training step": syncs / max(steps, 1),
            "host syncs in the epoch (incl. its end)": syncs}


def _final_weights(config: TrainConfig, data: ImageSet, device: str,
                   resume: dict[str, Any] | None = None, keep: int | None = None
                   ) -> tuple[list[float], dict[str, torch.Tensor], dict[str, Any] | None]:
    """(epoch seconds, the last epoch's weights on the CPU, the checkpoint after epoch
    ``keep``) of one run."""
    seconds: list[float] = []
    out: dict[str, Any] = {}

    def on_epoch(metrics: dict[str, Any], state: Any) -> None:
        seconds.append(metrics["epoch_seconds"])
        if metrics["epoch"] == keep:
            out["kept"] = copy.deepcopy(state())
        if metrics["stop_reason"]:
            out["weights"] = {k: v.detach().cpu().clone()
                              for k, v in state()["model"].items()}

    train(config, data, device=device, resume=resume, on_epoch=on_epoch)
    return seconds, out["weights"], out.get("kept")


def _bit_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _deterministic_cost(data: ImageSet, device: str) -> dict[str, Any]:
    """Median epoch seconds (epochs 2-4; the first warms cuDNN and the allocator up) with and
    without ``deterministic``, and whether a second run and a run resumed after epoch 1 end
    with bit-equal weights."""
    if torch.device(device).type != "cuda":
        return {"deterministic=true: epoch time and bit-equality": NA}
    out: dict[str, Any] = {}
    for model in ("small_cnn", "resnet18_cifar"):
        median = {}
        for deterministic in (False, True):
            config = TrainConfig(model=model, epochs=4, batch_size=128, split_ratio=0.75,
                                 translate=2, flip=True, deterministic=deterministic)
            seconds, first, kept = _final_weights(config, data, device, keep=1)
            _, second, _ = _final_weights(config, data, device)
            _, resumed, _ = _final_weights(config, data, device, resume=kept)
            median[deterministic] = statistics.median(seconds[1:])
            tag = f"{model}, deterministic={str(deterministic).lower()}"
            out[f"{tag}: median epoch s"] = median[deterministic]
            out[f"{tag}: second run bit-equal"] = _bit_equal(first, second)
            out[f"{tag}: resumed run bit-equal"] = _bit_equal(first, resumed)
        out[f"{model}: deterministic / default epoch time"] = median[True] / median[False]
    return out


def gpu_path_checks(device: str = "cuda", images: int = 256, compile: bool | None = None
                    ) -> dict[str, Any]:
    """Every check's figures at toy size on ``device``; see the module docstring."""
    data = toy_data(images)
    config = TrainConfig(model="small_cnn", epochs=2, batch_size=32, split_ratio=0.75,
                         translate=2, flip=True)
    cuda = torch.device(device).type == "cuda"
    figures: dict[str, Any] = {"device": device}
    figures.update(_reused_worker(config, data, device))
    figures.update(_score_equality(config, data, device))
    figures.update(_forced_oom(config, data, device))
    if compile if compile is not None else cuda:
        figures.update(_recompilations(config, data, device))
    else:
        figures["recompilations"] = "not run (--compile)"
    figures.update(_syncs_per_step(config, data, device))
    figures.update(_deterministic_cost(toy_data(8 * images) if cuda else data, device))
    return figures


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="count torch.compile recompilations over two trials (default: on CUDA)")
    args = p.parse_args()
    figures = gpu_path_checks(args.device, args.images, args.compile)
    print_table(f"GPU-path checks on {args.device} ({args.images} toy images, small_cnn)",
                ["check", "figure"], [[k, f"{v:.2e}" if isinstance(v, float) and 0 < abs(v) < 0.01
                                       else v] for k, v in figures.items()])


if __name__ == "__main__":
    main()
