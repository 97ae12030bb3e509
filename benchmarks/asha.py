"""ASHA against the full grid: ``python benchmarks/asha.py [--data sample|ZIP] [--images N]``.

Runs one cifake_grid-style space twice through ``study.run`` — every trial to its budget, then
under ASHA — and compares the epochs spent and the winners (best validation accuracy). The
space is cifake_grid's shape scaled to this CPU: two 32 px CNNs x batch {16, 32, 64, 128} x
epochs {4, 6, 8}, ASHA rungs at epochs 2 and 4.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table

import results
from search_spaces import SPACES, Space, grid
from search_spaces.base import Asha
from study.run import main as run_study

CIFAKE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifake-train.zip"
PARAMS = {"model": grid("small_cnn", "purba_cnn1"), "batch_size": grid(16, 32, 64, 128),
          "epochs": grid(4, 6, 8)}
KEY = ["model", "batch_size", "epochs"]


def cifake_subset(n: int, folder: Path) -> Path:
    target = folder / f"cifake-{n}.zip"
    per_class, taken = n // 2, {"REAL": 0, "FAKE": 0}
    with zipfile.ZipFile(CIFAKE) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            parts = info.filename.split("/")
            if info.is_dir() or len(parts) != 3 or taken.get(parts[1], per_class) >= per_class:
                continue
            dst.writestr(info, src.read(info))
            taken[parts[1]] += 1
    return target


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="sample")
    p.add_argument("--images", type=int, default=6000, help="CIFAKE subset size (--data cifake)")
    p.add_argument("--gpus-per-trial", type=float, default=None, help="GPU variant")
    p.add_argument("--grace", type=int, default=2, help="ASHA grace period (epochs)")
    p.add_argument("--reduction-factor", type=int, default=2, help="ASHA reduction factor")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-asha-"))
    data = str(cifake_subset(args.images, work)) if args.data == "cifake" else args.data
    out = {}
    for name, asha in (("full", None), ("asha", Asha(grace_period=args.grace,
                                                   reduction_factor=args.reduction_factor))):
        SPACES.add(f"bench_{name}", Space(f"bench_{name}", "benchmark", PARAMS,
                                          fixed={"split_ratio": 0.8}, asha=asha))
        gpu = [] if args.gpus_per_trial is None else ["--gpus-per-trial",
                                                       str(args.gpus_per_trial)]
        code = run_study(["--space", f"bench_{name}", "--data", data, "--storage", str(work),
                          "--name", name, "--quiet", *gpu])
        assert code == 0
        out[name] = results.load(work / name)["trials"]
    full, asha = out["full"], out["asha"]
    ranked = full.sort_values("best_val_accuracy", ascending=False).reset_index(drop=True)
    best_full = ranked.iloc[0]
    best_asha = asha.sort_values("best_val_accuracy", ascending=False).iloc[0]
    match = ranked[(ranked[KEY] == best_asha[KEY]).all(axis=1)]
    rank = int(match.index[0]) + 1
    describe = lambda r: f"{r['model']} b{r['batch_size']} e{r['epochs']}"  # noqa: E731
    print_table(
        f"ASHA (grace {args.grace}, reduction factor {args.reduction_factor}) vs full grid on "
        f"{data} ({len(full)} trials)",
        ["run", "epochs spent", "wall s", "winner", "winner val acc", "winner test acc"],
        [["full grid", int(full["epochs_run"].sum()), full["wall_seconds"].sum(),
          describe(best_full), best_full["best_val_accuracy"], best_full["test_accuracy"]],
         ["ASHA", int(asha["epochs_run"].sum()), asha["wall_seconds"].sum(),
          describe(best_asha), best_asha["best_val_accuracy"], best_asha["test_accuracy"]]])
    print(f"\nepochs ratio full/ASHA: {full['epochs_run'].sum() / asha['epochs_run'].sum():.2f}x;"
          f" ASHA's winner ranks #{rank} of {len(full)} in the full grid "
          f"(val acc {match.iloc[0]['best_val_accuracy']:.4f} vs best "
          f"{best_full['best_val_accuracy']:.4f})")


if __name__ == "__main__":
    main()
