"""The framework-free training loop: ``train(config, data) -> metrics``.

Usage: ``metrics = train(TrainConfig(model="small_cnn", epochs=3), load_dataset("sample"))``

Each epoch reports train loss, validation loss and metrics, and the common-test-set metrics of the
best model so far (lowest validation loss, the weights early stopping restores) through
``on_epoch(metrics, checkpoint_state)``. Epoch ``e`` is seeded by (seed, e), so a run resumed
from a checkpoint continues exactly as the uninterrupted run would have: on the CPU always, on
CUDA with ``deterministic=True`` (docs/scaling.md). With ``compile=True`` the time spent
compiling is reported apart (``compile_seconds``), not in the epochs' times.

One job, about 500 lines: the run's state (model, optimiser, schedule, EMA, splits),
one epoch of training, scoring, the best-so-far record, and the loop over epochs. Checkpoint
files are ``trainables.checkpoint``'s, folded budgets ``trainables.folding``'s, compiling
``trainables.compiling``'s and deterministic kernels ``trainables.device``'s.
"""

from __future__ import annotations

import copy
import math
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainables import checkpoint
from trainables.compiling import CompileSession
from trainables.config import ConfigError, TrainConfig
from trainables.dataset import ImageSet, make_splits
from trainables.degrade import Degrade
from trainables.device import autocast_off, deterministic_kernels, out_of_memory_error
from trainables.eval_sets import set_metrics
from trainables.loader import Preprocess, batch_count, batches, resident_images
from trainables.metrics import (
    CLEAN_METRICS,
    METRIC_NAMES,
    TRAIN_METRICS,
    auc,
    best_threshold,
    classification_metrics,
)
from trainables.model_base import AnomalyDetector, count_parameters, input_normalization
from trainables.models import create_model, model_spec

EVAL_SPLIT = "eval:"  # prefix of an evaluation set's split name in a run
EpochCallback = Callable[[dict[str, Any], Callable[[], dict[str, Any]]], None]
CHECKPOINT_FORMAT = 1
WHITENING_SAMPLE = 5000  # training images the cifake_fast stem's whitening is estimated from
EMA_EVERY = 5  # steps between weight-average updates (airbench's lookahead period)
# Steps between finiteness checks of the summed training loss: each check waits for the device.
# A diverged run takes at most this many more steps before it stops with its error.
FINITE_EVERY = 50


