"""Run a hyperparameter study with Ray Tune: ``python -m study.run --space cifake_grid``.

Usage:
    python -m study.run --list-spaces
    python -m study.run --space quickstart                     # embedded sample data
    python -m study.run --space cifake_grid --data archive.zip --dry-run
    python -m study.run --space cifake_grid --data archive.zip --name grid1 --storage s3://b/studies
    python -m study.run --space cifake_grid --name grid1 --resume ...   # after a crash or Ctrl-C

Exit codes: 0 the study ran (crashed trials are ERROR rows); 2 it cannot start or resume (bad
input, named in the message); 3 its storage failed mid-study (the message gives the command that
resumes it once the storage works again).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from results.provenance import STUDY_FILE
from results.tables import filesystem
from search_spaces import SPACES, Space, SpaceError, get_space
from trainables.config import ConfigError, TrainConfig
from trainables.dataset import DataError, ImageSet, describe, sample_subset
from trainables.ingest import load_dataset
from trainables.registry import UnknownNameError

STUDY_FORMAT = 1  # layout of study.json and of the study directory
# Exit codes of main(): 2 = the study cannot start (bad input); 3 = its storage failed mid-study.
STORAGE_EXIT = 3
# How often the driver checks that study.json is still in the storage (s): one stat, or one S3
# HEAD request, so a vanished or swapped storage directory is noticed within this time.
STORAGE_CHECK_S = 30.0
# The write probe after a trial failure: big enough to fail on a nearly full disk, as a trial's
# checkpoint would (small_cnn's is about 0.3 MB), small enough to cost nothing on S3.
STORAGE_PROBE_BYTES = 1 << 20


class StudyError(RuntimeError):
    """A study that cannot start or resume; the message says why and what to do."""


class StorageFailure(RuntimeError):
    """The study's storage stopped accepting writes mid-study; the message says how to resume.

    ``staging`` is Tune's driver-side copy of the experiment folder, when the guard knew it.
    """

    def __init__(self, problem: str, staging: str | None = None) -> None:
        super().__init__(problem)
        self.staging = staging


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m study.run", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", help="named search space (see --list-spaces)")
    p.add_argument("--list-spaces", action="store_true", help="list the named spaces and exit")
    p.add_argument("--data", help="folder or .zip (CIFAKE, tiny-GenImage or <class>/ layout), "
                   "or 'sample' for the embedded data (the default)")
    p.add_argument("--image-size", type=int, help="resize images to this size at ingest")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out unreadable images (counted and listed) instead of failing")
    p.add_argument("--subset", type=int, metavar="N",
                   help="study a seeded, stratified, duplicate-aware subset of N images (cheap "
                   "searches; the subset is drawn with --seed)")
    p.add_argument("--storage", default="studies",
                   help="where study directories live: a local path, or a URI (s3://, gs://, "
                   "an NFS mount) that every node can reach (required for multi-node)")
    p.add_argument("--name", help="study name (default: <space>-<timestamp>)")
    p.add_argument("--resume", action="store_true",
                   help="resume the study --name: finish unfinished trials, keep finished ones")
    p.add_argument("--address", help="join a running Ray cluster (e.g. 'auto' or host:6379)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float,
                   help="GPU share per trial, fractions allowed (default: the model's own share "
                   "when the cluster has GPUs, else 0)")
    p.add_argument("--max-concurrent", type=int, help="at most this many trials at once")
    p.add_argument("--max-failures", type=int, default=1,
                   help="retries of a crashed trial from its last checkpoint (default 1)")
    p.add_argument("--samples", type=int, help="override the space's num_samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a hyperparameter for every trial (e.g. --set epochs=5)")
    p.add_argument("--no-fold", action="store_true",
                   help="run every epoch budget of a grid separately, instead of one run per "
                   "configuration serving each of its budgets (the default where exact)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the trials, ASHA rungs and resources; run nothing")
    p.add_argument("--quiet", action="store_true", help="less progress output")
    args = p.parse_args(argv)
    if not args.list_spaces and not args.space:
        p.error("--space is required; known spaces: " + ", ".join(SPACES.names()))
    if args.resume and not args.name:
        p.error("--resume needs --name of the study to resume (a folder under --storage)")
    for flag in ("cpus_per_trial", "gpus_per_trial"):
        value = getattr(args, flag)
        if value is not None and value < 0:
            p.error(f"--{flag.replace('_', '-')} must be >= 0")
    if args.gpus_per_trial and args.gpus_per_trial > 1 and not args.gpus_per_trial.is_integer():
        p.error("--gpus-per-trial above 1 must be a whole number")
    return args


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["epochs=5", "model=small_cnn"]`` -> {"epochs": 5, "model": "small_cnn"}, validated."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set {pair!r} must look like KEY=VALUE")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = value
    TrainConfig.from_dict(out)
    return out


def resolve_data(arg: str | None, image_size: int | None, skip_bad: bool) -> ImageSet:
    from trainables.sample import build_sample

    if arg in (None, "sample"):
        if arg is None:
            print("notice: no --data given; using the embedded sample data (it exercises the "
                  "system; its accuracies say nothing about CIFAKE)")
        return load_dataset(build_sample(), image_size=image_size, skip_bad=skip_bad)
    return load_dataset(arg, image_size=image_size, skip_bad=skip_bad)


def study_path(storage: str, name: str) -> str:
    if "://" in storage:
        return storage.rstrip("/") + "/" + name
    return str(Path(storage).expanduser().resolve() / name)


def resources_for(args: argparse.Namespace, gpus_in_cluster: float) -> Any:
    """Per-trial resources: the CLI's, else the model's GPU share when the cluster has GPUs."""
    from ray import tune

    from trainables.models import model_spec

    def per_trial(config: dict[str, Any]) -> Any:
        if args.gpus_per_trial is not None:
            gpu = args.gpus_per_trial
        else:
            gpu = model_spec(config["model"]).gpu_fraction if gpus_in_cluster > 0 else 0.0
        return tune.PlacementGroupFactory([{"CPU": args.cpus_per_trial, "GPU": gpu}])

    return per_trial


def describe_plan(space: Space, args: argparse.Namespace) -> str:
    from trainables.models import model_spec

    trials = space.trial_count()
    epochs = space.epoch_values()
    lines = [f"space {space.name}: {space.description}",
             f"  search: {space.search}, {trials} trials, metric {space.metric} ({space.mode})",
             f"  epochs per trial: {', '.join(map(str, epochs))}"]
    budgets = [] if args.no_fold else space.folded_budgets()
    if budgets:
        lines.append(f"  folded: {space.run_count()} runs of {max(budgets)} epochs serve the "
                     f"{trials} trials (budgets {', '.join(map(str, budgets))} of a configuration"
                     " share one run; --no-fold runs each)")
    if space.asha:
        rungs = space.asha.rungs(max(epochs))
        lines.append(f"  ASHA: rungs at epochs {rungs} (grace {space.asha.grace_period}, "
                     f"reduction factor {space.asha.reduction_factor}, max {max(epochs)})")
    else:
        lines.append("  ASHA: off (every trial runs its full budget)")
    for m in space.models():
        gpu = args.gpus_per_trial
        if gpu is None:
            gpu = model_spec(m).gpu_fraction
        lines.append(f"  resources {m}: {args.cpus_per_trial:g} CPU, {gpu:g} GPU when the "
                     "cluster has GPUs (else CPU only)")
    if args.max_concurrent:
        lines.append(f"  at most {args.max_concurrent} trials at once")
    return "\n".join(lines)


def _versions() -> dict[str, str]:
    import ray
    import torch

    return {"python": platform.python_version(), "ray": ray.__version__,
            "torch": torch.__version__, "platform": platform.platform()}


def _read_study_file(path: str) -> dict[str, Any] | None:
    import pyarrow.fs as pafs

    fs, base = filesystem(path)
    target = f"{base}/{STUDY_FILE}"
    if fs.get_file_info(target).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(target) as f:
        return json.loads(f.read().decode())


def _write_study_file(path: str, info: dict[str, Any]) -> None:

    try:
        fs, base = filesystem(path)
        fs.create_dir(base, recursive=True)
        with fs.open_output_stream(f"{base}/{STUDY_FILE}") as f:
            f.write(json.dumps(info, indent=1).encode())
    except OSError as exc:
        raise StudyError(f"cannot write the study directory {path} ({type(exc).__name__}: "
                         f"{exc}); check --storage and that it is writable") from None


def storage_problem(path: str, write: bool = True) -> str | None:
    """Why the study directory ``path`` cannot be used right now, or None when it can.

    The study directory must still hold ``study.json`` (a missing one means the storage was
    removed, unmounted or swapped); with ``write`` a probe file is written and removed again.
    """
    import pyarrow.fs as pafs

    try:
        fs, base = filesystem(path)
        if fs.get_file_info(f"{base}/{STUDY_FILE}").type != pafs.FileType.File:
            return f"{path}/{STUDY_FILE} has disappeared"
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


def resume_command(args: argparse.Namespace, name: str) -> str:
    """The command line that resumes this study (same data, storage, name and resources)."""
    cmd = ["python", "-m", "study.run", "--space", args.space]
    if args.data:
        cmd += ["--data", args.data]
    if args.image_size:
        cmd += ["--image-size", str(args.image_size)]
    if args.skip_bad:
        cmd.append("--skip-bad")
    if args.subset:
        cmd += ["--subset", str(args.subset)]
    cmd += ["--storage", args.storage, "--name", name]
    if args.address:
        cmd += ["--address", args.address]
    if args.cpus_per_trial != 1.0:
        cmd += ["--cpus-per-trial", f"{args.cpus_per_trial:g}"]
    if args.gpus_per_trial is not None:
        cmd += ["--gpus-per-trial", f"{args.gpus_per_trial:g}"]
    if args.seed:
        cmd += ["--seed", str(args.seed)]
    for pair in args.set:
        cmd += ["--set", pair]
    return shlex.join([*cmd, "--resume"])


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
    fs, base = filesystem(path)
    pafs.copy_files(str(source), base, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs)
    shutil.rmtree(source)
    return source


def storage_failure(args: argparse.Namespace, name: str, path: str, problem: str,
                    rescued: Path | None) -> StorageFailure:
    kept = (f" Tune's latest experiment state was copied to {rescued} on this machine; the "
            "command below puts it back first, so run it here." if rescued else "")
    return StorageFailure(
        f"the study's storage failed at {path}: {problem}.\nThe study was stopped; the "
        f"trials' last checkpoints in the storage are kept.{kept} Once {args.storage} accepts "
        "writes again (free space, remount it, restore its permissions or credentials), "
        f"continue the study with:\n  {resume_command(args, name)}")


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


def _storage_failure_in(exc: BaseException) -> StorageFailure | None:
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


def check_resumable(info: dict[str, Any] | None, path: str, data: ImageSet) -> None:
    from results.schema import SCHEMA_VERSION

    if info is None:
        raise StudyError(f"nothing to resume at {path}: no {STUDY_FILE}; check --storage and "
                         "--name, or start the study without --resume")
    if info.get("format") != STUDY_FORMAT or info.get("schema_version") != SCHEMA_VERSION:
        raise StudyError(
            f"{path} was written by an older version (study format {info.get('format')}, "
            f"result schema v{info.get('schema_version')}; this version writes format "
            f"{STUDY_FORMAT}, schema v{SCHEMA_VERSION}). Resume it with the version that "
            "started it, or start a new study under another --name")
    if info.get("data_fingerprint") != data.fingerprint:
        raise StudyError(f"{path} was started on other data ({info.get('data_source')}); "
                         "pass the same --data to resume it")


def run(args: argparse.Namespace) -> int:
    # The classic reporter prints one compact status table with the columns chosen below; the
    # newer one prints every metric of every finished trial. Set before Ray Tune is imported.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray
    from ray import tune

    from results.tables import TrialOutcome, write_study_tables
    from search_spaces.tuning import to_tune
    from trainables.tune_adapter import trainable

    overrides = parse_overrides(args.set)
    space = get_space(args.space).with_overrides(overrides)
    if args.samples is not None:
        space = dataclasses.replace(space, num_samples=args.samples).validate()
    if args.dry_run:
        print(describe_plan(space, args))
        return 0

    data = resolve_data(args.data, args.image_size, args.skip_bad)
    if args.subset:
        data = sample_subset(data, args.subset, args.seed)
    print(describe(data))
    name = args.name or f"{space.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    path = study_path(args.storage, name)
    info = _read_study_file(path)
    if args.resume:
        check_resumable(info, path, data)
    elif info is not None:
        raise StudyError(f"a study named {name!r} already exists at {path}; pass --resume to "
                         "continue it, or choose another --name")

    started_ray = False
    if not ray.is_initialized():
        ray.init(address=args.address, include_dashboard=False, log_to_driver=not args.quiet,
                 logging_level="WARNING")
        started_ray = True
    try:
        setup = to_tune(space, seed=args.seed, fold=not args.no_fold)
        gpus = float(ray.cluster_resources().get("GPU", 0))
        # The data set enters the object store once; every trial on a node maps that one copy.
        fn = tune.with_resources(tune.with_parameters(trainable, data=data),
                                 resources_for(args, gpus))
        run_config = tune.RunConfig(
            name=name,
            storage_path=args.storage if "://" in args.storage else
            str(Path(args.storage).expanduser().resolve()),
            failure_config=tune.FailureConfig(max_failures=args.max_failures),
            # Two kept checkpoints: the newest, plus one to fall back on; each holds the best
            # weights and test scores so far, so nothing older is needed.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            progress_reporter=tune.CLIReporter(
                parameter_columns=list(space.params),
                metric_columns=["epoch", "train_loss", "val_loss", "val_accuracy",
                                "test_accuracy", "stop_reason"],
                max_report_frequency=30, sort_by_metric=True,
            ),
            verbose=0 if args.quiet else 1,
            callbacks=[storage_guard(path)],
        )
        if args.resume:
            try:
                rescued = restore_rescued_state(path)
            except OSError as exc:
                raise storage_failure(args, name, path, f"{type(exc).__name__}: {exc}",
                                      rescue_dir(path)) from exc
            if rescued:
                print(f"restored the experiment state kept in {rescued} when the storage failed")
            tuner = tune.Tuner.restore(path, trainable=fn, resume_unfinished=True,
                                       resume_errored=False)
        else:
            _write_study_file(path, {
                "format": STUDY_FORMAT, "schema_version": _schema_version(), "name": name,
                "space": json.loads(space.to_json()), "overrides": overrides, "seed": args.seed,
                "data_fingerprint": data.fingerprint, "data_source": data.source,
                "data_report": data.report, "created": dt.datetime.now().isoformat(),
                "versions": _versions(),
            })
            tuner = tune.Tuner(
                fn,
                param_space=setup.param_space,
                tune_config=tune.TuneConfig(
                    metric=setup.metric, mode=setup.mode, scheduler=setup.scheduler,
                    search_alg=setup.search_alg, num_samples=setup.num_samples,
                    max_concurrent_trials=args.max_concurrent,
                    # A finished trial's worker takes the next trial of the same resources:
                    # no new process, no torch import, the data set already mapped.
                    reuse_actors=True,
                ),
                run_config=run_config,
            )
        t0 = time.perf_counter()
        try:
            grid = tuner.fit()
            wall = time.perf_counter() - t0
            outcomes = [TrialOutcome.from_result(r) for r in grid]
            trials, paths = write_study_tables(path, name, outcomes)
        except Exception as exc:
            # A storage failure surfaces as whatever Tune or pyarrow made of it; name it.
            guarded = _storage_failure_in(exc)
            problem = str(guarded) if guarded else storage_problem(path)
            if problem:
                rescued = rescue_state(path, guarded.staging if guarded else None)
                raise storage_failure(args, name, path, problem, rescued) from exc
            raise
    finally:
        if started_ray:
            ray.shutdown()
    print_summary(trials, space, wall)
    print("tables:\n  " + "\n  ".join(paths))
    return 0


def _schema_version() -> int:
    from results.schema import SCHEMA_VERSION

    return SCHEMA_VERSION


def print_summary(trials: Any, space: Space, wall: float) -> None:
    import pandas as pd

    counts = trials["status"].value_counts().to_dict()
    stops = trials["stop_reason"].value_counts().to_dict()
    print(f"\n{len(trials)} trials in {wall:.0f} s: {counts}; stopped by {stops}")
    metric = f"best_{space.metric}" if not space.metric.startswith("best_") else space.metric
    cols = ["trial_id", *space.params, "status", "stop_reason", "epochs_run", metric,
            "test_accuracy", "test_auc", "train_seconds"]
    cols = list(dict.fromkeys(c for c in cols if c in trials.columns))
    table = trials.sort_values(metric, ascending=space.mode == "min", na_position="last")[cols]
    with pd.option_context("display.width", 160, "display.max_columns", 30,
                           "display.float_format", "{:.4f}".format):
        print(table.head(20).to_string(index=False))
    errors = trials[trials["status"] == "ERROR"]
    for _, row in errors.iterrows():
        print(f"trial {row['trial_id']} failed: {row['error'].splitlines()[0]}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list_spaces:
        for name in SPACES.names():
            space = get_space(name)
            print(f"{name:22s} {space.trial_count():5d} trials  {space.description}")
        return 0
    try:
        return run(args)
    except (UnknownNameError, SpaceError, ConfigError, DataError, StudyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StorageFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return STORAGE_EXIT


if __name__ == "__main__":
    sys.exit(main())
