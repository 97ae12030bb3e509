"""study.cross_generator: the train-on-one, test-on-each matrix and the JPEG format control.

Usage: ``python -m pytest tests/test_cross_generator.py`` (in-process training, no Ray)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from results.schema import CROSS_GENERATOR, OTHER_KEYS
from results.tables import read_table
from study.cross_generator import JPEG_QUALITY, main, pivot, reencode
from trainables.ingest import load_dataset
from trainables.robustness import jpeg


def format_only_genimage(root: Path, quality: int = JPEG_QUALITY, n_train: int = 24,
                         n_val: int = 12, size: int = 16) -> Path:
    """Two 'generators' whose REAL and FAKE images differ in nothing but the file format.

    Both classes are uniform noise; REAL is saved as JPEG (as GenImage's ImageNet photos are),
    FAKE as PNG. A detector that does well here can only have learned the format.
    """
    rng = np.random.default_rng(0)
    for gen in ("g1", "g2"):
        for split, n in (("train", n_train), ("val", n_val)):
            for cls in ("nature", "ai"):
                folder = root / gen / split / cls
                folder.mkdir(parents=True)
                for i in range(n):
                    image = Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8))
                    if cls == "ai":
                        image.save(folder / f"{i}.png")
                    else:
                        image.save(folder / f"{i}.jpg", quality=quality)
    return root


@pytest.fixture(scope="module")
def format_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return format_only_genimage(tmp_path_factory.mktemp("fmt") / "genimage")


def test_jpeg_control_exposes_a_detector_that_learned_the_file_format(
    format_only: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "xgen"
    assert main(["--data", str(format_only), "--set", "epochs=8", "--set", "batch_size=16",
                 "--set", "lr=0.003", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "rows trained on, columns tested on (original" in printed
    assert f"re-encoded as JPEG quality {JPEG_QUALITY}" in printed and "minus JPEG" in printed
    table = read_table(str(out / "cross_generator.parquet"), "cross_generator")
    assert pq.read_schema(out / "cross_generator.parquet").remove_metadata().equals(
        CROSS_GENERATOR)
    assert len(table) == 8  # 2 encodings x 2 trained on x 2 tested on
    assert not table.duplicated(list(OTHER_KEYS["cross_generator"])).any()
    assert set(table["n_images"]) == {24} and set(table["n_train"]) == {38}
    original, control = pivot(table, "original"), pivot(table, "jpeg")
    assert list(original.index) == ["g1", "g2"] and list(original.columns[:2]) == ["g1", "g2"]
    # As stored, the format alone gives near-perfect accuracy on every generator, seen or not;
    # once every image is a JPEG of one quality, nothing is left to learn.
    assert original[["g1", "g2"]].to_numpy().min() >= 0.9
    assert control[["g1", "g2"]].to_numpy().max() <= 0.75
    assert table.loc[table["encoding"] == "jpeg", "jpeg_quality"].eq(JPEG_QUALITY).all()
    assert table.loc[table["encoding"] == "original", "jpeg_quality"].isna().all()


def test_reencode_makes_every_image_a_jpeg_of_one_quality(format_only: Path) -> None:
    data = load_dataset(format_only, progress=False)
    control = reencode(data, 90)
    assert np.array_equal(control.images, jpeg(data.images, 90))
    assert control.manifest is data.manifest and data.images is not control.images
    assert not np.array_equal(control.images[data.labels == 1], data.images[data.labels == 1])


def test_a_source_without_two_generators_is_a_clear_error(
    format_only: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data", str(tiny_data), "--quiet"]) == 2
    assert "names no generators; only the tiny-GenImage layout" in capsys.readouterr().err
    assert main(["--data", str(format_only), "--generators", "g1", "--quiet"]) == 2
    assert "at least two generators" in capsys.readouterr().err
    assert main(["--data", str(format_only), "--generators", "g1", "dalle", "--quiet"]) == 2
    assert "unknown generator(s) ['dalle']" in capsys.readouterr().err
    assert main(["--data", str(format_only), "--set", "optimiser=adam", "--quiet"]) == 2
    assert "unknown config key" in capsys.readouterr().err