def select_device(prefer: str | None = None) -> torch.device:
    """``prefer`` ("cuda", "mps", "cpu") or the best available; falls back to the CPU."""
    if prefer:
        if prefer.startswith("cuda") and not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class _Run:
    """State of one training run; ``state()`` is the self-describing checkpoint.

    ``compiling`` is the run's ``CompileSession`` (``train`` opens one); without it the model
    is still compiled when the config asks, but its compile time is not told apart.
    ``eval_sets`` are the study's evaluation sets (``trainables.eval_sets``).
    """

    def __init__(self, config: TrainConfig, data: ImageSet, device: torch.device,
                 compiling: CompileSession | None = None,
                 eval_sets: Mapping[str, ImageSet] | None = None) -> None:
        self.config = config
        self.device = device
        self.compiling = compiling or CompileSession(config.compile)
        spec = model_spec(config.model)
        self.resolution = config.image_size or spec.resolution
        self.splits = make_splits(data, config.split_ratio, config.seed)
        if len(self.splits.train) < 2:
            raise ConfigError("the training split holds fewer than two images")
        cuda = device.type == "cuda"
        # channels_last pays on the CPU too: oneDNN convolutions skip their layout reorders
        # (1.1-3x faster training steps for the 32 px CNNs, benchmarks/train_throughput.py).
        self.channels_last = config.channels_last
        self.amp_dtype = None
        if config.amp and cuda:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        labels = torch.from_numpy(data.labels)
        # One resident copy of the images (shared on the CPU); splits are index tensors.
        self.images = resident_images(data.images, device)
        self.index = {k: torch.from_numpy(getattr(self.splits, k)).to(device)
                      for k in ("train", "val", "test")}
        self.y = {k: labels[getattr(self.splits, k)].to(device) for k in ("train", "val", "test")}
        # Evaluation sets (trainables.eval_sets): splits of their own, "eval:<name>", each
        # resident like the training set and scored only when the test set is.
        self.eval_sets = dict(eval_sets or {})
        self.eval_sets_seconds = 0.0  # spent scoring them (benchmarks/eval_sets.py)
        self.sources: dict[str, torch.Tensor] = {}
        for name, extra in self.eval_sets.items():
            key = EVAL_SPLIT + name
            self.sources[key] = resident_images(extra.images, device)
            self.index[key] = torch.arange(len(extra), device=device)
            self.y[key] = torch.from_numpy(extra.labels).to(device)
        self.test_ids = data.manifest["path"].to_numpy()[self.splits.test]
        self.test_labels = data.labels[self.splits.test].astype(np.int8)  # 0 REAL, 1 FAKE
        # The test images without a byte-identical copy among the images this trial trains
        # and validates on: the "clean" test set, which no leak can flatter.
        hashes = data.manifest["content_hash"].astype(str).to_numpy()
        pool = np.concatenate([self.splits.train, self.splits.val])
        self.test_clean = ~np.isin(hashes[self.splits.test], np.unique(hashes[pool]))
        norm = input_normalization(spec, config.normalize)
        self.prep_train = Preprocess(self.resolution, norm, self.channels_last,
                                     config.augment, config.flip, config.translate,
                                     Degrade(config.blur, config.blur_sigma, config.jpeg,
                                             config.rescale))
        self.prep_eval = Preprocess(self.resolution, norm, self.channels_last, False)

        torch.manual_seed(config.seed)
        self.model = create_model(config.model, pretrained=config.pretrained).to(device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if hasattr(self.model, "init_whitening"):
            # Data-dependent first layer (cifake_fast): whiten 2x2 patches of training images.
            sample = torch.arange(min(WHITENING_SAMPLE, len(self.splits.train)), device=device)
            self.model.init_whitening(self.prep_eval(self.batch("train", sample)))
        self.num_params = count_parameters(self.model)
        self.anomaly = isinstance(self.model, AnomalyDetector)
        if self.anomaly and not len(self.splits.val):
            raise ConfigError(f"{config.model} is an anomaly detector: its threshold is fitted "
                              "on validation, so it needs split_ratio < 1")
        params = [p for p in self.model.parameters() if p.requires_grad]
        if config.optimizer == "adam":
            self.opt: torch.optim.Optimizer = torch.optim.Adam(
                params, lr=config.lr, weight_decay=config.weight_decay)
        else:
            self.opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                       weight_decay=config.weight_decay, nesterov=True)
        if config.schedule == "onecycle":
            steps = config.epochs * batch_count(len(self.splits.train), config.batch_size, True)
            self.sched: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.LambdaLR(
                self.opt, _OneCycle(steps, config.warmup))
        else:
            self.sched = torch.optim.lr_scheduler.ExponentialLR(self.opt, gamma=config.lr_decay)
        # The weight average evaluates, so it is what validation, test and checkpoints see.
        self.ema = copy.deepcopy(self.model) if config.ema else None
        self.steps = 0
        self.forward = self.compiling.compile(self.model)
        self.epoch = 0
        self.best: dict[str, Any] = {"val_loss": math.inf, "epoch": 0, "weights": None,
                                     "metrics": {}, "test_scores": None, "threshold": 0.5}
        self.bad_epochs = 0
        self.train_seconds = 0.0  # training steps only: compilation is compile_seconds
        self.compiled_before = 0.0  # compile seconds of the run before it was resumed

    @property
    def compile_seconds(self) -> float:
        """Seconds spent compiling over the whole run (every process it resumed in); NaN when
        this torch cannot time compilation, 0 without ``compile``."""
        if not self.compiling.timed:
            return math.nan
        return self.compiled_before + self.compiling.seconds

    # -- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.asdict(),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "steps": self.steps,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "train_seconds": self.train_seconds,
            "compile_seconds": self.compile_seconds,
            "test_ids": self.test_ids,
            "test_labels": self.test_labels,
        }

    def load(self, state: dict[str, Any]) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format {state.get('format')} is not "
                             f"{CHECKPOINT_FORMAT}; start the trial afresh")
        # Keys added to TrainConfig later take their defaults, which reproduce the old runs.
        if TrainConfig.from_dict(state["config"]).asdict() != self.config.asdict():
            raise ValueError("the checkpoint was made with another configuration")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.steps = state.get("steps", 0)
        self.epoch = state["epoch"]
        self.best = state["best"]
        self.bad_epochs = state["bad_epochs"]
        self.train_seconds = state["train_seconds"]
        # Checkpoints from before compile time was told apart counted it in train_seconds.
        self.compiled_before = state.get("compile_seconds", 0.0)
        if math.isnan(self.compiled_before):
            self.compiled_before = 0.0

    # -- one epoch ---------------------------------------------------------------------------
    def batch(self, split: str, idx: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) images of positions ``idx`` within ``split``."""
        images = self.sources.get(split, self.images)
        return images[self.index[split][idx]].permute(0, 3, 1, 2)

    @property
    def evaluated(self) -> nn.Module:
        """The model that validation, test and the checkpointed best weights come from."""
        return self.ema if self.ema is not None else self.model

    def _update_ema(self) -> None:
        self.steps += 1
        if self.ema is None or self.steps % EMA_EVERY:
            return
        # Warm-up (as timm's ModelEmaV2/TF's EMA with num_updates): early averages forget
        # the random initialisation quickly; later ones average over ~1/(1-ema) steps.
        decay = min(self.config.ema, (1 + self.steps) / (10 + self.steps)) ** EMA_EVERY
        with torch.no_grad():
            for avg, cur in zip(self.ema.parameters(), self.model.parameters(), strict=True):
                avg.lerp_(cur, 1.0 - decay)
            for avg, cur in zip(self.ema.buffers(), self.model.buffers(), strict=True):
                avg.copy_(cur)

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(loss, predicted labels or None for an anomaly detector) of a training batch."""
        if self.anomaly:
            return self.model.loss(x, y), None
        logits = self.forward(x)
        if logits.shape[-1] == 2:
            loss = F.cross_entropy(logits.float(), y,
                                   label_smoothing=self.config.label_smoothing)
            return loss, logits.detach().argmax(-1)
        target = y.float() * (1 - self.config.label_smoothing) + 0.5 * self.config.label_smoothing
        flat = logits.float().view(-1)
        return F.binary_cross_entropy_with_logits(flat, target), (flat.detach() > 0).long()

    def train_epoch(self) -> tuple[float, float, dict[str, float]]:
        """(mean loss, seconds, training metrics) of one epoch.

        The training metrics are those of the batches as trained on (augmented, dropout on,
        weights moving), as Keras reports ``accuracy`` during ``fit``: counted on the device.
        """
        cfg = self.config
        torch.manual_seed(cfg.seed * 100_003 + self.epoch)  # dropout etc.: resumable
        gen = torch.Generator(device="cpu").manual_seed(cfg.seed * 100_003 + self.epoch)
        self.model.train()
        start, compiled = time.perf_counter(), self.compiling.seconds
        y_all = self.y["train"]
        n = len(y_all)
        # No step waits for the host: the epoch's augmentation draws cross to the device in one
        # copy (seeded by seed and epoch as before, so resumes stay exact), and the loss is
        # summed on the device and checked for finiteness every FINITE_EVERY steps.
        draws = self.prep_train.draw(n, gen, self.device) if self.prep_train.uniforms else None
        total = torch.zeros((), device=self.device)
        # Confusion counts of the training predictions: tp, fp, fn, tn (FAKE positive).
        confusion = torch.zeros(4, dtype=torch.long, device=self.device)
        count = 0
        for step, idx in enumerate(batches(n, cfg.batch_size, True, gen, self.device), 1):
            u = draws[count : count + len(idx)] if draws is not None else None
            x = self.prep_train(self.batch("train", idx), u=u)
            y = y_all[idx]
            with self._autocast():
                loss, predicted = self._loss(x, y)
            if predicted is not None:
                confusion += torch.stack([(predicted & y).sum(), (predicted & (1 - y)).sum(),
                                          ((1 - predicted) & y).sum(),
                                          ((1 - predicted) & (1 - y)).sum()])
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
            if self.config.schedule == "onecycle":
                self.sched.step()
            self._update_ema()
            total += loss.detach().float() * len(idx)
            count += len(idx)
            if step % FINITE_EVERY == 0:
                self._check_finite(total)
        self._check_finite(total)
        if self.config.schedule != "onecycle":
            self.sched.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        # Compilation (the first steps, a new batch shape) is host time and is not training.
        # On a GPU, kernels queued before a mid-epoch recompilation run during it, so the
        # subtraction may take off up to that queue's time too.
        seconds = time.perf_counter() - start - (self.compiling.seconds - compiled)
        return float(total.item()) / max(count, 1), max(seconds, 0.0), _train_metrics(
            confusion.tolist(), self.anomaly)

    def _check_finite(self, loss_sum: torch.Tensor) -> None:
        """Raise if any loss summed into ``loss_sum`` (all >= 0) was inf or nan."""
        if not torch.isfinite(loss_sum):
            raise FloatingPointError(
                f"training diverged: loss became {loss_sum.item()} at epoch {self.epoch + 1}; "
                f"lower lr (now {self.config.lr})")

    def evaluate_sets(self, threshold: float) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """(columns, scores per set) of the evaluation sets, at the test metrics' threshold."""
        columns: dict[str, float] = {}
        scores: dict[str, np.ndarray] = {}
        start = time.perf_counter()
        for name, extra in self.eval_sets.items():
            _, s = self.evaluate(EVAL_SPLIT + name)
            generators = extra.manifest["generator"].astype(str).to_numpy()
            columns.update(set_metrics(name, extra.labels, generators if any(generators)
                                       else None, s, threshold))
            scores[name] = s.astype(np.float32)
        self.eval_sets_seconds += time.perf_counter() - start  # .cpu() above synchronised
        return columns, scores

    @torch.no_grad()
    def evaluate(self, split: str) -> tuple[float, np.ndarray]:
        """(mean loss, scores) over one split; scores are P(FAKE) or anomaly scores.

        In fp32, without autocast: the scores are ``score_batch``'s, as inference computes
        them, so a trial's stored test scores, its threshold and every later evaluation of its
        checkpoint agree. Evaluation is a small part of an epoch, so fp32 costs little.
        """
        model = self.evaluated.eval()
        y_all = self.y[split]
        # Results go into preallocated tensors rather than hundreds of small per-batch ones
        # kept alive between each batch's large transient tensors, a pattern that fragments
        # the C heap of the trial process.
        scores = torch.empty(len(y_all), device=self.device)
        loss_sum = torch.zeros((), device=self.device)
        forward = self.forward if model is self.model else model
        start = 0
        for idx in batches(len(y_all), max(self.config.batch_size, 256), False, None, self.device):
            x, y = self.prep_eval(self.batch(split, idx)), y_all[idx]
            end = start + len(idx)
            scores[start:end], logits = score_batch(model if self.anomaly else forward, x,
                                                    self.anomaly, self.config.tta)
            with autocast_off(self.device.type):
                loss_sum += (model.loss(x, y).float() * len(idx) if self.anomaly
                             else _eval_loss(logits, y))
            start = end
        return float(loss_sum.item() / max(len(y_all), 1)), scores.cpu().numpy()


