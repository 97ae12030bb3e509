"""Named search spaces validate, round-trip through JSON and dry-run to their trial counts."""

from __future__ import annotations

import pytest

from search_spaces import SPACES, Space, SpaceError, get_space, grid
from search_spaces.base import Asha, choice, loguniform
from study.run import main


@pytest.mark.parametrize("name", SPACES.names())
def test_every_space_validates_and_round_trips_through_json(name: str) -> None:
    space = get_space(name)
    assert Space.from_json(space.to_json()) == space


@pytest.mark.parametrize("name", SPACES.names())
def test_every_space_dry_runs(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--space", name, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"{get_space(name).trial_count()} trials" in out


def test_cifake_grid_dry_run_prints_trials_rungs_and_resources(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--space", "cifake_grid", "--dry-run", "--gpus-per-trial", "0.5"]) == 0
    out = capsys.readouterr().out
    space = get_space("cifake_grid")
    # architectures x 4 batch sizes x 5 epoch budgets x 3 split ratios
    assert space.trial_count() == len(space.models()) * 4 * 5 * 3
    assert f"{space.trial_count()} trials" in out
    assert "rungs at epochs [10, 20, 40]" in out
    assert "0.5 GPU" in out


def test_unknown_space_error_lists_known_spaces(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--space", "nope", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "unknown space 'nope'" in err and "quickstart" in err


def test_list_spaces_shows_every_space(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list-spaces"]) == 0
    out = capsys.readouterr().out
    for name in SPACES.names():
        assert name in out


def test_bad_option_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--space", "quickstart", "--gpus-per-trial", "-1"])
    assert "--gpus-per-trial must be >= 0" in capsys.readouterr().err
    assert main(["--space", "quickstart", "--set", "batchsize=3", "--dry-run"]) == 2
    assert "unknown config key" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (Space("s", "", {"lr": grid(0.1)}, fixed={"lr": 0.1}), "both varied and fixed"),
        (Space("s", "", {"batch": grid(1)}), "unknown hyperparameter 'batch'"),
        (Space("s", "", {"batch_size": grid(16, 0)}), "batch_size=0 is impossible"),
        (Space("s", "", {"model": grid("nope")}), "unknown model 'nope'"),
        (Space("s", "", {"lr": loguniform(0.0, 1.0)}, search="random"), "low > 0"),
        (Space("s", "", {"lr": choice(0.1)}), "grid"),
        (Space("s", "", {"lr": grid(0.1)}, search="optuna_tpe"), "use choice"),
        (Space("s", "", {"epochs": grid(2, 4)}, asha=Asha(grace_period=4)), "grace_period"),
    ],
)
def test_invalid_space_is_rejected_with_the_reason(space: Space, message: str) -> None:
    with pytest.raises(SpaceError, match=message):
        space.validate()


def test_override_fixes_a_varied_hyperparameter_and_drops_asha_below_first_rung() -> None:
    space = get_space("quickstart").with_overrides({"epochs": 2})
    assert "epochs" not in space.params and space.fixed["epochs"] == 2
    assert space.asha is None
    assert space.trial_count() == get_space("quickstart").trial_count() // 2


def test_grid_budgets_fold_into_one_run_unless_the_schedule_spans_the_budget() -> None:
    space = Space("f", "fold", {"epochs": grid(2, 4, 8), "batch_size": grid(16, 32)},
                  fixed={"model": "small_cnn"})
    assert space.folded_budgets() == [2, 4, 8]
    assert (space.trial_count(), space.run_count(), space.run_count(fold=False)) == (6, 2, 6)
    onecycle = Space("o", "one-cycle", space.params, fixed={"model": "small_cnn",
                                                           "schedule": "onecycle", "warmup": 0.2})
    assert onecycle.folded_budgets() == [] and onecycle.run_count() == 6
    sampled = Space("s", "choice", {"epochs": choice(2, 4)}, search="random", num_samples=4)
    assert sampled.folded_budgets() == []
    single = Space("1", "one budget", {"batch_size": grid(16, 32)}, fixed={"epochs": 3})
    assert single.folded_budgets() == []


def test_cifake_grid_dry_run_says_how_its_budgets_fold(capsys: pytest.CaptureFixture[str]) -> None:
    space = get_space("cifake_grid")
    assert space.folded_budgets() == [40, 50, 60, 70, 80]
    assert main(["--space", "cifake_grid", "--dry-run"]) == 0
    assert f"folded: {space.trial_count() // 5} runs of 80 epochs" in capsys.readouterr().out
    assert main(["--space", "cifake_grid", "--dry-run", "--no-fold"]) == 0
    assert "folded" not in capsys.readouterr().out


def test_a_command_piped_into_head_stops_quietly() -> None:
    import subprocess
    import sys

    out = subprocess.run(f"{sys.executable} -m study.run --list-spaces | head -1", shell=True,
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.count("\n") == 1
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr
