"""Result tables: schema round trip, merging studies and resumed studies, bad files, migration.

Usage: ``python -m pytest tests/test_results_tables.py`` (no Ray; real Parquet and checkpoints).
"""

from __future__ import annotations

import datetime as dt
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import IDS, LABELS, info, outcome, write

import results
from results.migrate import main as migrate_main
from results.schema import KEYS, RUN_TABLES, SCHEMA_VERSION, TABLE_KEY, TABLES, VERSION_KEY
from results.sql import connect
from results.tables import MergeError, SchemaError, config_key


def test_every_table_round_trips_with_its_declared_schema_and_version(tmp_path: Path) -> None:
    paths = write(tmp_path / "s", "s", [outcome(tmp_path, "t1"), outcome(tmp_path, "t2")],
                  ended=dt.datetime(2025, 1, 2, 4, 0))
    assert sorted(Path(p).name for p in paths) == sorted(f"{n}.parquet" for n in RUN_TABLES)
    for name in RUN_TABLES:
        schema = TABLES[name]
        stored = pq.read_schema(tmp_path / "s" / f"{name}.parquet")
        assert stored.metadata[VERSION_KEY] == str(SCHEMA_VERSION).encode()
        assert stored.metadata[TABLE_KEY] == name.encode()
        assert stored.remove_metadata().equals(schema), name
    tables = results.load(tmp_path / "s")
    trials = tables["trials"]
    assert list(trials["trial_id"]) == ["t1", "t2"]
    t1 = trials.iloc[0]
    assert (t1["model"], t1["batch_size"], t1["epochs"], t1["seed"]) == ("small_cnn", 32, 3, 0)
    assert (t1["epochs_run"], t1["stop_reason"], t1["status"]) == (3, "budget", "TERMINATED")
    assert (t1["node"], t1["device"], t1["num_params"]) == ("node-a", "cpu", 1234)
    assert t1["images_per_second"] == 200.0 and t1["wall_seconds"] == 4.0
    assert t1["config_key"] == trials.iloc[1]["config_key"]  # same configuration
    preds = tables["predictions"]
    assert len(preds) == 16 and list(preds["image_id"][:8]) == IDS
    assert list(preds["label"][:8]) == LABELS
    assert list(preds["predicted"][:8]) == [0, 0, 0, 1, 0, 1, 1, 1]  # score >= 0.5
    assert preds["score"].dtype == np.float32
    study = tables["studies"].iloc[0]
    assert (study["study"], study["space"], study["data_fingerprint"]) == ("s", "unit", "abc")
    assert (study["code_revision"], study["platform"], study["torch_version"]) == (
        "deadbeef", "test-os", "2.y")
    assert study["started"] == pd.Timestamp("2025-01-02 03:04:05")
    assert study["ended"] == pd.Timestamp("2025-01-02 04:00")
    assert (study["n_trials"], study["n_terminated"], study["n_budget"]) == (2, 2, 2)
    assert (study["nodes"], study["devices"]) == ("node-a", "cpu")


def test_config_key_ignores_the_seed_and_numpy_scalars() -> None:
    a = config_key({"model": "small_cnn", "batch_size": 32, "seed": 0})
    assert a == config_key({"model": "small_cnn", "batch_size": 32, "seed": 5})
    assert a != config_key({"model": "small_cnn", "batch_size": 64, "seed": 0})


def test_resumed_study_written_twice_keeps_one_row_per_key(tmp_path: Path) -> None:
    study = tmp_path / "s"
    # The first write happens when the study is interrupted after two epochs of t1 ...
    write(study, "s", [outcome(tmp_path, "t1", epochs=2), outcome(tmp_path, "t2")])
    # ... the resumed study reports t1 again (finished) and a new t3, but not t2.
    write(study, "s", [outcome(tmp_path, "t1", epochs=3, accuracy=0.9),
                       outcome(tmp_path, "t3")])
    tables = results.load(study)
    trials = tables["trials"].set_index("trial_id")
    assert sorted(trials.index) == ["t1", "t2", "t3"]
    assert trials.loc["t1", "epochs_run"] == 3 and trials.loc["t1", "test_accuracy"] == 0.9
    for name, keys in KEYS.items():
        assert not tables[name].duplicated(list(keys)).any(), name
    assert len(tables["epochs"]) == 9 and len(tables["predictions"]) == 24
    assert len(tables["studies"]) == 1 and tables["studies"]["n_trials"].item() == 3


