"""TrainConfig: unknown keys and impossible values are errors that name the fix."""

from __future__ import annotations

import numpy as np
import pytest

from trainables.config import ConfigError, TrainConfig
from trainables.registry import UnknownNameError


def test_unknown_key_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['batchsize'\].*batch_size"):
        TrainConfig.from_dict({"batchsize": 32})


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [("batch_size", 0, "positive"), ("epochs", 0, "at least 1"), ("split_ratio", 1.5, r"\(0, 1\]"),
     ("lr", -1.0, "positive"), ("optimizer", "rmsprop", "one of"), ("lr_decay", 1.5, r"\(0, 1\]"),
     ("label_smoothing", 0.5, r"\[0, 0.5\)"), ("image_size", 4, "between 8 and 512")],
)
def test_impossible_hyperparameter_names_the_rule(key: str, value: object, rule: str) -> None:
    with pytest.raises(ConfigError, match=rf"{key}=.*impossible.*{rule}"):
        TrainConfig.from_dict({key: value})


def test_wrong_type_is_rejected_and_numpy_scalars_are_accepted() -> None:
    with pytest.raises(ConfigError, match=r"batch_size=.*must be of type int"):
        TrainConfig.from_dict({"batch_size": 32.5})
    config = TrainConfig.from_dict({"batch_size": np.int64(32), "lr": np.float32(0.5)})
    assert config.batch_size == 32 and isinstance(config.batch_size, int)


def test_unknown_model_error_lists_known_models() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown model 'resnet9000'.*small_cnn"):
        TrainConfig.from_dict({"model": "resnet9000"})


def test_config_round_trips_through_its_dict() -> None:
    config = TrainConfig(model="small_cnn", batch_size=16, augment=True)
    assert TrainConfig.from_dict(config.asdict()) == config



def test_normalisation_is_a_space_choice_and_the_papers_that_rescale_by_255_choose_it() -> None:
    import torch

    from search_spaces import get_space
    from trainables.loader import Preprocess
    from trainables.model_base import input_normalization
    from trainables.models import model_spec

    spec = model_spec("vgg16")
    assert input_normalization(spec) == "imagenet"
    assert input_normalization(spec, "unit") == "unit"
    x = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    assert Preprocess(32, input_normalization(spec, "unit"), False, False)(x).max() == 1.0
    assert get_space("purba_cnns").fixed["normalize"] == "unit"
    assert get_space("prudhvi_resnet50").fixed["normalize"] == "unit"
    with pytest.raises(ConfigError, match="normalize='zscore' is impossible"):
        TrainConfig.from_dict({"normalize": "zscore"})
