"""The seed papers' reported figures, declared per search space, for ``query paper <space>``.

Usage: ``for table in paper_tables("bartos_batch"): ...`` (a ``PaperTable`` lays our results out as
the paper's table does and puts the paper's figure beside ours).

A table has a row axis and a column axis. Each axis is a ``trials`` column (a hyperparameter such
as ``batch_size`` or ``model``) or ``"metric"`` (then the column keys name what is compared). A key
is matched literally (numbers within 1e-9), or through ``aliases``: the paper's label -> our
values (our model names, or for the metric axis our ``trials`` column). Keys without our
counterpart alias to ``()`` and show only the paper's figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainables.registry import Registry

Key = Any  # a number, or a paper's label


@dataclass(frozen=True)
class PaperTable:
    space: str
    source: str  # "Bartos & Akyol (2023), Table 2"
    rows: str  # a trials column, or "metric"
    cols: str  # a trials column, or "metric"
    row_keys: tuple[Key, ...]
    col_keys: tuple[Key, ...]
    values: dict[tuple[Key, Key], float]  # (row key, col key) -> the paper's figure
    metric: str = "test_accuracy"  # our column, when neither axis is "metric"
    aliases: dict[Key, tuple[Any, ...]] = field(default_factory=dict)
    note: str = ""
    # Only our trials with these column values fill the table (e.g. the epoch budget a
    # paper's table reports, where the space varies it).
    where: dict[str, Any] = field(default_factory=dict)
    # Which model the paper scored: "best" (the lowest-validation-loss epoch, restored: our
    # test_* columns) or "final" (the weights training ended with: Keras' EarlyStopping without
    # restore_best_weights, or a fixed epoch count: our final_test_* columns).
    epoch: str = "best"

    def validate(self) -> PaperTable:
        if self.epoch not in ("best", "final"):
            raise ValueError(f"{self.source}: epoch must be 'best' or 'final'")
        if "metric" not in (self.rows, self.cols) and not self.metric:
            raise ValueError(f"{self.source}: a table without a metric axis needs `metric`")
        for r, c in self.values:
            if r not in self.row_keys or c not in self.col_keys:
                raise ValueError(f"{self.source}: cell ({r!r}, {c!r}) is outside the layout")
        return self

    def matches(self, key: Key) -> tuple[Any, ...]:
        """Our values standing for the paper's ``key``."""
        return self.aliases.get(key, (key,))

    def column(self, metric: str) -> str:
        """Our trials column for ``metric`` (a ``test_*`` column) at the epoch the paper
        scored: ``final_test_*`` for a table of final models."""
        if self.epoch == "final" and metric.startswith("test_"):
            return "final_" + metric
        return metric


PAPER_TABLES: Registry[list[PaperTable]] = Registry("paper space")


def declare(*tables: PaperTable) -> None:
    by_space: dict[str, list[PaperTable]] = {}
    for t in tables:
        by_space.setdefault(t.space, []).append(t.validate())
    for space, declared in by_space.items():
        PAPER_TABLES.add(space, declared)


def paper_tables(space: str) -> list[PaperTable]:
    """The tables declared for ``space``; an unknown space lists the declared ones."""
    return PAPER_TABLES.get(space)


def _cells(rows: dict[Key, tuple[float, ...]], cols: tuple[Key, ...]
           ) -> dict[tuple[Key, Key], float]:
    return {(r, c): v for r, values in rows.items() for c, v in zip(cols, values, strict=True)}


RESNET = ("resnet18_cifar", "resnet18")  # Bartos & Akyol's "ResNet" (depth not stated)