def test_several_studies_merge_and_a_copy_adds_no_duplicates(tmp_path: Path) -> None:
    write(tmp_path / "all" / "a", "a", [outcome(tmp_path, "t1"), outcome(tmp_path, "t2")])
    write(tmp_path / "all" / "b", "b", [outcome(tmp_path, "t1")])
    shutil.copytree(tmp_path / "all" / "a", tmp_path / "copy_of_a")
    for source in ([tmp_path / "all" / "a", tmp_path / "all" / "b", tmp_path / "copy_of_a"],
                   tmp_path / "all"):
        tables = results.load(source)
        assert sorted(zip(tables["trials"]["study"], tables["trials"]["trial_id"],
                          strict=True)) == [("a", "t1"), ("a", "t2"), ("b", "t1")]
        assert len(tables["epochs"]) == 9 and len(tables["predictions"]) == 24
        assert sorted(tables["studies"]["study"]) == ["a", "b"]
    con = connect([tmp_path / "all" / "a", tmp_path / "all" / "b", tmp_path / "copy_of_a"])
    assert con.sql("SELECT count(*) FROM trials").fetchall()[0][0] == 3
    assert con.sql("SELECT count(*) FROM predictions").fetchall()[0][0] == 24
    assert con.sql("SELECT count(DISTINCT study) FROM studies").fetchall()[0][0] == 2


def test_a_later_copy_of_a_study_wins_the_merge(tmp_path: Path) -> None:
    write(tmp_path / "old", "s", [outcome(tmp_path, "t1", epochs=2)])
    write(tmp_path / "new", "s", [outcome(tmp_path, "t1", epochs=3)])
    trials = results.load([tmp_path / "old", tmp_path / "new"])["trials"]
    assert len(trials) == 1 and trials["epochs_run"].item() == 3
    con = connect([tmp_path / "old", tmp_path / "new"])
    assert con.sql("SELECT epochs_run FROM trials").fetchall() == [(3,)]


def test_two_different_studies_sharing_a_name_refuse_to_merge(tmp_path: Path) -> None:
    write(tmp_path / "x", "same", [outcome(tmp_path, "t1")], info=info("same", "2025-01-01"))
    write(tmp_path / "y", "same", [outcome(tmp_path, "t1")], info=info("same", "2025-02-01"))
    with pytest.raises(MergeError, match="two different studies are both named 'same'"):
        results.load([tmp_path / "x", tmp_path / "y"])


def test_corrupt_parquet_file_gives_a_clear_error(tmp_path: Path) -> None:
    write(tmp_path / "s", "s", [outcome(tmp_path, "t1")])
    path = tmp_path / "s" / "trials.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a write cut short
    with pytest.raises(SchemaError, match=r"trials\.parquet is not a readable Parquet file"):
        results.load(tmp_path / "s")
    path.write_bytes(b"definitely not parquet")
    with pytest.raises(SchemaError, match="corrupt"):
        results.load(tmp_path / "s")


def test_foreign_parquet_file_gives_a_clear_error(tmp_path: Path) -> None:
    write(tmp_path / "s", "s", [outcome(tmp_path, "t1")])
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "s" / "epochs.parquet")
    with pytest.raises(SchemaError, match="is not a study table"):
        results.load(tmp_path / "s")
    with pytest.raises(SchemaError, match="is not a study table"):
        connect(tmp_path / "s")


def test_a_table_saved_under_another_name_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "s", "s", [outcome(tmp_path, "t1")])
    shutil.copy(tmp_path / "s" / "epochs.parquet", tmp_path / "s" / "trials.parquet")
    with pytest.raises(SchemaError, match="holds the 'epochs' table, not 'trials'"):
        results.load(tmp_path / "s")


def test_a_folder_without_studies_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"holds no trials\.parquet"):
        results.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        results.load(tmp_path / "missing")


