"""The framework-free training loop: reproducible, resumable, early-stopping, with full metrics."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import snapshot

from trainables.config import TrainConfig
from trainables.dataset import make_splits
from trainables.inference import Detector
from trainables.loader import Preprocess, augment
from trainables.metrics import METRIC_NAMES, best_threshold, classification_metrics
from trainables.train import load_state, model_from_state, save_state, select_device, train

FAST = dict(model="small_cnn", batch_size=16, image_size=16, split_ratio=0.75)


def run(data, device=None, **kw):
    history: list[dict] = []
    states: list[dict] = []
    final = train(TrainConfig(**{**FAST, **kw}), data, device=device,
                  on_epoch=lambda m, s: (history.append(m), states.append(snapshot(s()))))
    return final, history, states


def test_metrics_cover_validation_and_the_common_test_set(data) -> None:
    final, history, _ = run(data, epochs=2)
    assert [m["epoch"] for m in history] == [1, 2]
    for name in METRIC_NAMES:
        assert f"val_{name}" in final and f"test_{name}" in final
    assert final["n_train"] == 72 and final["n_val"] == 24 and final["n_test"] == 32
    assert final["stop_reason"] == "budget" and final["device"] == "cpu"
    assert final["num_params"] > 0 and final["images_per_second"] > 0


def test_same_seed_gives_the_same_run_on_the_cpu(data) -> None:
    a, _, _ = run(data, "cpu", epochs=2, seed=3, augment=True)
    b, _, _ = run(data, "cpu", epochs=2, seed=3, augment=True)
    assert a["val_loss"] == b["val_loss"] and a["train_loss"] == b["train_loss"]
    c, _, _ = run(data, "cpu", epochs=2, seed=4, augment=True)
    assert c["train_loss"] != a["train_loss"]


def test_resume_continues_from_saved_epoch_exactly_on_the_cpu(data, tmp_path: Path) -> None:
    """On the CPU a resumed run is the uninterrupted one; on CUDA that needs deterministic=True
    (cuDNN may choose non-deterministic kernels), which only a GPU run can check
    (benchmarks/gpu_paths.py)."""
    full, _, states = run(data, "cpu", epochs=3, seed=1)
    path = str(tmp_path / "ckpt.pt")
    save_state(states[0], path)  # as if the trial died after epoch 1
    resumed_history: list[dict] = []
    resumed = train(TrainConfig(**{**FAST, "epochs": 3, "seed": 1}), data, device="cpu",
                    resume=load_state(path), on_epoch=lambda m, s: resumed_history.append(m))
    assert [m["epoch"] for m in resumed_history] == [2, 3]
    assert resumed["val_loss"] == pytest.approx(full["val_loss"], rel=1e-6)
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], rel=1e-6)


@pytest.mark.parametrize("model", ["small_cnn", "vae_detector"])
def test_stored_test_scores_are_what_inference_computes_under_any_autocast(data, model) -> None:
    _, _, states = run(data, epochs=2, model=model)
    state = states[-1]
    test_images = data.images[make_splits(data, FAST["split_ratio"], 0).test]
    detector = Detector.from_state(state)
    stored = state["best"]["test_scores"]
    np.testing.assert_allclose(detector.scores(test_images), stored, rtol=1e-6, atol=1e-6)
    # Anomaly scores are ~100: float32 rounding (memory layout, batching) is relative.
    # A caller under bf16 autocast (as training steps on a GPU) still gets the fp32 scores.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        np.testing.assert_allclose(detector.scores(test_images), stored, rtol=1e-6, atol=1e-6)


def test_checkpoint_describes_itself_and_rebuilds_the_model(data) -> None:
    _, _, states = run(data, epochs=1)
    state = states[-1]
    assert state["config"]["model"] == "small_cnn" and state["epoch"] == 1
    assert {"model", "optimizer", "scheduler", "best", "test_ids"} <= set(state)
    model = model_from_state(state)
    assert isinstance(model, torch.nn.Module) and not model.training


def test_checkpoint_of_another_config_is_refused(data) -> None:
    _, _, states = run(data, epochs=1)
    with pytest.raises(ValueError, match="another configuration"):
        train(TrainConfig(**{**FAST, "epochs": 2, "lr": 0.01}), data, resume=states[-1])


def test_early_stopping_restores_best_weights(data) -> None:
    # On this data, seed and CPU, validation loss bottoms out at epoch 2 (0.029, then 0.045).
    final, history, states = run(data, epochs=10, patience=1, lr=0.01)
    assert final["stop_reason"] == "early_stopping"
    assert len(history) < 10
    assert final["best_epoch"] < final["epoch"]
    best, restored = states[-1]["best"]["weights"], states[-1]["model"]
    assert all(torch.equal(best[k], restored[k]) for k in best)


def test_final_epoch_test_metrics_are_those_of_the_weights_a_run_ends_with(data) -> None:
    """Keras' EarlyStopping without restore_best_weights reports the stopping epoch's model;
    ``final_test_*`` is that, ``test_*`` the best epoch's."""
    # The test labels shuffled (training and validation untouched), so that the test figures
    # are far from saturated and tell one epoch's weights from another's.
    from dataclasses import replace

    manifest = data.manifest.copy()
    test = np.flatnonzero(manifest["split"].to_numpy() == "test")
    labels = manifest["label"].to_numpy().copy()
    labels[test] = np.random.default_rng(0).permutation(labels[test])
    manifest["label"] = labels
    data = replace(data, manifest=manifest)
    # As in test_early_stopping_restores_best_weights: best at epoch 2, stopped at epoch 3.
    stopped, history, _ = run(data, epochs=10, patience=1, lr=0.01)
    assert stopped["stop_reason"] == "early_stopping" and stopped["epoch"] == 3
    for m in history:
        if m["best_epoch"] == m["epoch"]:  # the best epoch so far: the same weights
            assert m["final_test_auc"] == m["test_auc"]
    # The same run without patience ends with epoch 3's weights, those early stopping
    # restored away: scored as inference scores them, they give the final figures.
    plain, _, states = run(data, epochs=3, lr=0.01)
    assert plain["final_test_auc"] == stopped["final_test_auc"] != stopped["test_auc"]
    state = states[-1]
    last = Detector.from_state({**state, "best": {**state["best"], "weights": None}})
    cfg = TrainConfig.from_dict(state["config"])
    images = data.images[make_splits(data, cfg.split_ratio, cfg.seed).test]
    expected = classification_metrics(np.asarray(state["test_labels"]), last.scores(images))
    assert stopped["final_test_auc"] == pytest.approx(expected["auc"])
    assert stopped["final_test_accuracy"] == pytest.approx(expected["accuracy"])
    assert {"train_accuracy", "train_precision", "train_recall", "train_f1"} <= set(stopped)
    assert all(0.0 <= m["train_accuracy"] <= 1.0 for m in history)


