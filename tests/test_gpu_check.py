"""benchmarks/gpu_check.py on the CPU at toy size, and gpu_bundle.py's parts that need no registry.

Usage: ``python -m pytest tests/test_gpu_check.py`` (``-m "not slow"`` leaves out the full run)
"""

from __future__ import annotations

import io
import json
import math
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_bundle
import gpu_check
import gpu_stages
import roofline


def _figures(rows: list[dict], key: str) -> list[float]:
    return [r[key] for r in rows if isinstance(r.get(key), float)]


@pytest.mark.slow  # every stage in its own process, a real Ray Tune study among them
def test_quick_check_runs_every_stage_on_the_cpu_and_writes_every_figure(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "check.json"
    # Budgets well above the quick ones: this asserts what the stages give, not how fast a
    # loaded 2-core machine gives it (the printed table says that).
    budgets = [f"--budget={s}=150" for s in gpu_stages.STAGES]
    code = gpu_check.main(["--device", "cpu", "--quick", "--out", str(out), *budgets])
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())
    stages = record["stages"]
    assert code == 0, {s: r["errors"] for s, r in stages.items()}
    assert list(stages) == list(gpu_stages.STAGES)
    assert all(stages[s]["status"] == "ok" and stages[s]["rows"] for s in stages)
    assert json.loads(json.dumps(record)) == record  # plain JSON, nothing left as repr
    for stage in gpu_stages.STAGES:
        assert f"| {stage}" in printed
    ceilings = {r["key"]: r["figure"] for r in stages["ceilings"]["rows"]}
    assert 0 < ceilings["fp32"] < 1e3 and ceilings["copy"] > 0 and ceilings["bf16"] == "n/a on CPU"
    rows = stages["throughput"]["rows"]
    assert {r["variant"] for r in rows} >= {"fp32", "fp32+cl", "bf16+cl", "fp32+cl+compile"}
    for r in rows:
        assert r["images_per_s"] > 0 and r["gflop_per_image"] > 0
        assert 0 < r["mfu"] < 2 and math.isfinite(r["mfu"])  # of this machine's measured rate
    recipe = stages["recipe"]["rows"]
    assert [r["epochs"] for r in recipe] == [1, 2]
    assert all(0 <= r["test_accuracy"] <= 1 and r["train_s"] > 0 for r in recipe)
    packing = stages["packing"]["rows"]
    assert [r["concurrent"] for r in packing] == [1, 2]
    for r in packing:
        assert r["errors"] == 0 and r["epochs_reported"] >= r["trials"]
        assert r["total_images_per_s"] > 0 and r["per_trial_images_per_s"] > 0
    assert packing[0]["reused_starts"] >= 1  # Tune handed a worker its next trial
    cpu, gpu = stages["ingest"]["rows"]
    assert cpu["images"] == 192 and cpu["images_per_s"] > 0 and gpu["images_per_s"] == "n/a on CPU"


def test_a_stage_over_its_budget_is_stopped_and_keeps_the_rows_it_finished(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_check, "KILL_GRACE", 1.0)
    for ignores_sigterm in (False, True):  # SIGTERM ends it; else SIGKILL after the grace
        child = textwrap.dedent(f"""
            import json, signal, sys, time
            if {ignores_sigterm}:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            rows = open(sys.argv[sys.argv.index("--rows") + 1], "a")
            for i in range(2):
                print(json.dumps({{"row": {{"unit": i, "figure": 1.5}}}}), file=rows, flush=True)
            time.sleep(60)
        """)
        result = gpu_check.run_stage("throughput", [sys.executable, "-c", child], budget=3)
        assert result.status == "overran"
        assert result.rows == [{"unit": 0, "figure": 1.5}, {"unit": 1, "figure": 1.5}]
        assert "3 s budget; 2 rows finished" in result.errors[0]
        assert result.seconds < 3 + 1.0 + 5


def test_an_overrun_and_a_failure_are_in_the_table_the_json_and_the_exit_status(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip at all")
    out = tmp_path / "check.json"
    code = gpu_check.main(["--device", "cpu", "--quick", "--only", "ingest,ceilings",
                           "--data", str(broken), "--budget", "ceilings=0.5", "--out", str(out)])
    stages = json.loads(out.read_text())["stages"]
    assert list(stages) == ["ingest", "ceilings"]  # the failed stage did not stop the next
    assert stages["ingest"]["status"] == "failed"
    assert "BadZipFile" in stages["ingest"]["errors"][0]
    assert stages["ceilings"]["status"] == "overran"
    assert "0.5 s budget" in stages["ceilings"]["errors"][0]
    assert code == 1  # a failure outranks an overrun
    table = capsys.readouterr().out.split("GPU check on cpu")[-1].splitlines()
    status = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in table
              if line.startswith("| ") and "status" not in line}
    assert status == {"ingest": "failed", "ceilings": "overran"}
    assert gpu_check.exit_status([gpu_check.StageResult("x", status="overran")]) == 2


