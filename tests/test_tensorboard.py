"""TensorBoard sees a study: Tune's event files hold our metrics per epoch and the
hyperparameters (HParams), in the study directory, for ``tensorboard --logdir <study_dir>``.

Usage: ``python -m pytest tests/test_tensorboard.py`` (the session's tiny Ray study).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

import results

event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
hparams_pb2 = pytest.importorskip("tensorboardX.proto.plugin_hparams_pb2")


def read_events(path: Path) -> tuple[dict[str, dict[int, float]], dict[str, object]]:
    """(tag -> step -> value, hyperparameters) from a TFRecord event file, read as
    TensorBoard reads it: length, CRC, an Event, CRC."""
    data = path.read_bytes()
    scalars: dict[str, dict[int, float]] = {}
    hparams: dict[str, object] = {}
    i = 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
        i += 12 + n + 4
        for v in event.summary.value:
            if v.metadata.plugin_data.plugin_name == "hparams":
                info = hparams_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
                for k, val in info.session_start_info.hparams.items():
                    hparams[k] = val.number_value if val.HasField("number_value") else (
                        val.string_value or val.bool_value)
            elif v.HasField("simple_value"):
                scalars.setdefault(v.tag, {})[event.step] = v.simple_value
    return scalars, hparams


def test_every_trial_logs_its_epochs_and_hyperparameters_for_tensorboard(tiny_study: Path
                                                                         ) -> None:
    tables = results.load(tiny_study)
    epochs = tables["epochs"]
    trials = tables["trials"].set_index("trial_id")
    folders = [f for f in tiny_study.iterdir() if f.is_dir() and f.name.startswith("trainable_")]
    assert len(folders) == len(trials)
    for folder in folders:
        (events,) = folder.glob("events.out.tfevents.*")
        scalars, hparams = read_events(events)
        trial_id = next(t for t in trials.index if f"_{t}_" in folder.name)
        mine = epochs[epochs["trial_id"] == trial_id].set_index("epoch")
        assert scalars["ray/tune/val_accuracy"] == pytest.approx(
            mine["val_accuracy"].to_dict(), abs=1e-6)
        assert scalars["ray/tune/train_loss"] == pytest.approx(
            mine["train_loss"].to_dict(), rel=1e-5)
        assert hparams["batch_size"] == trials.loc[trial_id, "batch_size"]
        assert hparams["split_ratio"] == pytest.approx(trials.loc[trial_id, "split_ratio"])
