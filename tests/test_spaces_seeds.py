"""The seed papers' named spaces: exact protocols, trial counts, per-model values and TPE."""

from __future__ import annotations

from pathlib import Path

import pytest

import results
from search_spaces import SPACES, Space, SpaceError, get_space, grid, per_model
from search_spaces.base import Asha, choice
from search_spaces.tuning import to_tune
from study.run import main
from trainables.config import TrainConfig
from trainables.models import model_spec

# Trials each paper implies (a grid: the product of its varied values).
SEED_TRIALS = {
    "bartos_split": 3,  # Table 1: split 0.70, 0.75, 0.80
    "bartos_batch": 2 * 4 * 5,  # Table 2: {ResNet, VAE} x batch {16..128} x epochs {40..80}
    "kumar_resnet18": 2,  # ResNet-18 vs the custom CNN
    "purba_cnns": 4,  # Table 1: CNN #1-#3 and VGG16
    "iacob_genimage": 3,  # custom CNN, ResNet-50, ConvNeXt-Small
    "prudhvi_resnet50": 1,  # one ResNet-50
    "cifake_tpe": 40,  # TPE samples
}


@pytest.mark.parametrize("name", sorted(SEED_TRIALS))
def test_seed_space_validates_cites_its_paper_and_round_trips_through_json(name: str) -> None:
    space = get_space(name)
    assert name in SPACES.names()
    assert space.paper
    assert Space.from_json(space.to_json()) == space