def _downgrade_to_v1(study: Path) -> None:
    """Rewrite a study as schema v1 wrote it: trials without config_key, no new tables."""
    for name in ("predictions", "studies"):
        (study / f"{name}.parquet").unlink()
    for name in ("trials", "epochs"):
        table = pq.read_table(study / f"{name}.parquet")
        if name == "trials":
            table = table.drop(["config_key"])
        meta = {VERSION_KEY: b"1", TABLE_KEY: name.encode()}
        pq.write_table(table.replace_schema_metadata(meta), study / f"{name}.parquet")
    (study / "study.json").write_text('{"name": "s", "schema_version": 1, "space": {"name": '
                                      '"unit"}, "created": "2025-01-02T03:04:05"}')


def test_older_schema_is_refused_with_the_fix_and_migrates(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    study = tmp_path / "s"
    write(study, "s", [outcome(tmp_path, "t1"), outcome(tmp_path, "t2", batch_size=64)])
    keys = list(results.load(study)["trials"]["config_key"])
    _downgrade_to_v1(study)
    with pytest.raises(SchemaError, match=rf"schema v1; this version reads v{SCHEMA_VERSION}: "
                                          r"upgrade it with `python -m results.migrate"):
        results.load(study)
    assert migrate_main([str(study)]) == 0
    tables = results.load(study)
    assert list(tables["trials"]["config_key"]) == keys
    assert len(tables["predictions"]) == 0  # v1 kept no labels: rebuilt on resume
    assert tables["studies"]["space"].item() == "unit"
    assert f'"schema_version": {SCHEMA_VERSION}' in (study / "study.json").read_text()
    assert migrate_main([str(study)]) == 0
    assert f"already v{SCHEMA_VERSION}" in capsys.readouterr().out


RECIPE_KEYS = ["flip", "translate", "schedule", "warmup", "ema", "tta"]  # new in schema v3


def test_v2_study_gains_the_recipe_hyperparameters_at_their_defaults(tmp_path: Path) -> None:
    study = tmp_path / "s"
    write(study, "s", [outcome(tmp_path, "t1"), outcome(tmp_path, "t2", batch_size=64)])
    keys = list(results.load(study)["trials"]["config_key"])
    for name in TABLES:
        path = study / f"{name}.parquet"
        if path.exists():
            table = pq.read_table(path)
            if name == "trials":
                table = table.drop(RECIPE_KEYS).set_column(
                    table.schema.get_field_index("config_key"), "config_key",
                    pa.array(["old-key-1", "old-key-2"]))
            pq.write_table(table.replace_schema_metadata(
                {VERSION_KEY: b"2", TABLE_KEY: name.encode()}), path)
    with pytest.raises(SchemaError, match=f"schema v2; this version reads v{SCHEMA_VERSION}"):
        results.load(study)
    assert migrate_main([str(study)]) == 0
    trials = results.load(study)["trials"]
    # The defaults reproduce v2's training, so keys match those of the same trials run today.
    assert list(trials["config_key"]) == keys
    assert (trials[RECIPE_KEYS].iloc[0].to_dict() ==
            {"flip": False, "translate": 0, "schedule": "exponential", "warmup": 0.2,
             "ema": 0.0, "tta": False})


DEGRADE_KEYS = ["blur", "blur_sigma", "jpeg", "rescale"]  # new in schema v5


def test_v4_study_gains_the_v5_hyperparameters_off_and_leaves_new_metrics_empty(
        tmp_path: Path) -> None:
    study = tmp_path / "s"
    compiled = outcome(tmp_path, "t2", batch_size=64)
    compiled.config["compile"] = True
    write(study, "s", [outcome(tmp_path, "t1"), compiled])
    keys = list(results.load(study)["trials"]["config_key"])
    for name in TABLES:
        path = study / f"{name}.parquet"
        if path.exists():
            table = pq.read_table(path)
            new = [c for c in table.column_names if c in DEGRADE_KEYS or c.startswith(
                ("final_test_", "test_clean_", "train_acc", "train_prec", "train_rec",
                 "train_f1")) or c in ("n_test_clean", "deterministic", "compile_seconds")]
            table = table.drop(new)
            if name == "trials":
                table = table.set_column(table.schema.get_field_index("config_key"),
                                         "config_key", pa.array(["old-key-1", "old-key-2"]))
            pq.write_table(table.replace_schema_metadata(
                {VERSION_KEY: b"4", TABLE_KEY: name.encode()}), path)
    with pytest.raises(SchemaError, match=f"schema v4; this version reads v{SCHEMA_VERSION}"):
        results.load(study)
    assert migrate_main([str(study)]) == 0
    tables = results.load(study)
    trials = tables["trials"].set_index("trial_id")
    # Degradations off and deterministic=False are how v4 trained: the keys are those of the
    # same trials run today.
    assert list(trials["config_key"]) == keys
    assert trials[DEGRADE_KEYS].iloc[0].to_dict() == {"blur": 0.0, "blur_sigma": 3.0,
                                                      "jpeg": 0.0, "rescale": 0.0}
    assert not trials["deterministic"].any()
    # v4 timed no compilation apart: none without compile, unknown (in train_seconds) with it.
    assert trials.loc["t1", "compile_seconds"] == 0.0
    assert pd.isna(trials.loc["t2", "compile_seconds"])
    # What v4 did not measure stays unknown.
    assert trials["final_test_accuracy"].isna().all() and trials["n_test_clean"].isna().all()
    assert tables["epochs"]["train_accuracy"].isna().all()


def test_checkpoint_without_labels_leaves_labels_null(tmp_path: Path) -> None:
    write(tmp_path / "s", "s", [outcome(tmp_path, "t1", labels=False)])
    preds = results.load(tmp_path / "s")["predictions"]
    assert len(preds) == 8 and preds["label"].isna().all() and preds["score"].notna().all()


def test_unreadable_checkpoint_warns_and_the_trial_keeps_its_row(tmp_path: Path) -> None:
    bad = outcome(tmp_path, "t1")
    (Path(bad.checkpoint_dir) / "checkpoint.pt").write_bytes(b"garbage")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write(tmp_path / "s", "s", [bad, outcome(tmp_path, "t2")])
    assert any("t1: cannot read its checkpoint" in str(w.message) for w in caught)
    tables = results.load(tmp_path / "s")
    assert len(tables["trials"]) == 2
    assert set(tables["predictions"]["trial_id"]) == {"t2"}


def test_a_folded_run_is_one_trial_per_budget_cut_from_its_history(tmp_path: Path) -> None:
    from trainables.folding import split_trial_id

    # A run serving budgets 1, 3 and 5 that the scheduler stopped after epoch 2.
    o = outcome(tmp_path, "run_00000", epochs=2)
    o.history["stop_reason"] = ""
    o.config["budgets"], o.config["epochs"] = [1, 3, 5], 5
    write(tmp_path / "s", "s", [o])
    tables = results.load(tmp_path / "s")
    trials = tables["trials"].set_index("epochs")
    assert trials.loc[1, "trial_id"] == "run_00000-e1"
    assert trials.loc[5, "trial_id"] == "run_00000"
    assert split_trial_id("run_00000-e1") == ("run_00000", 1)
    assert split_trial_id("run_00000") == ("run_00000", None)
    # Budget 1 was trained through; budgets 3 and 5 share the run's cut at epoch 2.
    assert (trials.loc[1, "epochs_run"], trials.loc[1, "stop_reason"]) == (1, "budget")
    for b in (3, 5):
        assert (trials.loc[b, "epochs_run"], trials.loc[b, "stop_reason"]) == (2, "asha")
    assert (trials["status"] == "TERMINATED").all()
    assert trials.loc[1, "wall_seconds"] == 2.0 and trials.loc[3, "wall_seconds"] == 3.0
    assert trials["config_key"].is_unique  # the keys of the unfolded grid's three configs
    assert "budgets" not in trials.columns
    epochs = tables["epochs"]
    assert sorted(epochs.groupby("trial_id").size().tolist()) == [1, 2, 2]
    assert len(tables["predictions"]) == 3 * len(IDS)


def test_a_folded_run_that_fails_keeps_the_budgets_it_finished(tmp_path: Path) -> None:
    o = outcome(tmp_path, "run_00000", epochs=2)
    o.history["stop_reason"] = ""
    o.config["budgets"], o.config["epochs"] = [2, 4], 4
    o.error = "FloatingPointError: training diverged at epoch 3"
    write(tmp_path / "s", "s", [o])
    trials = results.load(tmp_path / "s")["trials"].set_index("epochs")
    assert (trials.loc[2, "status"], trials.loc[2, "stop_reason"]) == ("TERMINATED", "budget")
    assert (trials.loc[4, "status"], trials.loc[4, "stop_reason"]) == ("ERROR", "error")
    assert "diverged" in trials.loc[4, "error"]
