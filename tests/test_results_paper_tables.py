"""The seed papers' declared figures: every declaration checked by being registered.

Usage: ``python -m pytest tests/test_results_paper_tables.py`` (seconds).
"""

from __future__ import annotations

import pandas as pd
import pytest

from results.paper_tables import PAPER_TABLES, PaperTable, paper_tables
from results.schema import TRIALS
from trainables.models import MODELS
from trainables.registry import UnknownNameError

TRIAL_COLUMNS = {f.name for f in TRIALS}
DECLARED = [t for space in PAPER_TABLES.names() for t in paper_tables(space)]


@pytest.mark.parametrize("table", DECLARED, ids=lambda t: t.source)
def test_declared_table_names_our_models_and_columns(table: PaperTable) -> None:
    for axis, keys in ((table.rows, table.row_keys), (table.cols, table.col_keys)):
        assert axis == "metric" or axis in TRIAL_COLUMNS
        for key in keys:
            for ours in table.matches(key):
                if axis == "model":
                    assert ours in MODELS, f"{table.source}: {key!r} -> unregistered {ours!r}"
                elif axis == "metric":
                    assert ours in TRIAL_COLUMNS, f"{table.source}: {key!r} -> {ours!r}"
                else:
                    assert isinstance(ours, (int, float))
    if "metric" not in (table.rows, table.cols):
        assert table.metric in TRIAL_COLUMNS
    assert all(0 <= v <= 1 for (r, c), v in table.values.items()
               if "Time" not in str(c) and "epoch" not in str(c))


def test_every_seed_paper_space_is_declared() -> None:
    assert PAPER_TABLES.names() == ["bartos_batch", "bartos_split", "bartos_vae_mse",
                                    "iacob_genimage",
                                    "kumar_resnet18", "prudhvi_resnet50", "purba_cnns"]
    with pytest.raises(UnknownNameError, match="known paper spaces: bartos_batch"):
        paper_tables("quickstart")


def test_bartos_tables_hold_the_published_figures() -> None:
    (split,) = paper_tables("bartos_split")
    assert [split.values[(r, "ResNet")] for r in (0.70, 0.75, 0.80)] == [0.85, 0.89, 0.94]
    assert set(split.matches("ResNet")) == {"resnet18_cifar", "resnet18"}
    batch, report = paper_tables("bartos_batch")
    assert [batch.values[(b, "ResNet")] for b in (16, 32, 64, 128)] == [0.92, 0.91, 0.94, 0.93]
    assert [batch.values[(b, "VAE")] for b in (16, 32, 64, 128)] == [0.69, 0.69, 0.71, 0.68]
    assert batch.matches("VAE") == ("vae_detector",)
    # Fig. 5's report: class 0 (FAKE) 0.96 / 0.91 / 0.93, class 1 (REAL) 0.92 / 0.96 / 0.94.
    assert report.values[("ResNet", "Recall FAKE")] == 0.91
    assert report.values[("ResNet", "Recall REAL")] == 0.96
    assert report.where == {"epochs": 50, "batch_size": 64}
    (retry,) = paper_tables("bartos_vae_mse")
    assert retry.values[("VAE (MSE)", "Accuracy")] == 0.685 and retry.epoch == "final"


def test_kumar_figures_follow_from_the_papers_confusion_matrices() -> None:
    (table,) = paper_tables("kumar_resnet18")
    for row, (tp, tn, fp, fn) in (("ResNet-18", (4703, 4955, 88, 254)),
                                  ("Custom CNN", (4749, 4762, 281, 208))):
        precision, recall = tp / (tp + fp), tp / (tp + fn)
        expected = {"Accuracy": (tp + tn) / (tp + tn + fp + fn), "Precision": precision,
                    "Recall": recall, "F1": 2 * precision * recall / (precision + recall)}
        for col, value in expected.items():
            assert table.values[(row, col)] == pytest.approx(value, abs=5e-5), (row, col)