def _train_metrics(confusion: list[int], anomaly: bool) -> dict[str, float]:
    """``train_<m>`` of ``TRAIN_METRICS`` from (tp, fp, fn, tn); NaN for an anomaly detector,
    whose training predicts no labels (its threshold is fitted after each epoch)."""
    if anomaly:
        return {f"train_{m}": math.nan for m in TRAIN_METRICS}
    tp, fp, fn, tn = confusion
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {"train_accuracy": (tp + tn) / max(tp + fp + fn + tn, 1),
            "train_precision": precision, "train_recall": recall,
            "train_f1": 2 * precision * recall / (precision + recall) if precision + recall
            else 0.0}


class _OneCycle:
    """lr multiplier at step ``s``: lr/10 rising linearly to lr at ``warmup``, then down to 0."""

    def __init__(self, total_steps: int, warmup: float) -> None:
        self.total = max(total_steps, 1)
        self.warmup = warmup

    def __call__(self, step: int) -> float:
        t = min(step / self.total, 1.0)
        if t < self.warmup:
            return 0.1 + 0.9 * t / self.warmup
        return max(0.0, (1.0 - t) / (1.0 - self.warmup))


def classify(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tta: bool = False
             ) -> torch.Tensor:
    """Float logits of ``x``; with ``tta``, the mean of the image's and its mirror's logits."""
    logits = model(x).float()
    if tta:
        logits = (logits + model(x.flip(-1)).float()) / 2
    return logits