def test_clean_test_metrics_leave_out_test_images_copied_in_the_training_pool(
        tmp_path: Path) -> None:
    import shutil

    from helpers import write_cifake_folder

    from trainables.ingest import load_dataset

    root = write_cifake_folder(tmp_path / "cifake", n_train=24, n_test=8)
    # Three test images that are byte-identical to training images, as CIFAKE has hundreds.
    for i, path in enumerate(sorted((root / "train" / "FAKE").iterdir())[:3]):
        shutil.copy(path, root / "test" / "FAKE" / f"copy{i}{path.suffix}")
    leaky = load_dataset(root, progress=False)
    final, _, _ = run(leaky, epochs=2)
    assert final["n_test"] == 19 and final["n_test_clean"] == 16
    for m in ("accuracy", "precision", "recall", "f1", "auc", "ap"):
        assert f"test_clean_{m}" in final


def test_diverging_run_raises_a_clear_error(data) -> None:
    with pytest.raises(FloatingPointError, match="lower lr"):
        run(data, epochs=3, lr=1e20, optimizer="sgd")


def test_device_falls_back_to_cpu_without_cuda() -> None:
    assert select_device("cuda").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_augmentation_keeps_range_and_shape_and_is_seeded() -> None:
    x = torch.rand(8, 3, 16, 16)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a, b = augment(x.clone(), g1), augment(x.clone(), g2)
    assert torch.equal(a, b) and a.shape == x.shape
    assert a.min() >= 0 and a.max() <= 1
    prep = Preprocess(32, "imagenet", channels_last=False, augment=False)
    out = prep(torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8))
    assert out.shape == (2, 3, 32, 32)


