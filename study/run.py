"""Run a hyperparameter study with Ray Tune: ``python -m study.run --space cifake_grid``.

Usage:
    python -m study.run --list-spaces
    python -m study.run --space quickstart                     # embedded sample data
    python -m study.run --space cifake_grid --data archive.zip --dry-run
    python -m study.run --space cifake_grid --data archive.zip --name grid1 --storage s3://b/studies
    python -m study.run --space cifake_grid --name grid1 --resume ...   # after a crash or Ctrl-C
    python -m study.run --space my_space.yaml --dry-run         # a space of your own
    python -m study.run --space cifake_grid --export my_space.yaml   # a file to start from

Exit codes: 0 the study ran (crashed trials are ERROR rows); 2 it cannot start or resume (bad
input, named in the message); 3 its storage failed mid-study (the message gives the command that
resumes it once the storage works again).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from results import storage
from search_spaces import SPACES, Space, get_space
from search_spaces.files import load_space_file, resolve_space, write_space_file
from study.cli import (
    StudyError,
    add_plugin_arg,
    add_trust_arg,
    parse_overrides,
    resolve_data,
    run_command,
)
from study.eval_data import check_metric_set, load_eval_sets, parse_eval_data, record_entry
from study.plan import (
    check_resources,
    describe_plan,
    rerun_command,
    resources_for,
    resume_command,
)
from study.storage_guard import (
    STORAGE_EXIT,
    StorageFailure,
    rescue_dir,
    rescue_state,
    restore_rescued_state,
    storage_failure,
    storage_failure_in,
    storage_guard,
    storage_problem,
)
from study.study_file import check_resumable, claim_study, study_record
from trainables.dataset import describe, sample_subset
from trainables.eval_sets import set_columns
from trainables.folding import split_trial_id
from trainables.models import BUILT_IN_MODELS
from trainables.plugins import check_model, is_plugin_file


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m study.run", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", help="a built-in search space (see --list-spaces) or a .yaml/"
                   ".json space file")
    p.add_argument("--list-spaces", nargs="*", metavar="FILE",
                   help="list the built-in spaces (and these space files) and exit")
    p.add_argument("--export", metavar="FILE",
                   help="write --space as a .yaml/.json space file to edit, and exit")
    p.add_argument("--data", help="folder or .zip (CIFAKE, tiny-GenImage or <class>/ layout), "
                   "or 'sample' for the embedded data (the default)")
    p.add_argument("--image-size", type=int, help="resize images to this size at ingest")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out unreadable images (counted and listed) instead of failing")
    p.add_argument("--subset", type=int, metavar="N",
                   help="study a seeded, stratified, duplicate-aware subset of N images (cheap "
                   "searches; the subset is drawn with --seed)")
    p.add_argument("--eval-data", action="append", default=[], metavar="NAME=PATH",
                   help="an evaluation set (folder or .zip) every trial scores with the test set, "
                   "e.g. other generators; repeatable; never trains or selects unless --metric "
                   "names it")
    p.add_argument("--metric", metavar="METRIC",
                   help="rank trials (and stop them with ASHA) on this instead of the space's "
                   "metric, e.g. val_loss or eval:<set>/auc (an --eval-data set)")
    p.add_argument("--storage", default="studies",
                   help="where study directories live: a local path, or a URI (s3://, gs://, "
                   "an NFS mount) that every node can reach (required for multi-node)")
    p.add_argument("--name", help="study name (default: <space>-<timestamp>)")
    p.add_argument("--resume", action="store_true",
                   help="resume the study --name: finish unfinished trials, keep finished ones")
    p.add_argument("--restart-errored", action="store_true",
                   help="with --resume: run the trials that ended in ERROR again, from their "
                   "first epoch (finished trials are kept)")
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
    p.add_argument("--optuna-storage", metavar="LOCATION",
                   help="where the live Optuna mirror of the study goes, for optuna-dashboard: "
                   "a journal file or a database URL (default: <study dir>/optuna.log)")
    p.add_argument("--no-optuna", action="store_true",
                   help="do not mirror the study into an Optuna study")
    p.add_argument("--mlflow", nargs="?", const="", metavar="URI",
                   help="log the runs to MLflow (pip install \".[mlflow]\"): a tracking URI, "
                   "or none for sqlite:///<study dir>/mlflow.db")
    p.add_argument("--dry-run", action="store_true",
                   help="print the trials, ASHA rungs and resources; run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--progress-interval", type=float, default=30.0, metavar="S",
                   help="seconds between progress lines (default 30)")
    add_trust_arg(p)
    add_plugin_arg(p)
    args = p.parse_args(argv)
    if args.list_spaces is None and not args.space:
        p.error("--space is required; known spaces: " + ", ".join(SPACES.names()))
    if args.restart_errored and not args.resume:
        p.error("--restart-errored reruns the failed trials of a study: use it with --resume")
    if args.resume and not args.name:
        p.error("--resume needs --name of the study to resume (a folder under --storage)")
    for flag in ("cpus_per_trial", "gpus_per_trial"):
        value = getattr(args, flag)
        if value is not None and value < 0:
            p.error(f"--{flag.replace('_', '-')} must be >= 0")
    if args.gpus_per_trial and args.gpus_per_trial > 1 and not args.gpus_per_trial.is_integer():
        p.error("--gpus-per-trial above 1 must be a whole number")
    return args


def study_path(where: str, name: str) -> str:
    """The study directory of study ``name`` under ``--storage`` ``where``."""
    return storage.join(where, name)


def run(args: argparse.Namespace) -> int:
    # The classic reporter prints one compact status table with the columns chosen below; the
    # newer one prints every metric of every finished trial. Set before Ray Tune is imported.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray
    from ray import tune

    from results.tables import write_study_tables
    from search_spaces.tuning import to_tune
    from study.interrupt import INTERRUPTED_EXIT, InterruptLedger
    from study.outcomes import outcome_from_result
    from trainables.tune_adapter import trainable

    overrides = parse_overrides(args.set)
    if args.export:
        path = write_space_file(resolve_space(args.space), args.export)
        print(f"wrote {path}; edit it, then run it with --space {path}")
        return 0
    space = resolve_space(args.space).with_overrides(overrides)
    if args.samples is not None:
        space = dataclasses.replace(space, num_samples=args.samples).validate()
    if args.metric:
        mode = "min" if args.metric.endswith("loss") else "max"
        space = dataclasses.replace(space, metric=args.metric, mode=mode).validate()
    eval_specs = parse_eval_data(args.eval_data)
    try:
        check_metric_set(space, eval_specs)
    except StudyError as exc:
        if not args.dry_run:
            raise
        print(f"note: to run it: {exc}")
    for model in space.models():  # a detector from outside must fit before trials start
        if model not in BUILT_IN_MODELS:
            check_model(model)
    if args.dry_run:
        print(describe_plan(space, args))
        return 0

    data = resolve_data(args.data, args.image_size, args.skip_bad)
    if args.subset:
        data = sample_subset(data, args.subset, args.seed)
    print(describe(data))
    eval_sets = load_eval_sets(eval_specs, int(data.images.shape[1]), args.skip_bad, data)
    name = args.name or f"{space.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    path = study_path(args.storage, name)
    info = storage.read_study_file(path)
    record = study_record(name, space, overrides, args.seed, data, record_entry(eval_sets))
    if args.resume:
        check_resumable(info, path, record)
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
        # A local Ray has no autoscaler; a cluster joined with --address may have one.
        check_resources(args, space, gpus, autoscaled=bool(args.address))
        # The data sets enter the object store once; every trial on a node maps that one copy.
        fn = tune.with_resources(tune.with_parameters(trainable, data=data,
                                                      plugins=plugin_targets(args.plugin),
                                                      eval_sets=eval_sets),
                                 resources_for(args, gpus))
        ledger = InterruptLedger()
        hide_tune_restore_hint()
        callbacks: list[Any] = [storage_guard(path), ledger]
        if not args.quiet:
            from study.progress import ProgressLine

            callbacks.append(ProgressLine(space, args.progress_interval))
        mirror_at = optuna_location(args, path)
        if mirror_at:
            from study.optuna_mirror import OptunaMirror

            callbacks.append(OptunaMirror(mirror_at, name, space))
        if args.mlflow is not None:
            from study.mlflow_log import mlflow_callback

            if (logger := mlflow_callback(args.mlflow, path, name, space)) is not None:
                callbacks.append(logger)
        run_config = tune.RunConfig(
            name=name,
            storage_path=storage.normalise(args.storage),
            failure_config=tune.FailureConfig(max_failures=args.max_failures),
            # Two kept checkpoints: the newest, plus one to fall back on; each holds the best
            # weights and test scores so far, so nothing older is needed.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=0,  # one progress line per interval instead (study.progress)
            callbacks=callbacks,
        )
        if args.resume:
            try:
                rescued = restore_rescued_state(path)
            except OSError as exc:
                raise storage_failure(path, args.storage, f"{type(exc).__name__}: {exc}",
                                      rescue_dir(path), resume_command(args, name)) from exc
            if rescued:
                print(f"restored the experiment state kept in {rescued} when the storage failed")
            tuner = tune.Tuner.restore(path, trainable=fn, resume_unfinished=True,
                                       resume_errored=False,
                                       restart_errored=args.restart_errored)
        else:
            claim_study(path, name, record)
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
            outcomes = [outcome_from_result(r) for r in grid]
            ledger = InterruptLedger.current()  # a resumed study's is the restored one
            if ledger.interrupted:  # trials Tune stopped at Ctrl-C did not finish
                for o in outcomes:
                    o.finished = o.trial_id in ledger.finished
            trials, paths = write_study_tables(path, name, outcomes, eval_sets=eval_sets)
        except Exception as exc:
            # A storage failure surfaces as whatever Tune or pyarrow made of it; name it.
            guarded = storage_failure_in(exc)
            problem = str(guarded) if guarded else storage_problem(path)
            if problem:
                rescued = rescue_state(path, guarded.staging if guarded else None)
                raise storage_failure(path, args.storage, problem, rescued,
                                      resume_command(args, name)) from exc
            raise
    finally:
        if started_ray:
            ray.shutdown()
    print_summary(trials, space, wall)
    lost = {o.trial_id: o.unreadable for o in outcomes if o.unreadable}
    if lost:
        print(f"warning: {len(lost)} trial(s) lost their checkpoint (deleted or unreadable): "
              "their metrics are kept, their predictions and weights are gone. The files:\n  "
              + "\n  ".join(lost.values()) + "\nRun exactly those trials again as new "
              "studies (results.load merges them with this one):", file=sys.stderr)
        served = [split_trial_id(t)[0] in lost for t in trials["trial_id"]]
        for _, row in trials[served].iterrows():
            print("  " + rerun_command(args, name, space, row), file=sys.stderr)
    if (trials["status"] == "ERROR").any():
        print("to run the failed trials again from their first epoch:\n  "
              + resume_command(args, name) + " --restart-errored")
    print("tables:\n  " + "\n  ".join(paths))
    if ledger.interrupted:
        unfinished = int(trials["status"].isin(["INTERRUPTED", "PENDING"]).sum())
        unstarted = max(0, space.run_count(fold=not args.no_fold) - len(outcomes))
        print(f"error: the study was interrupted (Ctrl-C): {unfinished} trial(s) did not "
              f"finish (status INTERRUPTED) and {unstarted} run(s) never started; the tables "
              "hold what had finished. Continue it with:\n  " + resume_command(args, name),
              file=sys.stderr)
        return INTERRUPTED_EXIT
    return 0


class _NoTuneRestoreHint(logging.Filter):
    """Drops Tune's "Resume experiment with: Tuner.restore(...)": this project's own resume
    command is printed instead (``resume_command``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tuner.restore" not in record.getMessage()


def hide_tune_restore_hint() -> None:
    logger = logging.getLogger("ray.tune.tune")
    if not any(isinstance(f, _NoTuneRestoreHint) for f in logger.filters):
        logger.addFilter(_NoTuneRestoreHint())


def plugin_targets(plugins: list[str]) -> tuple[str, ...]:
    """--plugin values as the trial workers must import them: .py paths made absolute."""
    return tuple(str(Path(p).expanduser().resolve()) if is_plugin_file(p) else p
                 for p in plugins)


def optuna_location(args: argparse.Namespace, path: str) -> str | None:
    """Where the study's live Optuna mirror goes, or None when it is not mirrored."""
    if args.no_optuna:
        return None
    if args.optuna_storage:
        return args.optuna_storage
    if storage.is_uri(path):
        print("notice: the study directory is remote, so its Optuna mirror is off; pass "
              "--optuna-storage sqlite:///study.db (or a database URL) to watch it live")
        return None
    from study.optuna_mirror import JOURNAL_FILE

    return storage.join(path, JOURNAL_FILE)


def print_summary(trials: Any, space: Space, wall: float) -> None:
    import pandas as pd

    counts = trials["status"].value_counts().to_dict()
    stops = trials["stop_reason"].value_counts().to_dict()
    print(f"\n{len(trials)} trials in {wall:.0f} s: {counts}; stopped by {stops}")
    metric = space.metric_column
    cols = ["trial_id", *space.params, "status", "stop_reason", "epochs_run", metric,
            "test_accuracy", "test_auc", *set_columns(trials.columns, "auc").values(),
            "train_seconds"]
    cols = list(dict.fromkeys(c for c in cols if c in trials.columns))
    table = trials.sort_values(metric, ascending=space.mode == "min", na_position="last")[cols]
    with pd.option_context("display.width", 160, "display.max_columns", 30,
                           "display.float_format", "{:.4f}".format):
        print(table.head(20).to_string(index=False))
    errors = trials[trials["status"] == "ERROR"]
    for _, row in errors.iterrows():
        print(f"trial {row['trial_id']} failed: {row['error'].splitlines()[0]}")


def list_spaces(files: list[str]) -> int:
    for name in SPACES.names():
        space = get_space(name)
        print(f"{name:22s} {space.trial_count():5d} trials  {space.description}")
    for path in files:
        space = load_space_file(path)
        print(f"{space.name:22s} {space.trial_count():5d} trials  {space.description} "
              f"({path})")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(parse_args, lambda args: (list_spaces(args.list_spaces)
                                                 if args.list_spaces is not None
                                                 else run(args)),
                       argv, exits={StorageFailure: STORAGE_EXIT})


if __name__ == "__main__":
    sys.exit(main())
