"""benchmarks/gpu_paths.py: the GPU-path checks run end to end on the CPU at toy size.

Usage: ``python -m pytest tests/test_gpu_paths.py``
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from gpu_paths import NA, gpu_path_checks, main


def test_gpu_path_checks_give_every_figure_the_cpu_can_and_mark_the_rest() -> None:
    figures = gpu_path_checks("cpu", images=128, compile=False)
    assert figures["device"] == "cpu"
    assert figures["max |training - inference| test score"] <= 1e-6
    record = figures["forced out-of-memory record (hook-raised)"]
    assert record.startswith("out of memory: model small_cnn at batch_size 32")
    for key in ("trial 2 start: allocated MiB", "pinned host MiB after the trials",
                "host syncs per training step"):
        assert figures[key] == NA


def test_gpu_paths_script_prints_a_table_on_the_cpu(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["gpu_paths.py", "--device", "cpu", "--images", "64",
                                      "--no-compile"])
    main()
    out = capsys.readouterr().out
    assert "GPU-path checks on cpu" in out and "| forced out-of-memory record" in out
