"""The typed, frozen configuration of one training run (one trial of a study).

Every search-space key is a field here; ``TrainConfig.from_dict`` rejects unknown keys and
impossible values with a message that names the key and the allowed range.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

OPTIMIZERS = ("adam", "sgd")
# "exponential": lr * lr_decay**epoch (the seeds' Keras-style decay); "onecycle": per step, a
# linear ramp from lr/10 up to lr over the first ``warmup`` of the run, then linearly to 0 at
# the last step of ``epochs`` (airbench's triangular schedule).
SCHEDULES = ("exponential", "onecycle")


class ConfigError(ValueError):
    """An unknown key or an impossible hyperparameter value."""


@dataclass(frozen=True)
class TrainConfig:
    model: str = "small_cnn"
    batch_size: int = 64
    epochs: int = 10
    # Fraction of the training pool used to train; the rest is the trial's validation set.
    # 1.0 trains on the whole pool with no validation (the last epoch is the model): final
    # retraining (study.train_best), never a study, which ranks trials on validation.
    split_ratio: float = 0.8
    optimizer: str = "adam"
    # 0.001 is the learning rate every seed paper uses with Adam.
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    # Multiplicative learning-rate decay per epoch (Prudhvi et al.: 0.95); 1.0 = constant.
    lr_decay: float = 1.0
    label_smoothing: float = 0.0
    # Early stopping on validation loss, restoring the best weights; 0 = off.
    # Patience 2 in Purba & Suparwito, 3 in Prudhvi et al.
    patience: int = 0
    # On-device augmentation: flips, brightness +-0.1, contrast 0.9-1.1 (Prudhvi et al.).
    augment: bool = False
    # airbench-style on-device augmentation: random left-right flips, and random translations
    # by up to ``translate`` pixels (reflect padding, whole pixels: no resampling blur).
    flip: bool = False
    translate: int = 0
    # Degradations for generalisation (trainables.degrade; Wang et al., CVPR 2020, Sec. 4):
    # the probability of blurring an image (Gaussian, sigma ~ U[0, blur_sigma] pixels), of JPEG
    # re-compressing it (quality ~ U{30..100}) and of resampling it down by U[0.5, 1] and back.
    # Their "Blur+JPEG (0.5)" detector: blur=0.5, jpeg=0.5. 0 = off.
    blur: float = 0.0
    blur_sigma: float = 3.0
    jpeg: float = 0.0
    rescale: float = 0.0
    schedule: str = "exponential"
    # Fraction of the run spent ramping up to the peak lr (schedule="onecycle").
    warmup: float = 0.2
    # Exponential moving average of the weights, decay per step (0 = off). Validation, test
    # and the checkpointed best weights are the average's.
    ema: float = 0.0
    # Test-time augmentation: average the predictions for each image and its mirror image.
    tta: bool = False
    # Input resolution fed to the model; 0 = the model's native resolution.
    image_size: int = 0
    # Input normalisation: "model" = the model's own (its declaration); "unit" = x / 255, as
    # Keras' Rescaling(1/255) in the Purba and Prudhvi seeds; "imagenet" = ImageNet mean/std.
    normalize: str = "model"
    pretrained: bool = False
    seed: int = 0
    # Speed settings: AMP applies on a GPU only; channels_last on every device.
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    # Deterministic CUDA kernels (cuDNN and cuBLAS settings, torch's deterministic algorithms),
    # so a run and its resume are bit-equal on a GPU too, at a measured cost (docs/scaling.md).
    # CPU runs are exact without it; there it changes nothing.
    deterministic: bool = False

    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        unknown = sorted(set(values) - set(cls.fields()))
        if unknown:
            raise ConfigError(
                f"unknown config key(s) {unknown}; valid keys: {', '.join(cls.fields())}"
            )
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        coerced: dict[str, Any] = {}
        for key, value in values.items():
            coerced[key] = _coerce(key, value, types[key])
        config = cls(**coerced)
        config.validate()
        return config

    def asdict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        from trainables.models import model_spec  # late: models import torch

        def need(ok: bool, key: str, rule: str) -> None:
            if not ok:
                raise ConfigError(f"{key}={getattr(self, key)!r} is impossible: {rule}")

        model_spec(self.model)  # raises with the list of known models
        need(self.batch_size >= 1, "batch_size", "must be a positive integer (e.g. 16-128)")
        need(self.epochs >= 1, "epochs", "must be at least 1")
        need(0.0 < self.split_ratio <= 1.0, "split_ratio",
             "must lie in (0, 1]; 1 trains on the whole pool without validation")
        if self.split_ratio == 1.0:
            need(self.patience == 0, "patience",
                 "early stopping needs a validation set; use split_ratio < 1 or patience=0")
        need(self.optimizer in OPTIMIZERS, "optimizer", f"must be one of {OPTIMIZERS}")
        need(self.lr > 0, "lr", "must be positive")
        need(0.0 <= self.momentum < 1.0, "momentum", "must lie in [0, 1)")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(0.0 < self.lr_decay <= 1.0, "lr_decay", "must lie in (0, 1]")
        need(0.0 <= self.label_smoothing < 0.5, "label_smoothing", "must lie in [0, 0.5)")
        need(self.schedule in SCHEDULES, "schedule", f"must be one of {SCHEDULES}")
        need(0.0 <= self.warmup < 1.0, "warmup", "must lie in [0, 1)")
        need(0.0 <= self.ema < 1.0, "ema", "must lie in [0, 1) (e.g. 0.99; 0 disables it)")
        need(0 <= self.translate <= 8, "translate", "must be 0-8 pixels")
        for key in ("blur", "jpeg", "rescale"):
            need(0.0 <= getattr(self, key) <= 1.0, key, "is a probability: must lie in [0, 1]")
        need(0.0 < self.blur_sigma <= 10.0, "blur_sigma",
             "must lie in (0, 10] pixels (Wang et al. use 3 at 224 px; about 1 suits 32 px)")
        need(self.patience >= 0, "patience", "must be >= 0 (0 disables early stopping)")
        need(self.normalize in ("model", "unit", "imagenet"), "normalize",
             "must be 'model' (the model's own), 'unit' (x/255) or 'imagenet'")
        need(
            self.image_size == 0 or 8 <= self.image_size <= 512,
            "image_size",
            "must be 0 (the model's native size) or between 8 and 512 pixels",
        )


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Accept JSON/Tune/numpy scalars; reject values of the wrong kind with a clear message."""
    name = typ if isinstance(typ, str) else typ.__name__
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy scalar from a Tune grid
    try:
        if name == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, (int, float)) and value in (0, 1):
                return bool(value)
            raise TypeError
        if name == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if name == "float":
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if name == "str":
            if not isinstance(value, str):
                raise TypeError
            return value
    except (TypeError, ValueError):
        pass
    raise ConfigError(f"{key}={value!r} must be of type {name}")
