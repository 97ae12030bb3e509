"""What the commands of ``study`` share: overrides, data, trial arguments and exit codes.

Usage:
    overrides = parse_overrides(["epochs=5"])          # --set, validated
    data = resolve_data(args.data, args.image_size, args.skip_bad)
    add_trial_args(parser)                             # study_dir, --trial, --device
    return run_command(parse_args, run, argv)          # a user error: one line, exit code 2

Exit codes of every command: 0 done; 2 bad input (the message names it and the fix);
``study.run`` adds 3 for a storage that failed mid-study (``study.storage_guard``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from results.storage import StudyFileError
from results.tables import SchemaError
from search_spaces import SpaceError
from study.trials import TrialError
from trainables.checkpoint import CheckpointError, trust_checkpoints
from trainables.config import ConfigError, TrainConfig
from trainables.dataset import DataError, ImageSet
from trainables.eval_sets import EvalSetError
from trainables.ingest import load_dataset
from trainables.plugins import ENTRY_POINT_GROUP, load_plugins
from trainables.registry import UnknownNameError

USAGE_EXIT = 2  # bad input: the message says what and how to fix it


class StudyError(RuntimeError):
    """A study that cannot start or resume; the message says why and what to do."""


# Errors a command reports as "error: ..." with exit status 2 (bad input, not a bug).
USER_ERRORS: tuple[type[BaseException], ...] = (
    StudyError, TrialError, DataError, SchemaError, StudyFileError, CheckpointError,
    FileNotFoundError, ConfigError, SpaceError, UnknownNameError, EvalSetError)


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
    """The data set of ``--data``: a path, or the embedded sample (``None``: with a notice)."""
    from trainables.sample import build_sample

    if arg in (None, "sample"):
        if arg is None:
            print("notice: no --data given; using the embedded sample data (it exercises the "
                  "system; its accuracies say nothing about CIFAKE)")
        return load_dataset(build_sample(), image_size=image_size, skip_bad=skip_bad)
    return load_dataset(arg, image_size=image_size, skip_bad=skip_bad)


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu",
                   help="cpu (default), cuda or mps; cuda falls back to the CPU without a GPU")
    add_trust_arg(p)
    add_plugin_arg(p)


def add_plugin_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import this module (a dotted name or a .py path) whose "
                   "register_model(...) calls add detectors; repeatable (installed packages "
                   f"offer theirs through the entry-point group {ENTRY_POINT_GROUP!r})")


def add_trust_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-checkpoints", action="store_true",
                   help="also read checkpoints in the older pickled format, which can run code "
                   "when loaded: only for files you made yourself")


def add_trial_args(p: argparse.ArgumentParser, *, several: bool = False) -> None:
    """The analysis commands' preamble: the study directory, ``--trial`` and ``--device``."""
    p.add_argument("study_dir", nargs="?", help="a study directory (<storage>/<name>)")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="use this checkpoint instead of a study's trial (study.train_best's "
                   "<out>/checkpoint.pt); results go to its folder")
    if several:
        p.add_argument("--trial", nargs="+", default=["best"],
                       help="trial id(s), 'best' (highest validation accuracy) or 'all'")
    else:
        p.add_argument("--trial", default="best", help="a trial id, or 'best' (the default)")
    add_device_arg(p)


def run_command(parse_args: Callable[[list[str] | None], argparse.Namespace],
                run: Callable[[argparse.Namespace], int], argv: list[str] | None,
                exits: dict[type[BaseException], int] | None = None) -> int:
    """The shared ``main`` of the commands: a user error is one line and exit code 2;
    ``exits`` maps further error types to their own codes."""
    args = parse_args(argv)
    if getattr(args, "trust_checkpoints", False):
        trust_checkpoints()  # inherited by the Ray workers this process starts
    handled = {**dict.fromkeys(USER_ERRORS, USAGE_EXIT), **(exits or {})}
    try:
        load_plugins(getattr(args, "plugin", None) or ())  # before any model name is looked up
        return run(args)
    except tuple(handled) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return next(code for kind, code in handled.items() if isinstance(exc, kind))
    except BrokenPipeError:
        # The reader went away (``... | head``): stop quietly, as Unix tools do. Point stdout
        # at /dev/null so that the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for such a pipeline stage
