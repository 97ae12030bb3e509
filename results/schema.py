"""The one place that declares the result tables' columns, their types and the schema version.

Usage: ``from results.schema import TABLES, KEYS, SCHEMA_VERSION``.

Every table is written with ``SCHEMA_VERSION`` in its Parquet metadata; a reader meeting another
version fails with a message saying what to do instead of misreading columns. ``KEYS`` names the
columns that identify a row: merging studies (or a study and its resumed copy) keeps one row per
key.

Versions: 1 = ``trials`` and ``epochs``; 2 adds ``trials.config_key`` and the ``predictions`` and
``studies`` tables (``python -m results.migrate <study_dir>`` upgrades a v1 study).
"""

from __future__ import annotations

import dataclasses

import pyarrow as pa

from trainables.config import TrainConfig
from trainables.metrics import METRIC_NAMES

SCHEMA_VERSION = 2
VERSION_KEY = b"cifake_study.schema_version"
TABLE_KEY = b"cifake_study.table"

_PY_TO_ARROW = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(), "bool": pa.bool_()}


def _metric_type(name: str) -> pa.DataType:
    return pa.int64() if name in ("tn", "fp", "fn", "tp") else pa.float64()


HYPERPARAMETERS = [
    pa.field(f.name, _PY_TO_ARROW[f.type if isinstance(f.type, str) else f.type.__name__])
    for f in dataclasses.fields(TrainConfig)
]
HYPERPARAMETER_NAMES = [f.name for f in HYPERPARAMETERS]

TRIALS = pa.schema(
    [
        pa.field("study", pa.string()),
        pa.field("trial_id", pa.string()),
        # Hash of every hyperparameter but the seed: trials sharing it repeat one configuration.
        pa.field("config_key", pa.string()),
        pa.field("status", pa.string()),  # TERMINATED | ERROR | PENDING
        # budget | early_stopping | asha | error | interrupted
        pa.field("stop_reason", pa.string()),
        pa.field("error", pa.string()),
        *HYPERPARAMETERS,
        pa.field("epochs_run", pa.int64()),  # the epoch the trial stopped at
        pa.field("best_epoch", pa.int64()),
        pa.field("best_val_loss", pa.float64()),
        *[pa.field(f"best_val_{m}", _metric_type(m)) for m in METRIC_NAMES],
        *[pa.field(f"test_{m}", _metric_type(m)) for m in METRIC_NAMES],
        pa.field("threshold", pa.float64()),  # the one the test metrics used
        pa.field("train_seconds", pa.float64()),
        pa.field("wall_seconds", pa.float64()),
        pa.field("images_per_second", pa.float64()),  # median over epochs, training images
        pa.field("num_params", pa.int64()),
        pa.field("n_train", pa.int64()),
        pa.field("n_val", pa.int64()),
        pa.field("n_test", pa.int64()),
        pa.field("restarts", pa.int64()),
        pa.field("node", pa.string()),
        pa.field("device", pa.string()),
    ]
)

EPOCHS = pa.schema(
    [
        pa.field("study", pa.string()),
        pa.field("trial_id", pa.string()),
        pa.field("epoch", pa.int64()),
        pa.field("train_loss", pa.float64()),
        pa.field("val_loss", pa.float64()),
        *[pa.field(f"val_{m}", _metric_type(m)) for m in METRIC_NAMES],
        pa.field("best_epoch", pa.int64()),
        pa.field("test_accuracy", pa.float64()),
        pa.field("test_auc", pa.float64()),
        pa.field("lr", pa.float64()),
        pa.field("epoch_seconds", pa.float64()),
        pa.field("images_per_second", pa.float64()),
        pa.field("stop_reason", pa.string()),
    ]
)

# One row per trial and common-test image, from the best model (the one the test metrics use).
PREDICTIONS = pa.schema(
    [
        pa.field("study", pa.string()),
        pa.field("trial_id", pa.string()),
        pa.field("image_id", pa.string()),  # the image's manifest path
        pa.field("label", pa.int8()),  # 0 REAL, 1 FAKE
        pa.field("score", pa.float32()),  # P(FAKE), or the anomaly score of an anomaly detector
        pa.field("predicted", pa.int8()),  # score >= the trial's threshold
    ]
)

STUDIES = pa.schema(
    [
        pa.field("study", pa.string()),
        pa.field("space", pa.string()),
        pa.field("space_json", pa.string()),
        pa.field("overrides", pa.string()),  # JSON of --set
        pa.field("seed", pa.int64()),
        pa.field("data_fingerprint", pa.string()),
        pa.field("data_source", pa.string()),
        pa.field("data_layout", pa.string()),
        pa.field("code_revision", pa.string()),  # git HEAD of this code, "" outside a checkout
        pa.field("python_version", pa.string()),
        pa.field("ray_version", pa.string()),
        pa.field("torch_version", pa.string()),
        pa.field("platform", pa.string()),
        pa.field("cpu_count", pa.int64()),  # of the Ray cluster when known, else of the driver
        pa.field("gpu_count", pa.int64()),
        pa.field("gpu_names", pa.string()),  # the driver's CUDA devices, "; "-joined
        pa.field("nodes", pa.string()),  # hosts the trials ran on, "; "-joined
        pa.field("devices", pa.string()),  # torch devices the trials ran on, "; "-joined
        pa.field("started", pa.timestamp("us")),
        pa.field("ended", pa.timestamp("us")),  # when the tables were last written
        pa.field("n_trials", pa.int64()),
        pa.field("n_terminated", pa.int64()),
        pa.field("n_error", pa.int64()),
        pa.field("n_pending", pa.int64()),
        pa.field("n_budget", pa.int64()),
        pa.field("n_early_stopping", pa.int64()),
        pa.field("n_asha", pa.int64()),
    ]
)

TABLES = {"trials": TRIALS, "epochs": EPOCHS, "predictions": PREDICTIONS, "studies": STUDIES}

# The columns identifying a row of each table (merges keep the last row per key).
KEYS = {
    "trials": ("study", "trial_id"),
    "epochs": ("study", "trial_id", "epoch"),
    "predictions": ("study", "trial_id", "image_id"),
    "studies": ("study",),
}