def test_training_flops_are_counted_exactly_for_a_linear_layer() -> None:
    import torch

    model = torch.nn.Linear(10, 2)
    x, y = torch.rand(4, 10), torch.tensor([0, 1, 1, 0])
    # Forward 2*10*2 per image; backward only the weight's gradient (the input needs none).
    assert roofline.training_flops_per_image(model, x, y) == 4 * 10 * 2
    assert model.weight.grad is None  # the count leaves no gradients behind
    assert 0 < roofline.matmul_tflops(torch.device("cpu"), torch.float32, 128, repeats=2)


def _cifake_zip(path: Path, per_stratum: int) -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    members = {}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train/REAL/", b"")
        zf.writestr("train/notes.txt", b"not an image")
        for label in ("REAL", "FAKE"):
            for cls in range(1, 11):
                for i in range(per_stratum):
                    side = int(rng.integers(8, 24))  # members of different sizes
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(
                        buf, format="JPEG")
                    name = f"train/{label}/{i}{f' ({cls})' if cls > 1 else ''}.jpg"
                    zf.writestr(name, buf.getvalue())
                    members[name] = buf.getvalue()
    return members


def test_the_subset_is_stratified_seeded_under_its_limit_and_byte_identical(
        tmp_path: Path) -> None:
    source = tmp_path / "cifake.zip"
    members = _cifake_zip(source, per_stratum=12)
    limit = sum(len(b) for b in members.values()) // 2
    entry = gpu_bundle.stratified_subset(source, tmp_path / "a.zip", limit, seed=0)
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        names = zf.namelist()
        assert all(zf.read(n) == members[n] for n in names)  # the JPEG bytes, untouched
        assert all(zf.getinfo(n).compress_type == zipfile.ZIP_STORED for n in names)
    assert (tmp_path / "a.zip").stat().st_size <= limit and entry["images"] == len(names)
    counts = list(entry["per_stratum"].values())
    assert len(counts) == 20 and max(counts) - min(counts) <= 1 and min(counts) < 12
    again = gpu_bundle.stratified_subset(source, tmp_path / "b.zip", limit, seed=0)
    other = gpu_bundle.stratified_subset(source, tmp_path / "c.zip", limit, seed=1)
    assert again["sha256"] == entry["sha256"] and other["sha256"] != entry["sha256"]


def test_the_node_list_reads_pip_freeze_and_the_nodes_torch_is_never_bundled(
        tmp_path: Path) -> None:
    listing = tmp_path / "node.txt"
    listing.write_text("# a comment\nPyYAML==6.0.2\ntyping_extensions @ file:///x\npandas\n")
    assert gpu_bundle.read_node_list(listing) == {"pyyaml", "typing-extensions", "pandas"}
    for name in ("torch", "torchvision", "numpy", "nvidia-cudnn-cu13", "triton"):
        assert gpu_bundle.NODE_OWN.match(name)
    assert not gpu_bundle.NODE_OWN.match("ray")
    shipped = gpu_bundle.read_node_list(gpu_bundle.DEFAULT_NODE)
    assert {"torch", "numpy", "pandas", "pyarrow"} <= shipped and "ray" not in shipped


def test_a_bundle_unpacks_only_when_its_hash_is_the_manifests(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "pkg").mkdir(parents=True)
    (tree / "pkg" / "__init__.py").write_text("VALUE = 7\n")
    (tree / "pkg" / "tool").write_text("#!/bin/sh\n")
    (tree / "pkg" / "tool").chmod(0o755)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    gpu_bundle.pack(tree, bundle / gpu_bundle.SITE)
    site = {"file": gpu_bundle.SITE, "sha256": gpu_bundle.sha256_of(bundle / gpu_bundle.SITE),
            "bundled": []}
    (bundle / "manifest.json").write_text(json.dumps({"site": site}))
    gpu_check.unpack_bundle(bundle, tmp_path / "site")
    assert (tmp_path / "site" / "pkg" / "__init__.py").read_text() == "VALUE = 7\n"
    assert (tmp_path / "site" / "pkg" / "tool").stat().st_mode & 0o111  # still executable
    (bundle / "manifest.json").write_text(json.dumps({"site": {**site, "sha256": "0" * 64}}))
    with pytest.raises(SystemExit, match="is not the manifest's"):
        gpu_check.unpack_bundle(bundle, tmp_path / "again")