def score_batch(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, anomaly: bool,
                tta: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(scores (N,), logits or None) of model inputs ``x``: P(FAKE), or the anomaly score.

    The one scoring function of training's evaluation and of inference (``Detector``): fp32
    with autocast off, whatever the caller runs under, so the same weights give the same scores
    in both. ``model`` is the module (anomaly detectors: its ``score``) or its compiled forward.
    """
    with autocast_off(x.device.type):
        x = x.float()
        if anomaly:
            return model.score(x).float(), None
        logits = classify(model, x, tta)
        scores = logits.softmax(-1)[:, 1] if logits.shape[-1] == 2 else logits.view(-1).sigmoid()
        return scores, logits


def _eval_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed unsmoothed loss, so validation losses compare across label-smoothing settings."""
    if logits.shape[-1] == 2:
        return F.cross_entropy(logits, y, reduction="sum")
    return F.binary_cross_entropy_with_logits(logits.view(-1), y.float(), reduction="sum")


def train(
    config: TrainConfig,
    data: ImageSet,
    *,
    device: torch.device | str | None = None,
    resume: dict[str, Any] | None = None,
    on_epoch: EpochCallback | None = None,
    eval_sets: Mapping[str, ImageSet] | None = None,
) -> dict[str, Any]:
    """Train ``config`` on ``data``; returns the metrics of the last epoch.

    ``eval_sets`` ({name: data}) are scored whenever the test set is (``trainables.eval_sets``):
    their metrics join the test metrics of the best model so far in every epoch's report.

    Running out of GPU memory raises ``TrialOutOfMemoryError``, whose message names the model,
    batch size, GPU share and free memory (``torch.cuda.OutOfMemoryError`` says none of them).
    """
    try:
        return _train(config, data, device=device, resume=resume, on_epoch=on_epoch,
                      eval_sets=eval_sets)
    except torch.cuda.OutOfMemoryError as exc:
        where = select_device(str(device) if device is not None else None)
        raise out_of_memory_error(config.model, config.batch_size, where) from exc


def _train(
    config: TrainConfig,
    data: ImageSet,
    *,
    device: torch.device | str | None,
    resume: dict[str, Any] | None,
    on_epoch: EpochCallback | None,
    eval_sets: Mapping[str, ImageSet] | None = None,
) -> dict[str, Any]:
    device = select_device(device if isinstance(device, str) else
                           (str(device) if device is not None else None))
    # Both hand back the process-wide settings they change when the run ends, however it ends,
    # so the next trial of a reused worker starts as a fresh process would. Compile workers
    # follow torch's threads, which the Tune trainable sets to the trial's CPUs.
    with (deterministic_kernels(device, config.deterministic),
          CompileSession(config.compile, torch.get_num_threads()) as compiling):
        run = _Run(config, data, device, compiling, eval_sets)
        if resume is not None:
            run.load(resume)
        return _epochs(run, on_epoch)


def _epochs(run: _Run, on_epoch: EpochCallback | None) -> dict[str, Any]:
    """Train ``run`` from its epoch to its budget (or early stop); the last epoch's metrics."""
    config, device = run.config, run.device
    metrics: dict[str, Any] = {}
    host = socket.gethostname()
    n_train = len(run.y["train"])
    while run.epoch < config.epochs:
        train_loss, seconds, train_metrics = run.train_epoch()
        run.epoch += 1
        run.train_seconds += seconds
        if not len(run.y["val"]):
            # No validation (split_ratio=1, final retraining): the latest epoch is the model.
            val_loss, val_scores = math.nan, np.zeros(0)
            val_labels = np.zeros(0, dtype=np.int64)
        else:
            val_loss, val_scores = run.evaluate("val")
            val_labels = run.y["val"].cpu().numpy()
        if run.anomaly and hasattr(run.model, "direction") and len(set(val_labels)) == 2:
            # Polarity with the threshold, on validation: an anomaly score that ranks fakes
            # below reals (AUC < 0.5) is flipped, in the model, so test and later scoring agree.
            if auc(val_labels, val_scores) < 0.5:
                for model in {id(m): m for m in (run.model, run.evaluated)}.values():
                    model.direction.mul_(-1)
                val_scores = -val_scores
        threshold = best_threshold(val_labels, val_scores) if run.anomaly else 0.5
        val = (classification_metrics(val_labels, val_scores, threshold) if len(val_labels)
               else dict.fromkeys(METRIC_NAMES, math.nan))
        improved = val_loss < run.best["val_loss"] or not len(val_labels)
        # The test set is scored every epoch: the best epoch's figures are the trial's
        # (``test_*``), this epoch's are what a run ending here reports (``final_test_*``:
        # Keras' EarlyStopping without restore_best_weights, or a fixed epoch count).
        _, test_scores = run.evaluate("test")
        test = classification_metrics(run.test_labels, test_scores, threshold)
        if improved:
            clean = classification_metrics(run.test_labels[run.test_clean],
                                           test_scores[run.test_clean], threshold)
            extra, extra_scores = run.evaluate_sets(threshold)
            run.best = {
                "val_loss": val_loss, "epoch": run.epoch, "threshold": threshold,
                # Kept whether or not patience is on: the test metrics describe these weights,
                # so evaluations, robustness and explanations of a trial must use them too.
                # On the CPU: a GPU copy per budget (folded runs keep several) would hold
                # device memory for the life of the trial, and past it in a reused worker.
                "weights": cpu_copy(run.evaluated.state_dict()),
                "metrics": {**{f"best_val_{k}": v for k, v in val.items()},
                            **{f"test_{k}": v for k, v in test.items()},
                            **{f"test_clean_{k}": clean[k] for k in CLEAN_METRICS}, **extra},
                "test_scores": test_scores.astype(np.float32),
                "eval_scores": extra_scores,
            }
            run.bad_epochs = 0
        else:
            run.bad_epochs += 1
        stop_reason = ""
        if config.patience and run.bad_epochs >= config.patience:
            stop_reason = "early_stopping"
            # restore_best_weights, as Keras
            run.evaluated.load_state_dict(run.best["weights"])
        elif run.epoch >= config.epochs:
            stop_reason = "budget"
        metrics = {
            "epoch": run.epoch,
            "train_loss": train_loss,
            **train_metrics,
            "val_loss": val_loss,
            **{f"val_{k}": v for k, v in val.items()},
            "threshold": threshold,
            "best_epoch": run.best["epoch"],
            "best_val_loss": run.best["val_loss"],
            **run.best["metrics"],
            **{f"final_test_{k}": v for k, v in test.items()},
            "lr": run.opt.param_groups[0]["lr"],
            "epoch_seconds": seconds,
            "train_seconds": run.train_seconds,
            "eval_sets_seconds": run.eval_sets_seconds,
            "compile_seconds": run.compile_seconds,
            "images_per_second": n_train / seconds if seconds > 0 else math.nan,
            "num_params": run.num_params,
            "device": str(device),
            "node": host,
            "n_train": n_train,
            "n_val": len(run.y["val"]),
            "n_test": len(run.y["test"]),
            "n_test_clean": int(run.test_clean.sum()),
            "stop_reason": stop_reason,
        }
        if on_epoch is not None:
            on_epoch(metrics, run.state)
        if stop_reason:
            break
    return metrics


def cpu_copy(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A copy of a state dict with every tensor on the CPU (checkpoints load it anywhere)."""
    return {k: v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor)
            else copy.deepcopy(v) for k, v in state_dict.items()}


def save_state(state: dict[str, Any], path: str) -> None:
    """Write a checkpoint (``trainables.checkpoint``: data only, never code)."""
    checkpoint.save(state, path)


def load_state(source: str | bytes, map_location: str | torch.device = "cpu"
               ) -> dict[str, Any]:
    """A checkpoint written by ``save_state``, from its path or its bytes, read without
    executing anything in it (``trainables.checkpoint.load``)."""
    return checkpoint.load(source, map_location)


def model_from_state(state: dict[str, Any]) -> nn.Module:
    """Rebuild the trained model from a checkpoint (its config names the architecture).

    The best epoch's weights when the checkpoint holds them (``weights_of``), else the last.
    """
    config = TrainConfig.from_dict(state["config"])
    model = create_model(config.model)
    model.load_state_dict(state["best"].get("weights") or state["model"])
    return model.eval()


def weights_of(state: dict[str, Any]) -> str:
    """"best" when ``model_from_state`` restores the best epoch's weights, else "last".

    Checkpoints written before best weights were always kept hold them only with patience on.
    """
    return "best" if (state.get("best") or {}).get("weights") else "last"
