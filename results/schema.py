"""The one place that declares the result tables' columns, their types and the schema version.

Usage: ``from results.schema import TABLES, KEYS, SCHEMA_VERSION``.

Every table is written with ``SCHEMA_VERSION`` in its Parquet metadata; a reader meeting another
version fails with a message saying what to do instead of misreading columns. ``KEYS`` names the
columns that identify a row: merging studies (or a study and its resumed copy) keeps one row per
key.

Versions: 1 = ``trials`` and ``epochs``; 2 adds ``trials.config_key`` and the ``predictions`` and
``studies`` tables (``python -m results.migrate <study_dir>`` upgrades a v1 study). Within v2 the
analysis tables ``evaluations``, ``eval_predictions`` and ``robustness`` were added without
changing any existing column: a study without them reads them as empty, so no version bump.
3 adds the training-recipe hyperparameters (``flip``, ``translate``, ``schedule``, ``warmup``,
``ema``, ``tta``) to ``trials``, which changes every ``config_key``. 4 adds the ``normalize``
hyperparameter and ``trials.checkpoint``, the folder of each trial's last checkpoint as the study
recorded it (for older studies ``results.migrate`` finds it among Tune's trial folders).
5 adds the degradation hyperparameters (``blur``, ``blur_sigma``, ``jpeg``, ``rescale``) and
``deterministic`` (deterministic CUDA kernels; ``config_key`` changes), the final epoch's test
metrics (``trials.final_test_*``, ``epochs.final_test_accuracy``/``_auc``), the clean test
set's (``trials.test_clean_*``, ``n_test_clean``), the training metrics per epoch
(``epochs.train_*``) and ``trials.compile_seconds``, the time ``torch.compile`` took, which
``train_seconds`` no longer includes (v4's included it in its first epoch).
A study's evaluation sets (``--eval-data``) add float columns ``eval_*`` to ``trials`` and
``epochs`` (``EXTRA_COLUMNS``) and rows to ``evaluations`` and ``eval_predictions``: nothing that
existed changes, so no version bump.
``cross_generator`` is not a table of one study: ``study.cross_generator`` writes it to its own
folder (``OTHER_TABLES``).
"""

from __future__ import annotations

import dataclasses

import pyarrow as pa

from trainables.config import TrainConfig
from trainables.eval_sets import is_eval_column
from trainables.metrics import CLEAN_METRICS, METRIC_NAMES, TRAIN_METRICS

SCHEMA_VERSION = 5
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
        pa.field("status", pa.string()),  # TERMINATED | ERROR | INTERRUPTED | PENDING
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
        # The test metrics of the trial's last epoch's weights: what a run reports that keeps
        # its final model (Keras' EarlyStopping without restore_best_weights; fixed epochs).
        *[pa.field(f"final_test_{m}", _metric_type(m)) for m in METRIC_NAMES],
        # The best epoch's test metrics on the test images that have no byte-identical copy in
        # the training pool, and how many those are.
        *[pa.field(f"test_clean_{m}", pa.float64()) for m in CLEAN_METRICS],
        pa.field("n_test_clean", pa.int64()),
        pa.field("train_seconds", pa.float64()),  # training epochs, without compilation
        # torch.compile's compilations over the run: 0 without compile; null where unknown
        # (v4 studies of compile=true trials, whose train_seconds include it)
        pa.field("compile_seconds", pa.float64()),
        pa.field("wall_seconds", pa.float64()),
        pa.field("images_per_second", pa.float64()),  # median over epochs, training images
        pa.field("num_params", pa.int64()),
        pa.field("n_train", pa.int64()),
        pa.field("n_val", pa.int64()),
        pa.field("n_test", pa.int64()),
        pa.field("restarts", pa.int64()),
        pa.field("node", pa.string()),
        pa.field("device", pa.string()),
        # The trial's last checkpoint folder, relative to the study directory (absolute or a
        # URI when it lies elsewhere); a folded budget's trial names its run's checkpoint.
        pa.field("checkpoint", pa.string()),
    ]
)

