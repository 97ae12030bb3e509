"""docs/extending.md's commands run as written.

Usage: ``python -m pytest tests/test_extending_doc.py`` (about a minute: a real small study).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "extending.md"


def commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_the_doc_has_the_walk_through_commands() -> None:
    cmds = commands()
    assert len(cmds) == 4 and all(c.startswith("python -m ") for c in cmds)


@pytest.mark.slow
def test_every_command_of_the_extending_doc_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "examples").symlink_to(REPO / "examples")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    outputs = []
    for command in commands():
        argv = shlex.split(command)
        assert argv[0] == "python"
        done = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
        outputs.append(done.stdout)
    assert "space spectrum_vs_seeds" in outputs[0]
    assert "spectrum_cnn" in outputs[2] and "purba_cnn1" in outputs[2]
    assert "spectrum_cnn" in outputs[3]
