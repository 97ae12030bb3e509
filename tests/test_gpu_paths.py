"""benchmarks/gpu_paths.py and ingest.py's nvJPEG path, run on the CPU at toy size.

Usage: ``python -m pytest tests/test_gpu_paths.py``
"""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from gpu_paths import NA, gpu_path_checks, main
from ingest import byte_batches, decode_batch, image_names, plain_pil_loop


def test_gpu_path_checks_give_every_figure_the_cpu_can_and_mark_the_rest() -> None:
    figures = gpu_path_checks("cpu", images=128, compile=False)
    assert figures["device"] == "cpu"
    assert figures["max |training - inference| test score"] <= 1e-6
    record = figures["forced out-of-memory record (hook-raised)"]
    assert record.startswith("out of memory: model small_cnn at batch_size 32")
    for key in ("trial 2 start: allocated MiB", "pinned host MiB after the trials",
                "host syncs per training step",
                "deterministic=true: epoch time and bit-equality"):
        assert figures[key] == NA


@pytest.mark.slow  # ~10 s on 2 busy cores: every check again, with two compiled trials
def test_the_recompilation_check_finds_each_trial_compiling_afresh_on_the_cpu(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """aot_eager for Inductor: the same Dynamo caches and recompile limit, at a second of
    compiling instead of half a minute per trial on 2 cores."""
    import functools

    import torch

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    figures = gpu_path_checks("cpu", images=64, compile=True)
    first = figures["trial 1 (small_cnn): frames compiled"]
    assert first > 0 and figures["trial 2 (purba_cnn1): frames compiled"] == first
    assert figures["trial 2 (purba_cnn1): compile s"] > 0


def test_gpu_paths_script_prints_a_table_on_the_cpu(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["gpu_paths.py", "--device", "cpu", "--images", "64",
                                      "--no-compile"])
    main()
    out = capsys.readouterr().out
    assert "GPU-path checks on cpu" in out and "| forced out-of-memory record" in out


def encoded(fmt: str, seed: int) -> bytes:
    image = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


def test_nvjpeg_batches_are_sized_in_bytes() -> None:
    assert byte_batches([10, 10, 10, 25, 5], max_bytes=20) == [range(0, 2), range(2, 3),
                                                               range(3, 4), range(4, 5)]
    assert byte_batches([], 20) == [] and byte_batches([50], 20) == [range(0, 1)]


def test_a_batch_nvjpeg_rejects_is_decoded_on_the_cpu_instead() -> None:
    jpegs = [encoded("JPEG", i) for i in range(3)]
    images, fell_back = decode_batch(jpegs, "cpu")  # decode_jpeg's CPU path: same contract
    assert not fell_back and [tuple(t.shape) for t in images] == [(3, 8, 8)] * 3
    png = encoded("PNG", 9)
    images, fell_back = decode_batch([*jpegs, png], "cpu")
    assert fell_back and len(images) == 4
    assert np.array_equal(images[3].permute(1, 2, 0).numpy(),
                          np.asarray(Image.open(io.BytesIO(png)).convert("RGB")))


def test_both_decode_paths_read_the_same_files(tmp_path: Path) -> None:
    path = tmp_path / "mixed.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train/REAL/", "")
        zf.writestr("train/REAL/a.jpg", encoded("JPEG", 0))
        zf.writestr("train/REAL/b.JPEG", encoded("JPEG", 1))
        zf.writestr("train/FAKE/c.png", encoded("PNG", 2))
        zf.writestr("train/FAKE/notes.txt", b"not an image")
    with zipfile.ZipFile(path) as zf:
        assert image_names(zf) == ["train/REAL/a.jpg", "train/REAL/b.JPEG", "train/FAKE/c.png"]
    assert len(plain_pil_loop(path)) == 3