declare(
    PaperTable(
        space="bartos_split", source="Bartos & Akyol (2023), Table 1",
        rows="split_ratio", cols="model", row_keys=(0.70, 0.75, 0.80), col_keys=("ResNet",),
        values={(0.70, "ResNet"): 0.85, (0.75, "ResNet"): 0.89, (0.80, "ResNet"): 0.94},
        aliases={"ResNet": RESNET}, metric="best_val_accuracy",
        note="ResNet, 50 epochs, batch 64. Their ratio splits the data they train on from the "
             "data they score, which is our validation split of the training pool, so ours is "
             "the best validation accuracy (CIFAKE's fixed test set scores every ratio alike).",
    ),
    PaperTable(
        space="bartos_batch", source="Bartos & Akyol (2023), Table 2",
        rows="batch_size", cols="model", row_keys=(16, 32, 64, 128), col_keys=("ResNet", "VAE"),
        values={(16, "ResNet"): 0.92, (32, "ResNet"): 0.91, (64, "ResNet"): 0.94,
                (128, "ResNet"): 0.93, (16, "VAE"): 0.69, (32, "VAE"): 0.69, (64, "VAE"): 0.71,
                (128, "VAE"): 0.68},
        aliases={"ResNet": RESNET, "VAE": ("vae_detector",)}, where={"epochs": 50},
        epoch="final",
        note="Accuracy after 50 epochs (section IV), so only our 50-epoch trials fill it (the "
             "space's other budgets are left out), and of the model those 50 epochs ended "
             "with (a fixed epoch count, no checkpoint selection); the VAE is an anomaly "
             "detector.",
    ),
    PaperTable(
        space="bartos_batch", source="Bartos & Akyol (2023), Fig. 5 (the best ResNet)",
        rows="model", cols="metric", row_keys=("ResNet",),
        col_keys=("Precision FAKE", "Recall FAKE", "F1 FAKE", "Precision REAL", "Recall REAL",
                  "F1 REAL", "Accuracy", "Macro F1", "Weighted F1"),
        # Their report's class 0 is FAKE and class 1 REAL: Keras' flow_from_directory numbers
        # class folders alphabetically, and CIFAKE's are FAKE/ and REAL/.
        values=_cells({"ResNet": (0.96, 0.91, 0.93, 0.92, 0.96, 0.94, 0.94, 0.94, 0.94)},
                      ("Precision FAKE", "Recall FAKE", "F1 FAKE", "Precision REAL",
                       "Recall REAL", "F1 REAL", "Accuracy", "Macro F1", "Weighted F1")),
        aliases={"ResNet": RESNET, "Precision FAKE": ("test_precision",),
                 "Recall FAKE": ("test_recall",), "F1 FAKE": ("test_f1",),
                 "Precision REAL": ("test_precision_real",), "Recall REAL": ("test_recall_real",),
                 "F1 REAL": ("test_f1_real",), "Accuracy": ("test_accuracy",),
                 "Macro F1": ("test_f1_macro",), "Weighted F1": ("test_f1_weighted",)},
        where={"epochs": 50, "batch_size": 64}, epoch="final",
        note="The scikit-learn report of their best run (batch 64, 50 epochs); classes 0 and 1 "
             "read as FAKE and REAL (Keras numbers class folders alphabetically).",
    ),
    PaperTable(
        space="bartos_vae_mse", source="Bartos & Akyol (2023), section IV (the VAE retry)",
        rows="model", cols="metric", row_keys=("VAE (MSE)",), col_keys=("Accuracy",),
        values={("VAE (MSE)", "Accuracy"): 0.685},
        aliases={"VAE (MSE)": ("vae_detector_mse",), "Accuracy": ("test_accuracy",)},
        epoch="final",
        note="Mean squared error instead of binary cross-entropy, with early stopping: "
             "\"the classification accuracy remained at 68.5%\".",
    ),
)

_PURBA_MODELS = {"CNN #1": ("purba_cnn1",), "CNN #2": ("purba_cnn2",),
                 "CNN #3": ("purba_cnn3",), "VGG16": ("vgg16",)}
_PURBA_KEYS = ("CNN #1", "CNN #2", "CNN #3", "VGG16")
_PURBA_METRICS = {"F1": ("test_f1",), "Accuracy": ("test_accuracy",), "mAP": ("test_ap",)}


