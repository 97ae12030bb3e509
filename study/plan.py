"""What a study will ask of the cluster, and the command lines that continue or redo it.

Usage (by study.run):
    resources_for(args, gpus)              # per-trial resources for Tune
    check_resources(args, space, gpus, autoscaled)   # refuse what no node can offer
    print(describe_plan(space, args))      # --dry-run
    resume_command(args, name)             # printed after an interruption or a storage failure
    rerun_command(args, name, space, row)  # one trial again, as a new study
"""

from __future__ import annotations

import argparse
import json
import shlex
from typing import Any

from search_spaces import Space
from study.cli import StudyError
from trainables.eval_sets import parse_eval_metric


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


def check_resources(args: argparse.Namespace, space: Space, gpus_in_cluster: float,
                    autoscaled: bool) -> None:
    """Refuse per-trial resources that no node of the cluster can ever offer (a trial's
    request must fit on one node), instead of waiting forever; with a cluster that may
    autoscale (``--address``), say that the study waits for a node that fits."""
    import ray

    from trainables.models import model_spec

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    most_cpu = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    most_gpu = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
    for model in space.models():
        gpu = args.gpus_per_trial
        if gpu is None:
            gpu = model_spec(model).gpu_fraction if gpus_in_cluster > 0 else 0.0
        if args.cpus_per_trial <= most_cpu and gpu <= most_gpu:
            continue
        need = (f"a {model} trial asks for {args.cpus_per_trial:g} CPU and {gpu:g} GPU, but "
                f"the largest node of this cluster has {most_cpu:g} CPU and {most_gpu:g} GPU")
        if not autoscaled:
            raise StudyError(f"{need}, so no trial could ever start; lower --cpus-per-trial or "
                             "--gpus-per-trial, or join a cluster that has such nodes with "
                             "--address")
        print(f"notice: {need}; the study waits until the cluster's autoscaler adds a node "
              "that fits (if it has none, stop it with Ctrl-C and lower the request)")
        return


def describe_plan(space: Space, args: argparse.Namespace) -> str:
    from trainables.models import model_spec

    trials = space.trial_count()
    epochs = space.epoch_values()
    lines = [f"space {space.name}: {space.description}",
             f"  search: {space.search}, {trials} trials, metric {space.metric} ({space.mode})",
             f"  epochs per trial: {', '.join(map(str, epochs))}"]
    ranked_on = (parse_eval_metric(space.metric) or ("",))[0]
    for spec in getattr(args, "eval_data", None) or ():
        role = "the metric" if spec.partition("=")[0] == ranked_on else "never selects"
        lines.append(f"  evaluation set {spec} (scored with the test set; {role})")
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


def study_command(args: argparse.Namespace, name: str, sets: list[str] | None = None) -> list[str]:
    """The command line of this study (same space, data, storage and resources) as a list,
    under ``name``, with ``sets`` as its --set values (default: this study's)."""
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
    if getattr(args, "trust_checkpoints", False):
        cmd.append("--trust-checkpoints")
    if getattr(args, "samples", None) is not None:
        cmd += ["--samples", str(args.samples)]
    if getattr(args, "no_fold", False):
        cmd.append("--no-fold")
    if getattr(args, "optuna_storage", None):
        cmd += ["--optuna-storage", args.optuna_storage]
    if getattr(args, "no_optuna", False):
        cmd.append("--no-optuna")
    if args.seed:
        cmd += ["--seed", str(args.seed)]
    for plugin in getattr(args, "plugin", None) or ():
        cmd += ["--plugin", plugin]
    for spec in getattr(args, "eval_data", None) or ():
        cmd += ["--eval-data", spec]
    if getattr(args, "metric", None):
        cmd += ["--metric", args.metric]
    for pair in args.set if sets is None else sets:
        cmd += ["--set", pair]
    return cmd


def resume_command(args: argparse.Namespace, name: str) -> str:
    """The command line that resumes this study (same data, storage, name and resources)."""
    return shlex.join([*study_command(args, name), "--resume"])


def rerun_command(args: argparse.Namespace, name: str, space: Space, row: Any) -> str:
    """A new study of exactly one trial of this one: its varied hyperparameters fixed."""
    pairs = dict(p.partition("=")[::2] for p in args.set)
    for key in space.params:
        value = row.get(key)
        pairs[key] = json.dumps(value.item() if hasattr(value, "item") else value)
    sets = [f"{k}={v}" for k, v in pairs.items()]
    return shlex.join(study_command(args, f"{name}-rerun-{row['trial_id']}", sets))