@pytest.mark.parametrize(("name", "trials"), sorted(SEED_TRIALS.items()))
def test_seed_space_dry_run_prints_the_trial_count_of_its_paper(
    name: str, trials: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--space", name, "--dry-run"]) == 0
    assert f"{trials} trials" in capsys.readouterr().out
    assert get_space(name).trial_count() == trials


@pytest.mark.parametrize("name", sorted(n for n in SEED_TRIALS if n != "cifake_tpe"))
def test_every_grid_configuration_of_a_seed_space_is_a_valid_train_config(name: str) -> None:
    configs = get_space(name).grid_configs()
    assert len(configs) == SEED_TRIALS[name]
    for config in configs:
        cfg = TrainConfig.from_dict(config)
        # ImageNet weights only where the model has them: no trial fails on that.
        assert not cfg.pretrained or model_spec(cfg.model).pretrained


def _configs(name: str) -> list[TrainConfig]:
    return [TrainConfig.from_dict(c) for c in get_space(name).grid_configs()]


def test_bartos_split_is_table_1() -> None:
    configs = _configs("bartos_split")
    assert sorted(c.split_ratio for c in configs) == [0.70, 0.75, 0.80]
    for c in configs:
        assert (c.model, c.epochs, c.batch_size, c.image_size) == ("resnet18", 50, 64, 64)
    assert get_space("bartos_split").asha is None


def test_bartos_batch_is_table_2_with_a_single_asha_rung_at_50_epochs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    space = get_space("bartos_batch")
    configs = _configs("bartos_batch")
    assert {c.model for c in configs} == {"resnet18", "vae_detector"}
    assert {c.batch_size for c in configs} == {16, 32, 64, 128}
    assert {c.epochs for c in configs} == {40, 50, 60, 70, 80}
    assert {(c.split_ratio, c.image_size) for c in configs} == {(0.75, 64)}
    assert {(c.model, c.pretrained) for c in configs} == {("resnet18", True),
                                                          ("vae_detector", False)}
    assert space.asha is not None and space.asha.rungs(space.max_epochs()) == [50]
    assert main(["--space", "bartos_batch", "--dry-run"]) == 0
    assert "rungs at epochs [50]" in capsys.readouterr().out


def test_kumar_trains_pretrained_resnet18_at_224_against_a_scratch_cnn() -> None:
    by_model = {c.model: c for c in _configs("kumar_resnet18")}
    assert set(by_model) == {"resnet18", "iacob_cnn"}
    assert by_model["resnet18"].pretrained and not by_model["iacob_cnn"].pretrained
    assert model_spec("resnet18").resolution == 224 and by_model["resnet18"].image_size == 0
    for c in by_model.values():
        assert (c.optimizer, c.lr, c.epochs) == ("adam", 1e-3, 10)


def test_purba_cnns_stop_early_after_two_epochs_without_improvement() -> None:
    configs = _configs("purba_cnns")
    assert [c.model for c in configs] == ["purba_cnn1", "purba_cnn2", "purba_cnn3", "vgg16"]
    assert {(c.patience, c.epochs, c.image_size, c.lr) for c in configs} == {(2, 100, 32, 1e-3)}
    assert [c.pretrained for c in configs] == [False, False, False, True]


def test_iacob_genimage_pretrains_only_the_imagenet_models() -> None:
    by_model = {c.model: c for c in _configs("iacob_genimage")}
    assert {m: c.pretrained for m, c in by_model.items()} == {
        "iacob_cnn": False, "resnet50_frozen_head": True, "convnext_small": True}
    assert {(c.seed, c.augment) for c in by_model.values()} == {(42, False)}
    assert "tiny-GenImage" in get_space("iacob_genimage").data_hint


def test_prudhvi_split_ratio_makes_70_20_10_with_the_fixed_hold_out() -> None:
    from trainables.dataset import HOLDOUT_FRACTION

    (c,) = _configs("prudhvi_resnet50")
    pool = 1.0 - HOLDOUT_FRACTION  # 0.90 of all images remain after the 10 % test hold-out
    assert c.split_ratio * pool == pytest.approx(0.70)
    assert (1.0 - c.split_ratio) * pool == pytest.approx(0.20)
    assert (c.model, c.lr_decay, c.augment, c.patience, c.epochs, c.pretrained) == (
        "resnet50_dense_head", 0.95, True, 3, 10, True)


def test_cifake_tpe_searches_with_optuna_under_asha_and_samples_valid_configs() -> None:
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    space = get_space("cifake_tpe")
    assert space.search == "optuna_tpe" and space.params["lr"].kind == "loguniform"
    assert {"lr", "weight_decay", "batch_size", "augment", "model"} <= set(space.params)
    setup = to_tune(space, seed=1)
    assert isinstance(setup.search_alg, OptunaSearch)
    assert isinstance(setup.scheduler, ASHAScheduler)
    assert setup.num_samples == 40
    setup.search_alg.set_search_properties(setup.metric, setup.mode, setup.param_space)
    for i in range(3):
        suggested = setup.search_alg.suggest(f"trial{i}")
        fixed = {k: v for k, v in setup.param_space.items() if k not in space.params}
        TrainConfig.from_dict({**fixed, **suggested})


def test_set_pretrained_false_runs_a_seed_space_from_scratch_offline() -> None:
    space = get_space("kumar_resnet18").with_overrides({"pretrained": False})
    assert "pretrained" not in space.params and space.trial_count() == 2
    assert not any(c["pretrained"] for c in space.grid_configs())


# -- per_model ---------------------------------------------------------------------------------

def _two_models(**kw: object) -> Space:
    base = dict(name="s", description="", params={
        "model": grid("small_cnn", "iacob_cnn"),
        "lr": per_model({"small_cnn": 0.01, "iacob_cnn": 0.001}),
    })
    return Space(**{**base, **kw})  # type: ignore[arg-type]


def test_per_model_value_adds_no_trials_and_follows_the_model() -> None:
    space = _two_models().validate()
    assert space.trial_count() == 2
    assert {c["model"]: c["lr"] for c in space.grid_configs()} == {
        "small_cnn": 0.01, "iacob_cnn": 0.001}
    assert Space.from_json(space.to_json()) == space
    # --set model=iacob_cnn: one model left, so its value becomes a fixed one.
    fixed = space.with_overrides({"model": "iacob_cnn"})
    assert fixed.params == {} and fixed.fixed == {"model": "iacob_cnn", "lr": 0.001}
    assert get_space("bartos_batch").with_overrides(
        {"model": "vae_detector"}).fixed["pretrained"] is False


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (_two_models(params={"model": grid("small_cnn", "iacob_cnn"),
                             "lr": per_model({"small_cnn": 0.01})}),
         r"no value for model\(s\) \['iacob_cnn'\]"),
        (_two_models(params={"model": grid("small_cnn"),
                             "lr": per_model({"small_cnn": 0.01, "vgg16": 0.1})}),
         "never picks"),
        (_two_models(params={"model": choice("small_cnn", "iacob_cnn"),
                             "lr": per_model({"small_cnn": 0.01, "iacob_cnn": 0.1})},
                     search="optuna_tpe"),
         "per_model needs search='grid' or 'random'"),
        (_two_models(params={"model": grid("small_cnn", "iacob_cnn"),
                             "lr": per_model({"small_cnn": 0.01, "iacob_cnn": -1.0})}),
         "lr=-1.0 is impossible"),
        (Space("s", "", {"model": grid("resnet18", "iacob_cnn")}, fixed={"pretrained": True}),
         "'iacob_cnn' has no pretrained weights"),
        (Space("s", "", {"epochs": grid(2, 4)}, asha=Asha(grace_period=1),
               fixed={"model": "vae_detector", "pretrained": True}),
         "'vae_detector' has no pretrained weights"),
    ],
)
def test_invalid_per_model_or_pretrained_space_is_rejected_with_the_reason(
    space: Space, message: str
) -> None:
    with pytest.raises(SpaceError, match=message):
        space.validate()


def test_per_model_value_reaches_each_trial_through_tune(
    ray_session, tiny_data: Path, tmp_path: Path
) -> None:
    space = Space("follow", "two models, each with its own learning rate",
                  {"model": grid("small_cnn", "iacob_cnn"),
                   "lr": per_model({"small_cnn": 0.01, "iacob_cnn": 0.002})},
                  fixed={"epochs": 1, "batch_size": 16}, asha=None)
    with SPACES.temporarily("follow", space):
        code = main(["--space", "follow", "--data", str(tiny_data), "--storage", str(tmp_path),
                     "--name", "f", "--quiet"])
    assert code == 0
    trials = results.load(tmp_path / "f")["trials"]
    assert (trials["status"] == "TERMINATED").all()
    assert dict(zip(trials["model"], trials["lr"], strict=True)) == {
        "small_cnn": 0.01, "iacob_cnn": 0.002}