declare(
    PaperTable(
        space="purba_cnns", source="Purba & Suparwito (2025), Table 3",
        rows="model", cols="metric", row_keys=_PURBA_KEYS,
        col_keys=("F1", "Accuracy", "mAP", "Time (s)"),
        values=_cells({"CNN #1": (0.93, 0.92, 0.98, 1401.48), "CNN #2": (0.93, 0.92, 0.98, 718.77),
                       "CNN #3": (0.94, 0.94, 0.98, 501.43), "VGG16": (0.93, 0.93, 0.98, 638.72)},
                      ("F1", "Accuracy", "mAP", "Time (s)")),
        aliases={**_PURBA_MODELS, **_PURBA_METRICS, "Time (s)": ("train_seconds",)},
        epoch="final",
        note="On CIFAKE's 20,000 test images (the text calls them validation data); time is "
             "training seconds on their hardware. mAP is average precision. Their Keras "
             "EarlyStopping (patience 2) names no restore_best_weights, whose default is off: "
             "the model scored is the one training stopped with.",
    ),
    PaperTable(
        space="purba_cnns", source="Purba & Suparwito (2025), Table 4",
        rows="model", cols="metric", row_keys=_PURBA_KEYS, col_keys=("F1", "Accuracy", "mAP"),
        values=_cells({"CNN #1": (0.53, 0.65, 0.65), "CNN #2": (0.75, 0.70, 0.83),
                       "CNN #3": (0.80, 0.83, 0.80), "VGG16": (0.80, 0.80, 0.81)},
                      ("F1", "Accuracy", "mAP")),
        aliases={**_PURBA_MODELS, **_PURBA_METRICS}, epoch="final",
        note="Theirs: 20 new images (10 FAKE, 10 REAL) outside CIFAKE; ours: the study's common "
             "test set. The comparison shows the gap, it is not like for like. The paper "
             "contradicts itself here: its Figs 16-17 confusion matrices give VGG16 14 of 20 "
             "right (0.70, not 0.80) and CNN #3 14 of 20 (0.70, not 0.83).",
    ),
    PaperTable(
        space="purba_cnns", source="Purba & Suparwito (2025), Figs 10, 12, 14 and 15",
        rows="model", cols="metric", row_keys=("CNN #3", "VGG16"),
        col_keys=("Recall REAL", "Recall FAKE", "Stopping epoch"),
        # Fig. 14: CNN #3 misclassifies 613 of the 10,000 REAL and 436 of the 10,000 FAKE test
        # images; Fig. 15: VGG16 1,269 and 196. Figs 10 and 12: training stopped at epochs 5
        # and 7.
        values=_cells({"CNN #3": (1 - 613 / 10_000, 1 - 436 / 10_000, 5),
                       "VGG16": (1 - 1269 / 10_000, 1 - 196 / 10_000, 7)},
                      ("Recall REAL", "Recall FAKE", "Stopping epoch")),
        aliases={"CNN #3": ("purba_cnn3",), "VGG16": ("vgg16",),
                 "Recall REAL": ("test_recall_real",), "Recall FAKE": ("test_recall",),
                 "Stopping epoch": ("epochs_run",)},
        epoch="final",
        note="Their confusion matrices as rates per class (the counts are of 10,000 test "
             "images per class; our hold-out has 5,000), and the epoch early stopping ended "
             "training at.",
    ),
    PaperTable(
        space="kumar_resnet18", source="Kumar, section V.E confusion matrices",
        rows="model", cols="metric", row_keys=("ResNet-18", "Custom CNN"),
        col_keys=("Accuracy", "Precision", "Recall", "F1"),
        # Derived from TP/TN/FP/FN on 10,000 test images: ResNet-18 4703/4955/88/254, Custom CNN
        # 4749/4762/281/208 (e.g. accuracy (4703 + 4955) / 10000 = 0.9658).
        values=_cells({"ResNet-18": (0.9658, 0.9816, 0.9488, 0.9649),
                       "Custom CNN": (0.9511, 0.9441, 0.9580, 0.9510)},
                      ("Accuracy", "Precision", "Recall", "F1")),
        aliases={"ResNet-18": ("resnet18",), "Custom CNN": ("iacob_cnn",),
                 "Accuracy": ("test_accuracy",), "Precision": ("test_precision",),
                 "Recall": ("test_recall",), "F1": ("test_f1",)},
        note="FAKE is the positive class. Kumar's custom CNN is not specified layer by layer; "
             "kumar_resnet18 runs the seeds' other custom CNN (Iacob & Nuta's) in its place, "
             "at its native 32 px, which is what that row compares.",
    ),
    PaperTable(
        space="iacob_genimage", source="Iacob & Nuta (draft), section 5",
        rows="model", cols="metric", row_keys=("Custom CNN", "ResNet50", "ConvNextSmall"),
        col_keys=("Accuracy", "Precision", "F1"), values={},
        aliases={"Custom CNN": ("iacob_cnn",), "ResNet50": ("resnet50_frozen_head",),
                 "ConvNextSmall": ("convnext_small",), "Accuracy": ("test_accuracy",),
                 "Precision": ("test_precision",), "F1": ("test_f1",)},
        note="The seed's Results section is empty: it reports no figures. The layout is the "
             "metrics it names (accuracy, precision, F1) for its three models, on tiny-GenImage.",
    ),
    PaperTable(
        space="prudhvi_resnet50", source="Prudhvi et al., Figure 4 classification report",
        rows="model", cols="metric", row_keys=("ResNet50",),
        col_keys=("Accuracy", "Precision AI", "Recall AI", "F1 AI", "Precision REAL",
                  "Recall REAL", "F1 REAL", "Macro F1", "Weighted F1"),
        values=_cells({"ResNet50": (0.93, 0.94, 0.98, 0.96, 0.86, 0.68, 0.76, 0.86, 0.93)},
                      ("Accuracy", "Precision AI", "Recall AI", "F1 AI", "Precision REAL",
                       "Recall REAL", "F1 REAL", "Macro F1", "Weighted F1")),
        aliases={"ResNet50": ("resnet50_dense_head",), "Accuracy": ("test_accuracy",),
                 "Precision AI": ("test_precision",), "Recall AI": ("test_recall",),
                 "F1 AI": ("test_f1",), "Precision REAL": ("test_precision_real",),
                 "Recall REAL": ("test_recall_real",), "F1 REAL": ("test_f1_real",),
                 "Macro F1": ("test_f1_macro",), "Weighted F1": ("test_f1_weighted",)},
        note="Theirs: a held-out set of 2,352 images (1,974 AI, 378 REAL), so weighted and "
             "per-class figures reflect that imbalance; ours: the study's common test set.",
    ),
)