def test_purba_tables_3_and_4_and_the_figures_are_declared() -> None:
    t3, t4, figs = paper_tables("purba_cnns")
    assert t3.values[("CNN #3", "Accuracy")] == 0.94 and t3.values[("VGG16", "Time (s)")] == 638.72
    assert t4.values[("CNN #1", "F1")] == 0.53 and t4.values[("CNN #2", "mAP")] == 0.83
    assert t3.matches("mAP") == ("test_ap",)
    # Figs 14-15: 613 / 436 and 1,269 / 196 of 10,000 per class wrong; stops at epochs 5, 7.
    assert figs.values[("CNN #3", "Recall REAL")] == pytest.approx(0.9387)
    assert figs.values[("VGG16", "Recall FAKE")] == pytest.approx(0.9804)
    assert figs.values[("VGG16", "Stopping epoch")] == 7


def test_a_cell_outside_the_layout_is_rejected() -> None:
    with pytest.raises(ValueError, match="outside the layout"):
        PaperTable(space="x", source="s", rows="batch_size", cols="model", row_keys=(16,),
                   col_keys=("a",), values={(32, "a"): 0.5}).validate()


def _trials(rows: list[dict]) -> pd.DataFrame:
    """Trials rows as a finished study writes them (every column of the schema)."""
    from results.tables import empty

    base = {"study": "s", "status": "TERMINATED", "stop_reason": "budget", "seed": 0}
    new = pd.DataFrame([{**base, "trial_id": f"t{i}", "config_key": f"k{i}", **r}
                        for i, r in enumerate(rows)])
    return new.reindex(columns=list(dict.fromkeys([*empty("trials").columns, *new.columns])))


def test_bartos_table_2_takes_only_the_50_epoch_trials() -> None:
    from results.aggregate import paper_layout

    table = paper_tables("bartos_batch")[0]
    trials = _trials([{"model": "resnet18_cifar", "batch_size": 16, "epochs": 50,
                       "test_accuracy": 0.95, "final_test_accuracy": 0.90},
                      {"model": "resnet18_cifar", "batch_size": 16, "epochs": 80,
                       "test_accuracy": 0.99, "final_test_accuracy": 0.99}])
    layout = paper_layout(trials, table).set_index("batch_size")
    # Not the 80-epoch 0.99, and the model the 50 epochs ended with, not the best epoch's.
    assert layout.loc[16, "ResNet ours"].startswith("0.900")


def test_tables_of_final_models_compare_final_epoch_metrics_and_say_so() -> None:
    from results.aggregate import paper_layout

    purba = paper_tables("purba_cnns")[0]
    prudhvi = paper_tables("prudhvi_resnet50")[0]
    assert purba.epoch == "final" and prudhvi.epoch == "best"  # restore_best_weights=True
    assert purba.column("test_f1") == "final_test_f1"
    assert purba.column("train_seconds") == "train_seconds"
    trials = _trials([{"model": "purba_cnn1", "test_accuracy": 0.95,
                       "final_test_accuracy": 0.91}])
    layout = paper_layout(trials, purba).set_index("model")
    assert layout.loc["CNN #1", "Accuracy ours"].startswith("0.910")


def test_bartos_table_1_compares_validation_accuracy() -> None:
    from results.aggregate import paper_layout

    (table,) = paper_tables("bartos_split")
    trials = _trials([{"model": "resnet18", "split_ratio": 0.7, "epochs": 50,
                       "best_val_accuracy": 0.86, "test_accuracy": 0.5}])
    assert paper_layout(trials, table).set_index("split_ratio").loc[
        0.7, "ResNet ours"].startswith("0.860")


def test_kumar_custom_cnn_row_is_filled_by_the_custom_cnn_the_space_runs() -> None:
    from results.aggregate import paper_layout
    from search_spaces import get_space

    (table,) = paper_tables("kumar_resnet18")
    assert set(get_space("kumar_resnet18").models()) == {"resnet18", "iacob_cnn"}
    trials = _trials([{"model": "iacob_cnn", "test_accuracy": 0.93, "test_precision": 0.9,
                       "test_recall": 0.95, "test_f1": 0.92}])
    row = paper_layout(trials, table).set_index("model").loc["Custom CNN"]
    assert row["Accuracy ours"].startswith("0.930") and row["Accuracy paper"] == 0.9511


def test_a_failed_trial_fills_no_cell() -> None:
    from results.aggregate import paper_layout

    figs = paper_tables("purba_cnns")[2]
    trials = _trials([{"model": "vgg16", "epochs_run": 0, "test_recall": None}])
    trials["status"] = "ERROR"
    layout = paper_layout(trials, figs).set_index("model")
    assert layout.loc["VGG16", "Stopping epoch ours"] == "—"
