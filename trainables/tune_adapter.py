"""The only module of ``trainables`` that imports Ray: the Tune function trainable.

It turns Tune's config into a ``TrainConfig``, resumes from ``tune.get_checkpoint()`` and reports
every epoch with a self-describing checkpoint (model, optimizer, epoch, config, best so far).
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from typing import Any

import ray
import torch
from ray import tune

from results.storage import CHECKPOINT_FILE
from trainables.config import TrainConfig
from trainables.dataset import ImageSet
from trainables.device import TrialMemory, cap_memory_share, pin_cublas_workspace
from trainables.folding import BudgetRecords, budgets_of, without_budgets
from trainables.plugins import load_plugins
from trainables.train import load_state, save_state, train


def trial_device() -> str:
    """CUDA when Ray gave this trial a GPU; otherwise the CPU, saying so if a GPU was asked for."""
    resources = ray.get_runtime_context().get_assigned_resources()
    cpus = max(1, int(resources.get("CPU", 1)))
    # One trial must not oversubscribe the node's cores; torch.compile's compile workers
    # follow this bound too (trainables.compiling).
    torch.set_num_threads(cpus)
    if resources.get("GPU", 0) > 0:
        if torch.cuda.is_available():
            cap_memory_share(resources["GPU"], "cuda")  # a fractional GPU: memory too
            return "cuda"
        warnings.warn(f"this trial was given a GPU on {os.uname().nodename} but torch sees "
                      "none (CPU-only torch build or driver missing); training on the CPU",
                      stacklevel=2)
    return "cpu"


def resumable_state(checkpoint: tune.Checkpoint) -> dict[str, Any] | None:
    """The state to resume from, or None when the checkpoint is gone or unreadable (deleted
    from the storage, truncated, or not in the safe format): the trial then starts afresh,
    which loses time but no result, instead of failing on every retry and resume."""
    try:
        with checkpoint.as_directory() as folder:
            return load_state(os.path.join(folder, CHECKPOINT_FILE))
    except Exception as exc:  # any unreadable checkpoint: say which, then start afresh
        warnings.warn(f"cannot read the checkpoint {checkpoint.path}/{CHECKPOINT_FILE} "
                      f"({type(exc).__name__}: {exc}); the trial starts again from epoch 1",
                      stacklevel=2)
        return None


def trainable(config: dict[str, Any], data: ImageSet, plugins: tuple[str, ...] = (),
              eval_sets: dict[str, ImageSet] | None = None) -> None:
    """Tune function trainable; ``data`` and the ``--eval-data`` sets arrive once per node
    through ``tune.with_parameters``, with the ``--plugin`` modules whose models this worker
    must know (``trainables.plugins``)."""
    load_plugins(plugins)
    logging.getLogger("ray").setLevel(logging.WARNING)  # not a line per saved checkpoint
    # With reuse_actors, Tune hands this worker the next trial only once this function has
    # unwound from the report at which the scheduler stopped it; its default 2 s wait is
    # too short on a loaded node, and a reset that times out fails the next trial. Read by
    # FunctionTrainable.reset_config in this worker process.
    os.environ["TUNE_FUNCTION_THREAD_TIMEOUT_S"] = "60"
    cfg = TrainConfig.from_dict(without_budgets(config))
    resume = None
    restarts = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        resume = resumable_state(checkpoint)
        # After a crash, a lost node or a resume; a checkpoint that could not be read
        # restarts the trial from its first epoch, and counts as a restart too.
        restarts = (resume or {}).get("restarts", 0) + 1
    # A folded run (trainables.folding) also serves the smaller budgets of its configuration.
    budgets = BudgetRecords(budgets_of(config), resume)
    # The Ray node of every epoch: host names repeat where several Ray nodes share a host
    # (containers, a test cluster), and a trial that moves after a lost node changes node.
    ray_node = ray.get_runtime_context().get_node_id()

    def report(metrics: dict[str, Any], state: Any) -> None:
        metrics = {**metrics, "restarts": restarts, "ray_node_id": ray_node}
        current = state()
        budgets.record(metrics["epoch"], current["best"])
        with tempfile.TemporaryDirectory() as folder:
            save_state({**current, "restarts": restarts, **budgets.checkpoint_entries()},
                       os.path.join(folder, CHECKPOINT_FILE))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    if cfg.deterministic:
        # Before this trial touches CUDA: PyTorch reads the cuBLAS workspace setting once per
        # process, at its first cuBLAS call (train() sets the other deterministic flags).
        pin_cublas_workspace()
    # The worker may be reused for the next trial: however the run ends (Tune stops it with
    # SystemExit inside tune.report), its tensors are freed and its GPU memory handed back.
    device = trial_device()
    with TrialMemory(device, f"trial {tune.get_context().get_trial_id()}"):
        train(cfg, data, device=device, resume=resume, on_epoch=report, eval_sets=eval_sets)
