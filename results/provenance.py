"""Where a study's numbers came from: the one row of the ``studies`` table.

Usage: ``row = study_row("studies/grid1", "grid1", trials)`` (reads ``study.json`` in the study
directory, which ``study.run`` writes when a study starts).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from results.storage import StudyFileError, read_study_file

REPO = Path(__file__).resolve().parents[1]


def code_revision(repo: Path = REPO) -> str:
    """``git rev-parse HEAD`` of the code that wrote the tables; "" when it is not a checkout."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def hardware() -> dict[str, Any]:
    """Platform, CPU and GPU counts (of the Ray cluster when one is up) and the driver's GPUs."""
    info: dict[str, Any] = {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                            "gpu_count": 0, "gpu_names": ""}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info.update(gpu_count=len(names), gpu_names="; ".join(names))
    ray = sys.modules.get("ray")  # only when the caller already uses Ray: never start one here
    if ray is not None and ray.is_initialized():
        resources = ray.cluster_resources()
        info["cpu_count"] = int(resources.get("CPU", 0))
        info["gpu_count"] = int(resources.get("GPU", 0))
    return info


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("ray", "torch"):
        module = sys.modules.get(name)
        out[name] = getattr(module, "__version__", "") if module is not None else ""
    return out


def _timestamp(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _joined(values: pd.Series) -> str:
    return "; ".join(sorted({str(v) for v in values.dropna() if str(v)}))


def study_row(
    study_dir: str, study: str, trials: pd.DataFrame, *, info: dict[str, Any] | None = None,
    ended: dt.datetime | None = None, hardware_info: dict[str, Any] | None = None,
    revision: str | None = None,
) -> dict[str, Any]:
    """The ``studies`` row; ``info`` defaults to the directory's ``study.json``."""
    if info is None:
        try:
            info = read_study_file(study_dir) or {}
        except StudyFileError:
            info = {}
    hw = {**hardware(), **(hardware_info or {})}
    versions = {**_versions(), **(info.get("versions") or {})}
    space = info.get("space") or {}
    status = trials["status"].value_counts() if len(trials) else pd.Series(dtype=int)
    stops = trials["stop_reason"].value_counts() if len(trials) else pd.Series(dtype=int)
    return {
        "study": study,
        "space": space.get("name", "") if isinstance(space, dict) else str(space),
        "space_json": json.dumps(space, sort_keys=True) if space else "",
        "overrides": json.dumps(info.get("overrides") or {}, sort_keys=True),
        "seed": info.get("seed"),
        "data_fingerprint": info.get("data_fingerprint", ""),
        "data_source": info.get("data_source", ""),
        "data_layout": (info.get("data_report") or {}).get("layout", ""),
        "code_revision": code_revision() if revision is None else revision,
        "python_version": versions.get("python", ""),
        "ray_version": versions.get("ray", ""),
        "torch_version": versions.get("torch", ""),
        "platform": versions.get("platform") or hw["platform"],
        "cpu_count": hw["cpu_count"],
        "gpu_count": hw["gpu_count"],
        "gpu_names": hw["gpu_names"],
        "nodes": _joined(trials["node"]) if len(trials) else "",
        "devices": _joined(trials["device"]) if len(trials) else "",
        "started": _timestamp(info.get("created")),
        "ended": ended or dt.datetime.now(),
        "n_trials": len(trials),
        "n_terminated": int(status.get("TERMINATED", 0)),
        "n_error": int(status.get("ERROR", 0)),
        # Unfinished: never started (PENDING) or cut short by an interrupted study.
        "n_pending": int(status.get("PENDING", 0) + status.get("INTERRUPTED", 0)),
        "n_budget": int(stops.get("budget", 0)),
        "n_early_stopping": int(stops.get("early_stopping", 0)),
        "n_asha": int(stops.get("asha", 0)),
    }
