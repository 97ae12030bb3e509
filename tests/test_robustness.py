"""Perturbations, FGSM and PGD, and the study.robustness command.

Usage: ``python -m pytest tests/test_robustness.py``
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import smooth_image
from oom import out_of_memory_above
from PIL import Image

import results
from study.robustness import main
from study.trials import best_trial
from trainables import robustness as rb
from trainables.inference import Detector
from trainables.ingest import load_dataset


@pytest.fixture(scope="module")
def test_set(tiny_data: Path) -> tuple[np.ndarray, np.ndarray]:
    data = load_dataset(tiny_data, progress=False)
    test = data.manifest["split"].to_numpy() == "test"
    return data.images[test], data.labels[test]


def noise_images(n: int = 4, size: int = 16) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_jpeg_is_pil_encoding_and_lower_quality_loses_more() -> None:
    images = noise_images()
    q95, q50 = rb.jpeg(images, 95), rb.jpeg(images, 50)
    assert q95.shape == images.shape and q95.dtype == np.uint8
    buf = io.BytesIO()
    Image.fromarray(images[0]).save(buf, format="JPEG", quality=95)
    assert np.array_equal(q95[0], np.asarray(Image.open(buf).convert("RGB")))
    err = [np.abs(x.astype(int) - images).mean() for x in (q95, q50)]
    assert 0 < err[0] < err[1]


def test_rescale_returns_to_the_original_size_and_downscaling_blurs() -> None:
    images = noise_images()
    for factor in (0.5, 2.0):
        out = rb.rescale(images, factor)
        assert out.shape == images.shape and out.dtype == np.uint8
    smooth = np.stack([smooth_image(np.random.default_rng(i), 16) for i in range(4)])
    # Noise does not survive 0.5x; a smooth image barely changes under 2x and back.
    assert np.abs(rb.rescale(images, 0.5).astype(int) - images).mean() > 30
    assert np.abs(rb.rescale(smooth, 2.0).astype(int) - smooth).mean() < 2


def test_gaussian_noise_has_the_requested_sigma_and_is_seeded() -> None:
    images = np.full((8, 32, 32, 3), 128, np.uint8)
    noisy = rb.gaussian_noise(images, 5.0, seed=1)
    assert (noisy.astype(float) - 128).std() == pytest.approx(5.0, rel=0.05)
    assert np.array_equal(noisy, rb.gaussian_noise(images, 5.0, seed=1))
    assert not np.array_equal(noisy, rb.gaussian_noise(images, 5.0, seed=2))


def margin(detector: Detector, x: torch.Tensor, y: torch.Tensor) -> float:
    """How far the images sit on the wrong side (higher = worse for the detector)."""
    with torch.no_grad():
        return float(((1 - 2 * y.float()) * detector.decision(x)).mean())


@pytest.mark.parametrize("model", ["small_cnn", "vae_detector"])
def test_attacks_stay_in_the_eps_ball_and_push_images_to_the_wrong_side(
    trained_states: dict, test_set: tuple[np.ndarray, np.ndarray], model: str
) -> None:
    detector = Detector.from_state(trained_states[model])
    images, labels = test_set
    x = detector.to_unit(images)
    y = torch.as_tensor(labels)
    eps = 4 / 255
    clean = margin(detector, x, y)
    for attack in (rb.fgsm, rb.pgd):
        adv = attack(detector, x, y, eps)
        assert (adv - x).abs().max() <= eps + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1
        assert margin(detector, adv, y) > clean
    # PGD's ten projected steps go at least as far as FGSM's one.
    assert margin(detector, rb.pgd(detector, x, y, eps), y) >= margin(
        detector, rb.fgsm(detector, x, y, eps), y) - 1e-6


def test_pgd_hides_fakes_from_a_perfect_classifier_that_mild_noise_does_not(
    trained_states: dict, test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    detector = Detector.from_state(trained_states["small_cnn"])
    images, labels = test_set
    rows = {(r["perturbation"], r["strength"]): r for r in rb.robustness(
        detector, images, labels, jpeg_qualities=[95], scales=[2.0], noise_sigmas=[2.0],
        epsilons=[8 / 255])}
    assert rows[("none", 0.0)]["accuracy"] == 1.0
    assert rows[("noise", 2.0)]["accuracy"] >= 0.9
    # The FAKE cue (a +-24/255 checker) is larger than 8/255, so PGD cannot paint it onto REAL
    # images, but it can weaken it enough to hide the FAKE ones: their recall collapses.
    pgd = rows[("pgd", 8 / 255)]
    assert pgd["recall"] < 0.5 and pgd["accuracy"] < 0.75
    assert pgd["accuracy"] <= rows[("fgsm", 8 / 255)]["accuracy"]


def test_batches_that_run_out_of_memory_are_halved_and_score_the_same(
    trained_states: dict, test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    detector = Detector.from_state(trained_states["small_cnn"])
    images, labels = test_set
    expected = rb.attacked_scores(detector, images, labels, rb.pgd, 4 / 255, batch_size=32)
    clean = detector.scores(images, batch_size=32)
    with out_of_memory_above(5) as raised:
        halved = rb.attacked_scores(detector, images, labels, rb.pgd, 4 / 255, batch_size=32)
        clean_halved = detector.scores(images, batch_size=32)
    assert raised[:3] == [32, 16, 8] and len(halved) == len(images) == 32
    np.testing.assert_allclose(halved, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(clean_halved, clean, rtol=1e-5, atol=1e-6)


def test_robustness_command_writes_one_row_per_condition_and_a_figure(
    study_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(study_copy), "--trial", "best", "--quiet"]) == 0
    out = capsys.readouterr().out
    tables = results.load(study_copy)
    rob, trials = tables["robustness"], tables["trials"]
    best = best_trial(trials)
    assert set(rob["trial_id"]) == {best["trial_id"]}
    # clean + 4 JPEG + 2 rescale + 3 noise + 4 FGSM + 4 PGD
    assert len(rob) == 18 and rob["perturbation"].value_counts().to_dict() == {
        "jpeg": 4, "fgsm": 4, "pgd": 4, "noise": 3, "rescale": 2, "none": 1}
    clean = rob[rob["perturbation"] == "none"].iloc[0]
    assert clean["n_images"] == 32 and clean["weights"] == "best"
    assert clean["accuracy"] == pytest.approx(best["test_accuracy"])  # the same model and set
    assert sorted(rob.loc[rob["perturbation"] == "pgd", "strength"] * 255) == pytest.approx(
        [1, 2, 4, 8])
    figure = study_copy / "figures" / f"robustness_{best['trial_id']}.png"
    assert figure.stat().st_size > 10_000 and str(figure) in out
    # Rerunning (here on fewer conditions) replaces the trial's rows; others' rows stay.
    other = trials["trial_id"][trials["trial_id"] != best["trial_id"]].iloc[0]
    assert main([str(study_copy), "--trial", best["trial_id"], other, "--jpeg", "90",
                 "--scales", "--sigmas", "--eps", "2", "--limit", "8", "--quiet"]) == 0
    rob = results.load(study_copy)["robustness"]
    assert rob.groupby("trial_id").size().to_dict() == {best["trial_id"]: 4, other: 4}
    assert set(rob["n_images"]) == {8}


def test_robustness_refuses_impossible_strengths(study_copy: Path) -> None:
    with pytest.raises(SystemExit):
        main([str(study_copy), "--jpeg", "0"])
    with pytest.raises(SystemExit):
        main([str(study_copy), "--eps", "-1"])


def test_robustness_of_a_study_whose_data_moved_says_pass_data(
    study_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    info = (study_copy / "study.json").read_text()
    (study_copy / "study.json").write_text(info.replace('"data_source": "',
                                                        '"data_source": "/nowhere'))
    assert main([str(study_copy), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "/nowhere" in err and "is not there" in err and "--data" in err


def test_analysis_commands_default_to_the_cpu_as_their_help_says() -> None:
    import study.evaluate
    import study.explain
    import study.predict
    import study.robustness

    for module, argv in ((study.evaluate, ["s", "--data", "d"]), (study.explain, ["s"]),
                         (study.robustness, ["s"]), (study.predict, ["p", "--study", "s"])):
        assert module.parse_args(argv).device == "cpu", module.__name__
        assert module.parse_args([*argv, "--device", "cuda"]).device == "cuda"
    for module in (study.explain, study.robustness):
        assert module.parse_args(["s"]).batch_size == 256
        assert module.parse_args(["s", "--batch-size", "64"]).batch_size == 64
        with pytest.raises(SystemExit):
            module.parse_args(["s", "--batch-size", "0"])
