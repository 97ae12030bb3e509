"""What ``study.json`` records of a study, the atomic claim of its directory, and what a
resume must match.

Usage (by study.run):
    record = study_record(name, space, overrides, seed, data)
    claim_study(path, name, record)                  # a new study: fails if the name is taken
    check_resumable(storage.read_study_file(path), path, record)   # --resume
"""

from __future__ import annotations

import datetime as dt
import json
import platform
from typing import Any

from results import storage
from search_spaces import Space
from study.cli import StudyError
from trainables.dataset import ImageSet

STUDY_FORMAT = 1  # layout of study.json and of the study directory


def _versions() -> dict[str, str]:
    import ray
    import torch

    return {"python": platform.python_version(), "ray": ray.__version__,
            "torch": torch.__version__, "platform": platform.platform()}


def claim_study(path: str, name: str, info: dict[str, Any]) -> None:
    """Create the study directory's ``study.json``, or fail if another study holds it."""
    try:
        storage.claim_study_file(path, info)
    except storage.AlreadyClaimed:
        raise StudyError(f"a study named {name!r} already exists at {path} (started just now "
                         "by another command, or earlier); pass --resume to continue it, or "
                         "choose another --name") from None
    except OSError as exc:
        raise StudyError(f"cannot write the study directory {path} ({type(exc).__name__}: "
                         f"{exc}); check --storage and that it is writable") from None


def study_record(name: str, space: Space, overrides: dict[str, Any], seed: int,
                 data: ImageSet, eval_sets: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``study.json`` records of a study: enough to refuse a resume that differs.

    ``eval_sets``: ``study.eval_data.record_entry`` of the ``--eval-data`` sets.
    """
    return {"format": STUDY_FORMAT, "schema_version": _schema_version(), "name": name,
            "space": json.loads(space.to_json()), "overrides": overrides, "seed": seed,
            "data_fingerprint": data.fingerprint, "data_source": data.source,
            "data_report": data.report, "eval_sets": eval_sets or {},
            "created": dt.datetime.now().isoformat(), "versions": _versions()}


def check_resumable(info: dict[str, Any] | None, path: str, wanted: dict[str, Any]) -> None:
    from results.schema import SCHEMA_VERSION

    if info is None:
        raise StudyError(f"nothing to resume at {path}: no {storage.STUDY_FILE}; check "
                         "--storage and "
                         "--name, or start the study without --resume")
    if info.get("format") != STUDY_FORMAT or info.get("schema_version") != SCHEMA_VERSION:
        raise StudyError(
            f"{path} was written by an older version (study format {info.get('format')}, "
            f"result schema v{info.get('schema_version')}; this version writes format "
            f"{STUDY_FORMAT}, schema v{SCHEMA_VERSION}). Resume it with the version that "
            "started it, or start a new study under another --name")
    differences = resume_differences(info, wanted)
    if differences:
        raise StudyError(f"{path} was started with other settings: " + "; ".join(differences)
                         + ". Resume it with the command it was started with, or start a new "
                         "study under another --name")


def resume_differences(info: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """What a resume asks for that the study at hand was not started with."""
    out = []
    if info.get("name") != wanted["name"]:
        out.append(f"it is the study {info.get('name')!r}, copied or moved to a folder named "
                   f"{wanted['name']!r} (resuming it there would leave its rows under two "
                   "names); resume it under its own name, or start afresh")
    if info.get("data_fingerprint") != wanted["data_fingerprint"]:
        out.append(f"other data (it used {info.get('data_source')}, fingerprint "
                   f"{info.get('data_fingerprint')}); pass the same --data (and --image-size, "
                   "--skip-bad, --subset)")
    if info.get("space") != wanted["space"]:
        before = (info.get("space") or {}).get("name")
        out.append(f"another space (it used {before!r}"
                   + (", with other values" if before == wanted["space"].get("name") else "")
                   + "); pass the same --space and --samples")
    if (info.get("overrides") or {}) != wanted["overrides"]:
        out.append(f"other --set values (it used {info.get('overrides') or {}}, not "
                   f"{wanted['overrides']})")
    before, now = info.get("eval_sets") or {}, wanted.get("eval_sets") or {}
    if before != now:
        def sets(s: dict[str, Any]) -> str:
            return ", ".join(f"{k}={v.get('source')}" for k, v in s.items()) or "none"
        out.append(f"other evaluation sets (it used {sets(before)}, not {sets(now)}); pass the "
                   "same --eval-data")
    if info.get("seed") != wanted["seed"]:
        out.append(f"another --seed (it used {info.get('seed')}, not {wanted['seed']})")
    return out


def _schema_version() -> int:
    from results.schema import SCHEMA_VERSION

    return SCHEMA_VERSION
