"""Stop a study as soon as its storage fails, and keep what is needed to resume it.

Usage (by study.run):
    callbacks=[storage_guard(path)]              # a Tune callback
    problem = storage_problem(path)              # None while the storage works
    rescued = rescue_state(path, staging)        # Tune's driver-side state, kept on this machine
    restore_rescued_state(path)                  # before --resume
    raise storage_failure(path, storage, problem, rescued, resume_command)

A storage that disappears, fills up or turns read-only mid-study would otherwise fail every
trial in turn on its next checkpoint upload; stopping at the first failure leaves the trials
unfinished in the last saved state, so ``--resume`` continues them from their checkpoints.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

from results import storage

STORAGE_EXIT = 3  # the exit code of a study whose storage failed mid-study
# How often the driver checks that study.json is still in the storage (s): one stat, or one S3
# HEAD request, so a vanished or swapped storage directory is noticed within this time.
STORAGE_CHECK_S = 30.0
# The write probe after a trial failure: big enough to fail on a nearly full disk, as a trial's
# checkpoint would (small_cnn's is about 0.3 MB), small enough to cost nothing on S3.
STORAGE_PROBE_BYTES = 1 << 20


class StorageFailure(RuntimeError):
    """The study's storage stopped accepting writes mid-study; the message says how to resume.

    ``staging`` is Tune's driver-side copy of the experiment folder, when the guard knew it.
    """

    def __init__(self, problem: str, staging: str | None = None) -> None:
        super().__init__(problem)
        self.staging = staging


def storage_problem(path: str, write: bool = True) -> str | None:
    """Why the study directory ``path`` cannot be used right now, or None when it can.

    The study directory must still hold ``study.json`` (a missing one means the storage was
    removed, unmounted or swapped); with ``write`` a probe file is written and removed again.
    """
    try:
        fs, base = storage.filesystem(path)
        if not storage.is_file(storage.join(path, storage.STUDY_FILE)):
            return f"{path}/{storage.STUDY_FILE} has disappeared"
        if write:
            probe = f"{base}/.storage-probe-{os.getpid()}"
            try:
                with fs.open_output_stream(probe) as f:
                    f.write(bytes(STORAGE_PROBE_BYTES))
            finally:
                with contextlib.suppress(OSError):
                    fs.delete_file(probe)
    except OSError as exc:  # pyarrow's errors are OSErrors too
        return f"{type(exc).__name__}: {exc}"
    return None


def rescue_dir(path: str) -> Path:
    """Where this machine keeps Tune's experiment state of the study at ``path`` when its
    storage fails: a write cut short by the failure can leave the copy there unreadable."""
    from trainables.ingest import cache_root

    return cache_root() / "rescued-state" / hashlib.sha1(path.encode()).hexdigest()[:16]


def rescue_state(path: str, staging: str | None) -> Path | None:
    """Copy Tune's driver-side experiment folder (experiment and searcher state, every trial's
    logs; no checkpoints, which only the storage holds) to ``rescue_dir(path)``."""
    if not staging or not os.path.isdir(staging):
        return None
    target = rescue_dir(path)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(staging, target)
    return target


def restore_rescued_state(path: str) -> Path | None:
    """Before a resume: put a rescued experiment state back into the study directory.

    The rescue is taken when the storage fails, after which the study writes nothing more
    there, so it is the newest state; it is removed once uploaded.
    """
    import pyarrow.fs as pafs

    source = rescue_dir(path)
    if not source.is_dir():
        return None
    fs, base = storage.filesystem(path)
    pafs.copy_files(str(source), base, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs)
    shutil.rmtree(source)
    return source


def storage_failure(path: str, where: str, problem: str, rescued: Path | None, resume: str
                    ) -> StorageFailure:
    """The error that stops a study whose storage ``where`` failed at study directory ``path``;
    ``resume`` is the command that continues it."""
    kept = (f" Tune's latest experiment state was copied to {rescued} on this machine; the "
            "command below puts it back first, so run it here." if rescued else "")
    return StorageFailure(
        f"the study's storage failed at {path}: {problem}.\nThe study was stopped; the "
        f"trials' last checkpoints in the storage are kept.{kept} Once {where} accepts "
        "writes again (free space, remount it, restore its permissions or credentials), "
        f"continue the study with:\n  {resume}")


def storage_guard(path: str) -> Any:
    """A Tune callback that stops the study as soon as its storage fails.

    Without it, every trial would fail in turn on its next checkpoint upload, be retried, fail
    again and be recorded as ERROR; and a resume does not rerun errored trials. Stopping at the
    first failure leaves the trials unfinished in the last saved state, so ``--resume``
    continues them from their checkpoints. A trial failure with healthy storage is left to
    Tune's retries (``--max-failures``).
    """
    from ray import tune

    class StorageGuard(tune.Callback):
        def __init__(self) -> None:
            self.last_check = time.monotonic()

        def check(self, trials: list, write: bool) -> None:
            self.last_check = time.monotonic()
            problem = storage_problem(path, write=write)
            if problem:
                # Tune writes its state on the driver first, then copies it to the storage.
                staging = trials[0].storage.experiment_driver_staging_path if trials else None
                raise StorageFailure(problem, staging)

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any
                             ) -> None:
            self.check(trials, write=True)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any
                           ) -> None:
            self.check(trials, write=True)

        def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
            if time.monotonic() - self.last_check >= STORAGE_CHECK_S:
                self.check(trials, write=False)

    return StorageGuard()


def storage_failure_in(exc: BaseException) -> StorageFailure | None:
    """The StorageFailure a guard raised, found in the chain of exceptions Tune wrapped it in."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, StorageFailure):
            return e
        stack += [e.__cause__, e.__context__]
    return None
