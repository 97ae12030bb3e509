"""Detectors from outside the package: plugin modules, entry points, timm, and the example.

Usage: ``python -m pytest tests/test_plugins.py``.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
import torch

import results
from study.run import main
from trainables.models import MODELS, create_model, model_spec
from trainables.plugins import PluginError, check_model, load_plugins

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "cifake_spectrum" / "cifake_spectrum" / "__init__.py"

PLUGIN = '''
from torch import nn
from trainables.model_base import declare_model
from trainables.models import register_model


@declare_model({name!r}, resolution=16, normalize="unit")
def detector(pretrained=False):
    """A plugin detector: a linear layer on the pixels."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, {outputs}))


register_model(detector)
'''

SPACE = """\
name: {space}
params:
  batch_size: {{grid: [16, 32]}}
fixed: {{model: {model}, epochs: 1, image_size: 16}}
asha: null
"""


def plugin(tmp_path: Path, outputs: int = 2, name: str | None = None) -> tuple[Path, str]:
    name = name or f"det_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.py"
    path.write_text(PLUGIN.format(name=name, outputs=outputs))
    return path, name


def space_file(tmp_path: Path, model: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.format(space=f"s_{uuid.uuid4().hex[:6]}", model=model))
    return path


def test_a_plugin_from_a_folder_adds_a_model_that_a_study_trains(
        ray_session, tiny_data: Path, tmp_path: Path) -> None:
    path, name = plugin(tmp_path)
    storage = tmp_path / "studies"
    assert main(["--plugin", str(path), "--space", str(space_file(tmp_path, name)), "--data",
                 str(tiny_data), "--storage", str(storage), "--name", "p", "--quiet"]) == 0
    assert name in MODELS.names() and model_spec(name).resolution == 16
    trials = results.load(storage / "p")["trials"]
    assert set(trials["model"]) == {name} and (trials["status"] == "TERMINATED").all()
    assert trials["num_params"].iloc[0] == 3 * 16 * 16 * 2 + 2


def test_a_plugin_model_whose_output_does_not_fit_is_refused_before_the_study(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, name = plugin(tmp_path, outputs=3)
    assert main(["--plugin", str(path), "--space", str(space_file(tmp_path, name)),
                 "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"model {name!r} must return floating-point logits of shape (N, 2)" in err
    assert "returned (2, 3) torch.float32" in err


def test_a_plugin_that_reuses_a_built_in_name_is_an_error(tmp_path: Path) -> None:
    path, _ = plugin(tmp_path, name="small_cnn")
    with pytest.raises(PluginError, match="registered twice; give the model a name of its own"):
        load_plugins([str(path)])


def test_a_missing_plugin_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="cannot import it"):
        load_plugins(["no_such_plugin_module"])
    with pytest.raises(PluginError, match="does not exist"):
        load_plugins([str(tmp_path / "missing.py")])


def test_installed_packages_offer_models_through_the_entry_point_group(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"ep_{uuid.uuid4().hex[:8]}"
    site = tmp_path / "site"
    (site / f"{name}_pkg-0.1.dist-info").mkdir(parents=True)
    (site / f"{name}_pkg-0.1.dist-info" / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}-pkg\nVersion: 0.1\n")
    (site / f"{name}_pkg-0.1.dist-info" / "entry_points.txt").write_text(
        f"[cifake_study.models]\n{name} = {name}_module\n")
    (site / f"{name}_module.py").write_text(PLUGIN.format(name=name, outputs=1))
    monkeypatch.syspath_prepend(str(site))
    load_plugins()
    check_model(name)
    assert create_model(name)(torch.zeros(4, 3, 16, 16)).shape == (4, 1)


def test_the_example_spectrum_detector_fits_and_sees_periodic_artefacts() -> None:
    load_plugins([str(EXAMPLE)])
    check_model("spectrum_cnn")
    assert model_spec("spectrum_cnn").description.startswith("A CNN on the log-magnitude")
    spectrum = create_model("spectrum_cnn")[0]
    smooth = torch.rand(1, 3, 4, 4).repeat_interleave(8, 2).repeat_interleave(8, 3)
    checker = smooth + 0.2 * (torch.arange(32).view(1, 1, 32, 1)
                              + torch.arange(32).view(1, 1, 1, 32)).remainder(2)
    # The checkerboard of an up-convolution puts its energy at the Nyquist corner (0, 0).
    assert spectrum(checker)[0, 0, 0, 0] > spectrum(smooth)[0, 0, 0, 0] + 1.0


def test_the_example_space_compares_the_plugin_with_seed_cnns(
        capsys: pytest.CaptureFixture[str]) -> None:
    space = REPO / "examples" / "spectrum_vs_seeds.yaml"
    assert main(["--plugin", str(EXAMPLE), "--space", str(space), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "space spectrum_vs_seeds" in out and "resources spectrum_cnn" in out


timm = pytest.importorskip("timm")


def test_timm_models_are_study_candidates_with_their_own_size_and_normalisation() -> None:
    spec = model_spec("timm/resnet18")
    assert spec.resolution == 224 and spec.normalize == "imagenet" and spec.pretrained
    assert create_model("timm/resnet18")(torch.zeros(2, 3, 64, 64)).shape == (2, 2)
    check_model("timm/resnet18")
    with pytest.raises(Exception, match="timm has no model 'resnet_nope'"):
        model_spec("timm/resnet_nope")


def test_uncached_timm_weights_fail_at_once_naming_the_fetch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(RuntimeError, match="huggingface-cli download timm/resnet18"):
        create_model("timm/resnet18", pretrained=True)


def test_a_timm_model_validates_as_a_hyperparameter(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--space", "quickstart", "--set", "model=timm/resnet18", "--dry-run"]) == 0
    assert "resources timm/resnet18" in capsys.readouterr().out
    assert sys.modules.get("timm") is not None