def test_metrics_match_hand_counts() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.6, 0.7, 0.4, 0.9])
    m = classification_metrics(labels, scores)
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (1, 1, 1, 2)
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["auc"] == pytest.approx(5 / 6)
    # The best threshold reaches the best accuracy any cut can (4 of 5 here).
    t = best_threshold(labels, scores)
    assert classification_metrics(labels, scores, t)["accuracy"] == pytest.approx(0.8)
    single = classification_metrics(np.array([1, 1]), np.array([0.2, 0.9]))
    assert np.isnan(single["auc"])


@pytest.mark.parametrize("seed", range(4))
def test_metrics_equal_scikit_learn(seed: int) -> None:
    import sklearn.metrics as skm

    rng = np.random.default_rng(seed)
    n = [7, 60, 500, 3][seed]
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    scores = rng.random(n).round(1 if seed % 2 else 6)  # coarse scores: many ties
    if seed == 3:
        scores[:] = 0.9  # every image predicted FAKE: REAL's precision is 0/0
    m = classification_metrics(labels, scores)
    pred = (scores >= 0.5).astype(int)
    p, r, f, _ = skm.precision_recall_fscore_support(labels, pred, labels=[0, 1],
                                                     zero_division=0)
    expected = {
        "accuracy": skm.accuracy_score(labels, pred),
        "precision": p[1], "recall": r[1], "f1": f[1],
        "precision_real": p[0], "recall_real": r[0], "f1_real": f[0],
        **{f"{k}_{avg}": v for avg in ("macro", "weighted") for k, v in zip(
            ("precision", "recall", "f1"), skm.precision_recall_fscore_support(
                labels, pred, labels=[0, 1], average=avg, zero_division=0)[:3], strict=False)},
        "auc": skm.roc_auc_score(labels, scores),
        "ap": skm.average_precision_score(labels, scores),
        **dict(zip(("tn", "fp", "fn", "tp"),
                   skm.confusion_matrix(labels, pred, labels=[0, 1]).ravel(), strict=True)),
    }
    assert set(expected) == set(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert m[name] == pytest.approx(expected[name], abs=1e-12), name


@pytest.mark.slow  # a fresh interpreter importing torch: ~5 s
def test_a_trial_process_does_not_import_scikit_learn() -> None:
    # Each Ray worker pays for its imports (time and memory, benchmarks/memory.py); the epoch
    # metrics are numpy so that scikit-learn stays out of the trial process.
    import subprocess
    import sys

    code = "import sys, trainables.tune_adapter; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], check=True)
    assert out.stdout.strip() == "False"


def test_a_trial_process_does_not_import_the_ingest() -> None:
    # A trial gets a decoded ImageSet (trainables.dataset); zip reading, layout detection,
    # decoders and the cache (trainables.ingest) belong to the driver, not to every Ray worker.
    import subprocess
    import sys

    ingest = ("trainables.ingest", "trainables.layouts", "trainables.images")
    code = ("import sys, trainables.train, trainables.dataset; "
            f"print(sorted(m for m in {ingest!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], check=True)
    assert out.stdout.strip() == "[]"


def test_trainables_never_import_ray_except_the_adapter() -> None:
    package = Path(__file__).resolve().parents[1] / "trainables"
    offenders = []
    for path in package.glob("*.py"):
        if path.name == "tune_adapter.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "ray"]
    assert offenders == []


def test_an_epochs_draws_give_each_image_its_own_augmentation() -> None:
    prep = Preprocess(16, "imagenet", channels_last=False, augment=True, flip=True, translate=2)
    assert prep.uniforms == 7  # translate (dy, dx), flip, augment's four
    x = torch.randint(0, 256, (10, 3, 16, 16), dtype=torch.uint8)
    u = prep.draw(10, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert u.shape == (10, 7)
    # A batch's rows of the epoch's draws augment it as the whole epoch's call would.
    whole = prep(x, u=u)
    assert torch.equal(prep(x[3:7], u=u[3:7]), whole[3:7])
    # The normalisation constants are built once per device, not per batch.
    assert prep._normalisation(torch.device("cpu")) is prep._normalisation(torch.device("cpu"))
