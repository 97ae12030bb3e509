"""ASHA against the full grid: ``python benchmarks/asha.py [--data sample|ZIP] [--images N]``.

Runs one cifake_grid-style space four times through ``study.run`` — the full grid and ASHA,
each with a Tune run per trial (``--no-fold``) and with the budgets of a configuration folded
into one run (the default) — and compares the epochs trained and the winners (best validation
accuracy) with the full grid's. The space is cifake_grid's shape scaled to this CPU: two 32 px
CNNs x batch {16, 32, 64, 128} x epochs {4, 6, 8}; ASHA's rungs come from --grace and
--reduction-factor (default: epochs 2 and 4).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pandas as pd
from common import print_table

import results
from search_spaces import SPACES, Space, grid
from search_spaces.base import Asha
from study.run import main as run_study
from trainables.folding import split_trial_id

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


VARIANTS = {  # name: (ASHA on, budgets folded into one run per configuration)
    "full grid, a run per trial (baseline)": (False, False),
    "full grid, budgets folded": (False, True),
    "ASHA, a run per trial": (True, False),
    "ASHA, budgets folded (project)": (True, True),
}


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
    asha = Asha(grace_period=args.grace, reduction_factor=args.reduction_factor)
    gpu = [] if args.gpus_per_trial is None else ["--gpus-per-trial", str(args.gpus_per_trial)]
    out, runs = {}, {}
    for i, (name, (with_asha, fold)) in enumerate(VARIANTS.items()):
        SPACES.add(f"bench_{i}", Space(f"bench_{i}", "benchmark", PARAMS, fixed={
            "split_ratio": 0.8}, asha=asha if with_asha else None))
        code = run_study(["--space", f"bench_{i}", "--data", data, "--storage", str(work),
                          "--name", f"run{i}", "--quiet", *gpu, *([] if fold else ["--no-fold"])])
        assert code == 0
        out[name] = results.load(work / f"run{i}")["trials"]
        runs[name] = len(list((work / f"run{i}").glob("*/result.json")))
    base = next(iter(out))
    full = out[base]
    ranked = full.sort_values("best_val_accuracy", ascending=False).reset_index(drop=True)

    def own(t: pd.DataFrame) -> pd.DataFrame:
        """One row per Tune run: a folded run's trials share its epochs and time, and its
        largest budget's trial, which keeps the run's own id, ran all of them."""
        return t[[split_trial_id(i)[1] is None for i in t["trial_id"]]]

    def trained(t: pd.DataFrame) -> int:
        return int(own(t)["epochs_run"].sum())

    def wall(t: pd.DataFrame) -> float:
        return float(own(t)["wall_seconds"].sum())

    describe = lambda r: f"{r['model']} b{r['batch_size']} e{r['epochs']}"  # noqa: E731
    rows = []
    for name, t in out.items():
        best = t.sort_values("best_val_accuracy", ascending=False).iloc[0]
        match = ranked[(ranked[KEY] == best[KEY]).all(axis=1)]
        rows.append([name, len(t), runs[name], trained(t), trained(full) / trained(t),
                     wall(t), describe(best), best["best_val_accuracy"],
                     f"#{int(match.index[0]) + 1}"])
    print_table(
        f"ASHA (grace {args.grace}, reduction factor {args.reduction_factor}) and folded "
        f"budgets vs the full grid on {data} ({len(full)} trials)",
        ["run", "trials", "Tune runs", "epochs trained", "fewer than baseline", "trial wall s",
         "winner", "winner val acc", "winner's rank in the full grid"], rows)
    # Trials that differ only in their budget train identically up to the smaller budget (the
    # learning-rate schedule and every epoch's shuffle do not depend on the budget), so every
    # epoch but those of a (model, batch) group's longest-running trial repeats one already run.
    group = [k for k in KEY if k != "epochs"]
    for name in list(out)[::2]:
        t = out[name]
        repeated = int(t["epochs_run"].sum() - t.groupby(group)["epochs_run"].max().sum())
        print(f"{name}: {repeated} of its {trained(t)} epochs repeat a same-config trial's")


if __name__ == "__main__":
    main()