EPOCHS = pa.schema(
    [
        pa.field("study", pa.string()),
        pa.field("trial_id", pa.string()),
        pa.field("epoch", pa.int64()),
        pa.field("train_loss", pa.float64()),
        # On the batches as trained (augmented, dropout on), as Keras reports them in fit.
        *[pa.field(f"train_{m}", pa.float64()) for m in TRAIN_METRICS],
        pa.field("val_loss", pa.float64()),
        *[pa.field(f"val_{m}", _metric_type(m)) for m in METRIC_NAMES],
        pa.field("best_epoch", pa.int64()),
        pa.field("test_accuracy", pa.float64()),  # of the best epoch so far
        pa.field("test_auc", pa.float64()),
        pa.field("final_test_accuracy", pa.float64()),  # of this epoch's weights
        pa.field("final_test_auc", pa.float64()),
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

_METRICS = [pa.field(m, _metric_type(m)) for m in METRIC_NAMES]  # as trials' test_* columns

# One row per trial and evaluation set: ``python -m study.evaluate`` scored the trial's checkpoint
# on every image (both splits) of another data source.
EVALUATIONS = pa.schema(
    [
        pa.field("study", pa.string()),
        pa.field("trial_id", pa.string()),
        pa.field("eval_set", pa.string()),  # --name, default the data folder's or zip's name
        pa.field("model", pa.string()),
        pa.field("weights", pa.string()),  # best (the epoch test_* describe) | last
        pa.field("data_source", pa.string()),
        pa.field("data_fingerprint", pa.string()),
        pa.field("data_layout", pa.string()),
        pa.field("image_size", pa.int64()),  # pixels at ingest (centre crop and resize)
        pa.field("n_images", pa.int64()),
        pa.field("n_real", pa.int64()),
        pa.field("n_fake", pa.int64()),
        pa.field("threshold", pa.float64()),  # the trial's own; never re-tuned on the eval set
        *_METRICS,
        pa.field("evaluated", pa.timestamp("us")),
    ]
)

# One row per trial, evaluation set and image of that set.
EVAL_PREDICTIONS = pa.schema(
    [
        pa.field("study", pa.string()),
        pa.field("trial_id", pa.string()),
        pa.field("eval_set", pa.string()),
        pa.field("image_id", pa.string()),  # the image's manifest path in the eval source
        pa.field("generator", pa.string()),  # tiny-GenImage generator folder, else ""
        pa.field("split", pa.string()),  # the image's split in the eval source
        pa.field("label", pa.int8()),  # 0 REAL, 1 FAKE
        pa.field("score", pa.float32()),  # P(FAKE), or the anomaly score
        pa.field("predicted", pa.int8()),  # score >= the trial's threshold
    ]
)

# One row per trial, perturbation and strength, on the study's common test set.
ROBUSTNESS = pa.schema(
    [
        pa.field("study", pa.string()),
        pa.field("trial_id", pa.string()),
        pa.field("model", pa.string()),
        pa.field("weights", pa.string()),
        # none | jpeg | rescale | noise | fgsm | pgd
        pa.field("perturbation", pa.string()),
        # JPEG quality; scale factor; noise sigma on 0-255; attack eps in [0, 1] pixel space
        pa.field("strength", pa.float64()),
        pa.field("condition", pa.string()),  # readable, e.g. "PGD eps 4/255"
        pa.field("pgd_steps", pa.int64()),
        pa.field("n_images", pa.int64()),
        pa.field("mean_score", pa.float64()),
        pa.field("threshold", pa.float64()),
        *_METRICS,
        pa.field("data_fingerprint", pa.string()),
        pa.field("evaluated", pa.timestamp("us")),
    ]
)

# Train on one generator, test on each (``python -m study.cross_generator``); long form: the
# matrix is ``pivot(index="trained_on", columns="tested_on", values="accuracy")`` per encoding.
CROSS_GENERATOR = pa.schema(
    [
        pa.field("encoding", pa.string()),  # original | jpeg (every image re-encoded)
        pa.field("jpeg_quality", pa.int64()),  # null for original
        pa.field("trained_on", pa.string()),
        pa.field("tested_on", pa.string()),
        pa.field("model", pa.string()),
        pa.field("seed", pa.int64()),
        pa.field("config", pa.string()),  # JSON of the TrainConfig every cell was trained with
        pa.field("data_source", pa.string()),
        pa.field("data_fingerprint", pa.string()),
        pa.field("n_train", pa.int64()),  # training images of trained_on (validation excluded)
        pa.field("n_images", pa.int64()),  # test images of tested_on
        pa.field("threshold", pa.float64()),
        *_METRICS,
        pa.field("train_seconds", pa.float64()),
    ]
)

# Columns a table holds beyond its declared ones, by name: the metrics of a study's evaluation
# sets (``--eval-data``; ``trainables.eval_sets``), one column per set, metric and generator.
# They are float64, added where a study has such sets, and never change a declared column.
EXTRA_COLUMNS = {"trials": is_eval_column, "epochs": is_eval_column}


# The tables of a study directory; ``study.run`` writes RUN_TABLES, the analysis commands the rest.
TABLES = {"trials": TRIALS, "epochs": EPOCHS, "predictions": PREDICTIONS, "studies": STUDIES,
          "evaluations": EVALUATIONS, "eval_predictions": EVAL_PREDICTIONS,
          "robustness": ROBUSTNESS}
RUN_TABLES = ("trials", "epochs", "predictions", "studies")
OTHER_TABLES = {"cross_generator": CROSS_GENERATOR}
SCHEMAS = {**TABLES, **OTHER_TABLES}


def extra_columns(name: str, columns: list[str]) -> list[str]:
    """The columns among ``columns`` that table ``name`` keeps beyond its declared ones."""
    keep = EXTRA_COLUMNS.get(name)
    declared = set(SCHEMAS[name].names)
    return [c for c in columns if keep and keep(c) and c not in declared]

# The columns identifying a row of each table (merges keep the last row per key).
KEYS = {
    "trials": ("study", "trial_id"),
    "epochs": ("study", "trial_id", "epoch"),
    "predictions": ("study", "trial_id", "image_id"),
    "studies": ("study",),
    "evaluations": ("study", "trial_id", "eval_set"),
    "eval_predictions": ("study", "trial_id", "eval_set", "image_id"),
    "robustness": ("study", "trial_id", "perturbation", "strength"),
}
OTHER_KEYS = {"cross_generator": ("encoding", "trained_on", "tested_on")}
# Rows within the first n key columns keep the order they were written in (image order, or the
# order of the robustness conditions) instead of being sorted on the whole key.
ORDERED_PREFIX = {"predictions": 2, "eval_predictions": 3, "robustness": 2}
