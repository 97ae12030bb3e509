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

from trainables.config import TrainConfig
from trainables.data import ImageSet
from trainables.device import TrialMemory, cap_memory_share
from trainables.train import BUDGET_BEST, load_state, save_state, train

CHECKPOINT_FILE = "checkpoint.pt"


def trial_device() -> str:
    """CUDA when Ray gave this trial a GPU; otherwise the CPU, saying so if a GPU was asked for."""
    resources = ray.get_runtime_context().get_assigned_resources()
    cpus = max(1, int(resources.get("CPU", 1)))
    torch.set_num_threads(cpus)  # one trial must not oversubscribe the node's cores
    if resources.get("GPU", 0) > 0:
        if torch.cuda.is_available():
            cap_memory_share(resources["GPU"], "cuda")  # a fractional GPU: memory too
            return "cuda"
        warnings.warn(f"this trial was given a GPU on {os.uname().nodename} but torch sees "
                      "none (CPU-only torch build or driver missing); training on the CPU",
                      stacklevel=2)
    return "cpu"


def trainable(config: dict[str, Any], data: ImageSet) -> None:
    """Tune function trainable; ``data`` arrives once per node through ``tune.with_parameters``."""
    logging.getLogger("ray").setLevel(logging.WARNING)  # not a line per saved checkpoint
    # With reuse_actors, Tune hands this worker the next trial only once this function has
    # unwound from the report at which the scheduler stopped it; its default 2 s wait is
    # too short on a loaded node, and a reset that times out fails the next trial. Read by
    # FunctionTrainable.reset_config in this worker process.
    os.environ["TUNE_FUNCTION_THREAD_TIMEOUT_S"] = "60"
    # A folded run (search_spaces.tuning) also serves the smaller budgets of its configuration.
    budgets = [int(b) for b in config.get("budgets") or ()]
    cfg = TrainConfig.from_dict({k: v for k, v in config.items() if k != "budgets"})
    resume = None
    restarts = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = load_state(os.path.join(folder, CHECKPOINT_FILE))
        restarts = resume.get("restarts", 0) + 1  # after a crash, a lost node or a resume
    # Budget -> the best-so-far record (weights, metrics, test scores) at that epoch: what the
    # trial with that budget ends with. Records that did not change between budgets are one
    # object, which the checkpoint stores once.
    budget_best: dict[int, Any] = dict((resume or {}).get(BUDGET_BEST, {}))
    # The Ray node of every epoch: host names repeat where several Ray nodes share a host
    # (containers, a test cluster), and a trial that moves after a lost node changes node.
    ray_node = ray.get_runtime_context().get_node_id()

    def report(metrics: dict[str, Any], state: Any) -> None:
        metrics = {**metrics, "restarts": restarts, "ray_node_id": ray_node}
        current = state()
        if metrics["epoch"] in budgets[:-1]:
            budget_best[metrics["epoch"]] = current["best"]
        with tempfile.TemporaryDirectory() as folder:
            save_state({**current, "restarts": restarts, BUDGET_BEST: budget_best},
                       os.path.join(folder, CHECKPOINT_FILE))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    # The worker may be reused for the next trial: however the run ends (Tune stops it with
    # SystemExit inside tune.report), its tensors are freed and its GPU memory handed back.
    device = trial_device()
    with TrialMemory(device, f"trial {tune.get_context().get_trial_id()}"):
        train(cfg, data, device=device, resume=resume, on_epoch=report)
