"""Search spaces from YAML/JSON files: round trips, errors that name the key and its line,
and the command line (--space FILE, --list-spaces FILE, --export).

Usage: ``python -m pytest tests/test_space_files.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import results
from search_spaces import SPACES, SpaceError, get_space
from search_spaces.files import load_space_file, space_to_dict, write_space_file
from study.run import main

GOOD = """\
name: mine
description: two CNNs x two batch sizes
search: grid
params:
  model: {grid: [small_cnn, purba_cnn1]}
  batch_size: {grid: [16, 32]}
fixed:
  epochs: 1
  image_size: 16
asha: null
"""


@pytest.mark.parametrize("name", SPACES.names())
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_every_built_in_space_exports_and_loads_back_unchanged(
        name: str, suffix: str, tmp_path: Path) -> None:
    space = get_space(name)
    path = write_space_file(space, tmp_path / f"s{suffix}")
    back = load_space_file(path)
    assert back.name == f"my_{name}"
    assert {**space_to_dict(back), "name": name} == space_to_dict(space)
    assert back.trial_count() == space.trial_count()


@pytest.mark.parametrize(("text", "line", "named"), [
    (GOOD.replace("  batch_size:", "  batch_sise:"), 6, "unknown hyperparameter 'batch_sise'"),
    (GOOD.replace("{grid: [16, 32]}", "{grind: [16, 32]}"), 6, "unknown kind 'grind'"),
    (GOOD.replace("  epochs: 1", "  epochs: -1"), 8, "fixed.epochs"),
    (GOOD.replace("search: grid", "search: bayes"), 3, "search 'bayes'"),
    (GOOD.replace("asha: null", "asha: {grace: 2}"), 10, "asha"),
    (GOOD + "colour: blue\n", 11, "colour: unknown key"),
    (GOOD.replace("name: mine", "name: quickstart"), 1, "is a built-in space"),
    (GOOD.replace("  model: {grid: [small_cnn, purba_cnn1]}", "  model: {grid: [small_cnn"),
     6, "not valid YAML"),
])
def test_a_bad_space_file_names_the_key_and_its_line(tmp_path: Path, text: str, line: int,
                                                     named: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError) as err:
        load_space_file(path)
    assert f"{path}, line {line}" in str(err.value) and named in str(err.value)


def test_a_json_syntax_error_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "name": "x",\n  "params": {,}\n}\n')
    with pytest.raises(SpaceError, match=r"bad\.json, line 3: not valid JSON"):
        load_space_file(path)


def test_yaml_tags_that_construct_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    marker = tmp_path / "pwned"
    path.write_text(f"!!python/object/apply:pathlib.Path.touch [{str(marker)!r}]\n")
    with pytest.raises(SpaceError, match="not valid YAML"):
        load_space_file(path)
    assert not marker.exists()


def test_the_command_line_lists_dry_runs_and_exports_space_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(GOOD)
    assert main(["--list-spaces", str(path)]) == 0
    out = capsys.readouterr().out
    assert "quickstart" in out and "mine                       4 trials" in out
    assert main(["--space", str(path), "--dry-run"]) == 0
    assert "space mine: two CNNs x two batch sizes" in capsys.readouterr().out
    export = tmp_path / "grid.yaml"
    assert main(["--space", "cifake_grid", "--export", str(export)]) == 0
    assert load_space_file(export).trial_count() == get_space("cifake_grid").trial_count()
    assert main(["--space", "cifake_grid", "--export", str(export)]) == 2
    assert "the file exists" in capsys.readouterr().err
    path.write_text(GOOD.replace("  batch_size:", "  batch_sise:"))
    assert main(["--space", str(path), "--dry-run"]) == 2
    assert "line 6" in capsys.readouterr().err


def test_a_study_runs_from_a_space_file(ray_session, tiny_data: Path, tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(GOOD.replace("[small_cnn, purba_cnn1]", "[small_cnn]"))
    assert main(["--space", str(path), "--data", str(tiny_data), "--storage",
                 str(tmp_path / "studies"), "--name", "f", "--quiet"]) == 0
    tables = results.load(tmp_path / "studies" / "f")
    assert sorted(tables["trials"]["batch_size"]) == [16, 32]
    assert tables["studies"]["space"].tolist() == ["mine"]
