"""Fault scenarios on a real multi-node Ray cluster, one scenario per process.

Usage: python tests/cluster_scenarios.py SCENARIO WORKDIR [DATA]
(SCENARIO: spread, node_loss, storage, autoscale or measure)

Each scenario starts a ``ray.cluster_utils.Cluster`` on this machine (a head without CPUs, as on
AWS, and two worker nodes that declare one GPU each: the scheduler honours the declared GPUs
although there is none), runs a small study on it through ``study.run.main`` (``measure`` drives
Tune directly), injects its fault from a thread, and writes ``WORKDIR/verdict.json``: what
``tests/test_cluster_faults.py`` asserts on, next to the study's real Parquet tables under
``WORKDIR/studies``. DATA is a CIFAKE-layout folder (default: a tiny one written here). A
process can be connected to one Ray cluster only, and the pytest process holds the session's
Ray, hence a process per scenario.

The nodes of a ``Cluster`` share this machine's host name, so the trials table's ``node`` column
(the host name) cannot tell them apart here: a trial's Ray node is the ``ray_node_id`` the
trainable reports with every result (``result.json``), and the packing of trials onto nodes is
read from Ray's placement groups and its actor table, both sampled while the study runs (the
GCS need not keep a dead actor's entry until the study ends).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers import poll

REPO = Path(__file__).resolve().parents[1]
TRIAL_ACTOR = "ImplicitFunc"  # the class of the actor Tune runs a function trainable in
GPU_WARNING = "was given a GPU"  # from trainables.tune_adapter.trial_device
POLL_S = 0.2  # how often the watcher threads look at Ray's state and at the storage (s)
MB = 1 << 20


# ---------------------------------------------------------------------------------------------
# The cluster, the data and the study


def start_cluster(workers: list[dict[str, Any]], head: dict[str, Any] | None = None) -> Any:
    """A head without CPUs (it hosts the driver only) and one node per entry of ``workers``."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, **(head or {})})
    for node in workers:
        cluster.add_node(**node)
    cluster.wait_for_nodes()
    import ray

    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    return cluster


def stop(cluster: Any) -> None:
    import ray

    ray.shutdown()  # the driver must leave before its node goes
    cluster.shutdown()


def node_roles(cluster: Any) -> dict[str, str]:
    """Ray node id -> "head" or "worker"."""
    return {cluster.head_node.node_id: "head",
            **{node.node_id: "worker" for node in cluster.worker_nodes}}


def data_folder(workdir: Path, given: Path | None, n_train: int) -> Path:
    if given is not None:
        return given
    sys.path.insert(0, str(REPO / "tests"))
    from helpers import write_cifake_folder

    return write_cifake_folder(workdir / "data", n_train=n_train, n_test=16, size=16)


def add_space(name: str, params: dict[str, tuple[Any, ...]], fixed: dict[str, Any]) -> None:
    """Register a grid space (no ASHA) for ``study.run`` in this process."""
    from search_spaces import SPACES, Space, grid

    SPACES.add(name, Space(name, f"cluster scenario {name}",
                           {k: grid(*v) for k, v in params.items()}, fixed=fixed, asha=None))


def run_study(argv: list[str]) -> dict[str, Any]:
    """``study.run.main(argv)`` in this process: its exit code, output and duration."""
    from study.run import main

    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    sys.stdout.write(out.getvalue())
    sys.stderr.write(err.getvalue())
    return {"code": code, "stdout": out.getvalue()[-4000:], "stderr": err.getvalue()[-4000:],
            "wall_seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------
# What Ray and Tune know


def trial_dirs(study: Path) -> list[Path]:
    if not study.exists():
        return []
    return sorted(p for p in study.iterdir() if p.is_dir() and (p / "params.json").exists())


def checkpoints(study: Path) -> dict[str, list[str]]:
    """Trial directory -> its checkpoints in the storage, which each trial writes as it reports
    (Tune's own files there, params.json and result.json, wait for the driver's next sync)."""
    found: dict[str, list[str]] = {}
    for c in sorted(study.glob("*/checkpoint_*")):
        found.setdefault(c.parent.name, []).append(c.name)
    return found


def session_dir() -> Path:
    """The Ray session directory of this process's cluster (logs, the driver's artifacts)."""
    import ray

    return Path(ray._private.worker.global_worker.node.get_session_dir_path())


def live_logs(study: Path) -> dict[str, dict[str, Any]]:
    """``tune_logs`` while the study runs: read from the driver's staging directory (this
    process is the driver), where Tune writes each result as it comes."""
    staged = sorted(session_dir().glob(f"artifacts/*/{study.name}/driver_artifacts"))
    return tune_logs(staged[-1] if staged else study)


def tune_logs(study: Path) -> dict[str, dict[str, Any]]:
    """Per trial directory: its params, every ``result.json`` row (restarts included) and the
    failures recorded in ``error.txt`` (Tune appends one "Failure # n" entry per failure)."""
    out = {}
    for d in trial_dirs(study):
        result, error = d / "result.json", d / "error.txt"
        rows = [json.loads(line) for line in result.read_text().splitlines()
                ] if result.exists() else []
        text = error.read_text() if error.exists() else ""
        out[d.name] = {"params": json.loads((d / "params.json").read_text()), "rows": rows,
                       "failures_logged": text.count("Failure # "), "error_txt": text[-2000:]}
    return out


def experiment_state(study: Path) -> dict[str, dict[str, Any]]:
    """trial_id -> status and num_failures, from Tune's newest ``experiment_state-*.json``;
    ``{"unreadable": why}`` when that file is damaged."""
    files = sorted(study.glob("experiment_state-*.json"))  # named by session start time
    if not files:
        return {}
    try:
        state = json.loads(files[-1].read_text())
    except ValueError as exc:
        return {"unreadable": f"{files[-1].name}: {exc}"}
    out = {}
    for trial_json, meta_json in state["trial_data"]:
        trial, meta = json.loads(trial_json), json.loads(meta_json)
        out[trial["trial_id"]] = {"status": trial["status"],
                                  "num_failures": meta["num_failures"],
                                  "config": trial.get("config")}
    return out


def trial_actors() -> dict[int, dict[str, Any]]:
    """pid -> Ray node, state, start and end (s) of every trial actor this cluster has run."""
    import ray._private.state  # the GCS actor table; `ray list actors` needs the dashboard

    out = {}
    for info in ray._private.state.actors().values():
        if info["ActorClassName"] == TRIAL_ACTOR:
            out[int(info["Pid"])] = {"node": info["Address"]["NodeID"], "state": info["State"],
                                     "start": info["StartTime"] / 1000,
                                     "end": info["EndTime"] / 1000}
    return out


def gpu_warnings(pids: set[int]) -> dict[int, bool]:
    """pid -> whether that worker's log says it was given a GPU that torch cannot see."""
    logs = session_dir() / "logs"
    found = dict.fromkeys(pids, False)
    for path in logs.glob("worker-*.err"):  # worker-<worker id>-<job id>-<pid>.err
        pid = int(path.stem.rsplit("-", 1)[-1])
        if pid in found and GPU_WARNING in path.read_text(errors="replace"):
            found[pid] = True
    return found


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The largest number of the intervals open at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def rss_shmem(pid: int) -> int:
    """Bytes of shared memory resident in process ``pid`` (Linux), e.g. a raylet's object store."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssShmem:"):
            return int(line.split()[1]) * 1024
    return 0


class Sampler(threading.Thread):
    """Samples Ray's placement groups and each node's object store every POLL_S seconds."""

    def __init__(self, cluster: Any, track_actors: bool = False) -> None:
        super().__init__(daemon=True)
        self.track_actors = track_actors
        # Each node's object store lives in its raylet: the shared memory resident there is the
        # objects the node holds, copies fetched from other nodes included.
        self.raylets = {n.node_id: n.all_processes["raylet"][0].process.pid
                        for n in cluster.list_all_nodes()}
        self.done = threading.Event()
        self.groups_per_node: dict[str, int] = {}  # node -> most placement groups at once
        self.groups = 0  # most placement groups at once in the cluster
        self.bundles: dict[str, dict[str, float]] = {}  # placement group -> its one bundle
        self.group_nodes: dict[str, str] = {}  # placement group -> its node
        self.store_bytes: dict[str, float] = {}  # node -> most bytes of primary copies
        self.shm_bytes: dict[str, int] = {}  # node -> most shared memory resident in its raylet
        self.actors: dict[int, dict[str, Any]] = {}  # trial actors seen, by pid (newest entry)

    def run(self) -> None:
        while not self.done.is_set():
            with contextlib.suppress(Exception):  # a node that goes away mid-sample
                self.sample()
            self.done.wait(POLL_S)

    def stop(self) -> dict[int, dict[str, Any]]:
        """Stops sampling; returns every trial actor seen, by pid, with its newest entry."""
        self.done.set()
        self.join()
        if self.track_actors:
            with contextlib.suppress(Exception):
                self.actors.update(trial_actors())
        return self.actors

    def sample(self) -> None:
        import ray

        if self.track_actors:
            self.actors.update(trial_actors())
        per_node: dict[str, int] = {}
        for pg_id, pg in ray.util.placement_group_table().items():
            if pg["state"] != "CREATED":
                continue
            node = pg["bundles_to_node_id"][0]
            self.bundles[pg_id] = dict(pg["bundles"][0])
            self.group_nodes[pg_id] = node
            per_node[node] = per_node.get(node, 0) + 1
        for node, count in per_node.items():
            self.groups_per_node[node] = max(self.groups_per_node.get(node, 0), count)
        self.groups = max(self.groups, sum(per_node.values()))
        for node, pid in self.raylets.items():
            with contextlib.suppress(OSError):  # a removed node
                self.shm_bytes[node] = max(self.shm_bytes.get(node, 0), rss_shmem(pid))
        # Primary copies per node = its object store capacity - what the raylet reports
        # available (`ray memory` needs the grpc client, not installed here). Copies a node
        # fetched from another are not counted here.
        available = ray._private.state.state.available_resources_per_node()
        for n in ray.nodes():
            if n["Alive"] and n["NodeID"] in available:
                used = (n["Resources"].get("object_store_memory", 0)
                        - available[n["NodeID"]].get("object_store_memory", 0))
                self.store_bytes[n["NodeID"]] = max(self.store_bytes.get(n["NodeID"], 0), used)


# ---------------------------------------------------------------------------------------------
# Scenarios


def spread(workdir: Path, data: Path | None) -> dict[str, Any]:
    """Four trials at 0.5 GPU each on two 1-GPU nodes, one of which diverges.

    Expected: both nodes used, never more than two trials on a node at once, every trial given
    a GPU share and trained on the CPU; the diverging trial (SGD at lr 1e20 raises
    FloatingPointError) retried once (--max-failures 1), then an ERROR row with its message,
    while the others finish.
    """
    data = data_folder(workdir, data, n_train=48)
    # Two logical CPUs per node, half a CPU per trial: the GPU share, not the CPUs, bounds the
    # packing (four trials would fit a node by CPUs alone).
    cluster = start_cluster([{"num_cpus": 2, "num_gpus": 1}] * 2)
    sampler = Sampler(cluster, track_actors=True)
    sampler.start()
    add_space("spread", {"lr": (0.001, 0.002, 0.003, 1e20)},
              {"model": "small_cnn", "optimizer": "sgd", "epochs": 2, "image_size": 16,
               "batch_size": 16})
    run = run_study(["--space", "spread", "--data", str(data),
                     "--storage", str(workdir / "studies"), "--name", "spread",
                     "--address", cluster.address, "--cpus-per-trial", "0.5",
                     "--gpus-per-trial", "0.5", "--max-failures", "1", "--quiet"])
    actors = sampler.stop()
    study = workdir / "studies" / "spread"
    roles = node_roles(cluster)
    logs = tune_logs(study)
    trials = {}
    for name, log in logs.items():
        pids = sorted({r["pid"] for r in log["rows"]})
        trials[name] = {"lr": log["params"]["lr"], "pids": pids,
                        "nodes": sorted({r["ray_node_id"] for r in log["rows"]}),
                        "hostname": sorted({r["hostname"] for r in log["rows"]}),
                        "failures_logged": log["failures_logged"],
                        "error_txt": log["error_txt"]}
    # Lifetimes of the actors of trials that reported (one actor each): a failed attempt's
    # actor may still be dying while its retry starts in the same placement group.
    reported = {p for t in trials.values() for p in t["pids"]}
    per_node: dict[str, list[tuple[float, float]]] = {}
    for pid in reported & set(actors):
        a = actors[pid]
        # An actor last seen alive has no end yet: it lived at least until now.
        per_node.setdefault(a["node"], []).append((a["start"], a["end"] or time.time()))
    verdict = {
        **run, "roles": roles, "trials": trials, "trial_actors": len(actors),
        "reported_actors_seen": len(reported & set(actors)), "reported_actors": len(reported),
        "actor_nodes": {n: len(iv) for n, iv in per_node.items()},
        "actors_at_once_per_node": {n: max_overlap(iv) for n, iv in per_node.items()},
        "groups_at_once_per_node": sampler.groups_per_node, "groups_at_once": sampler.groups,
        "bundles": sorted({json.dumps(b, sort_keys=True) for b in sampler.bundles.values()}),
        "group_nodes": sorted(set(sampler.group_nodes.values())),
        "gpu_warning": {str(p): w for p, w in gpu_warnings(reported | set(actors)).items()},
        "store_bytes": sampler.store_bytes, "shm_bytes": sampler.shm_bytes,
        "experiment_state": experiment_state(study),
    }
    stop(cluster)
    return verdict


def node_loss(workdir: Path, data: Path | None) -> dict[str, Any]:
    """A worker node is removed while its trials run; they restart on the other node from their
    last checkpoint (--max-failures 1) and the study finishes."""
    # With 400 training images per class and batch 8, an epoch lasts about half a second on
    # one core: the node goes while its trials still have epochs to run.
    data = data_folder(workdir, data, n_train=400)
    cluster = start_cluster([{"num_cpus": 1, "num_gpus": 1}] * 2)
    study = workdir / "studies" / "loss"
    add_space("loss", {"seed": (0, 1)},
              {"model": "small_cnn", "epochs": 6, "image_size": 16, "batch_size": 8})
    removed: dict[str, Any] = {}

    def remove_a_busy_node() -> None:
        # A checkpoint on disk is Tune's only once the driver has taken the result that carries
        # it, and a trial writes its next checkpoint only after that hand-over: two checkpoints
        # per trial mean each has one to restart from.
        if not poll(lambda: len(c := checkpoints(study)) == 2
                    and all(len(v) >= 2 for v in c.values()), 300, POLL_S / 4):
            return
        workers = {n.node_id: n for n in cluster.worker_nodes}
        # Busy: running a trial that has epochs left (a reused actor may be alive and idle,
        # and a trial may have finished on a node the other trial still runs on).
        actors = trial_actors()
        running = [log["rows"][-1] for log in live_logs(study).values()
                   if log["rows"] and log["rows"][-1]["epoch"] < 6]
        busy = [row["ray_node_id"] for row in running
                if actors.get(row["pid"], {}).get("state", "ALIVE") == "ALIVE"
                and row["ray_node_id"] in workers]
        if not busy:
            return
        target = max(set(busy), key=busy.count)
        removed.update(node=target, checkpoints=checkpoints(study), at=time.time())
        cluster.remove_node(workers[target])
        removed["remove_seconds"] = time.time() - removed["at"]

    watcher = threading.Thread(target=remove_a_busy_node, daemon=True)
    watcher.start()
    run = run_study(["--space", "loss", "--data", str(data),
                     "--storage", str(workdir / "studies"), "--name", "loss",
                     "--address", cluster.address, "--cpus-per-trial", "0.5",
                     "--gpus-per-trial", "0.5", "--max-failures", "1", "--quiet"])
    watcher.join()
    trials = {}
    for name, log in tune_logs(study).items():
        trials[name] = {"trial_id": log["rows"][0]["trial_id"] if log["rows"] else None,
                        "epochs_reported": [r["epoch"] for r in log["rows"]],
                        "nodes": [r["ray_node_id"] for r in log["rows"]]}
    verdict = {**run, "roles": node_roles(cluster), "removed": removed, "trials": trials,
               "epochs": 6, "experiment_state": experiment_state(study)}
    stop(cluster)
    return verdict


def storage(workdir: Path, data: Path | None) -> dict[str, Any]:
    """Storage that fills mid-study: the study stops with a message naming the storage and the
    command that resumes it (exit code 3); once there is space again, that very command
    finishes the study.

    The storage is a 16 MB tmpfs, filled by a ballast file once every trial has a registered
    checkpoint. Mounting needs root (CAP_SYS_ADMIN); without it the scenario says it skipped.
    """
    store = workdir / "store"
    store.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(store)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        return {"skipped": f"cannot mount a tmpfs ({mount.stderr.strip()}); needs root"}
    try:
        verdict = _fill_storage_then_resume(workdir, store, data)
        # The tables leave the tmpfs for the test to read.
        shutil.copytree(store / "full", workdir / "studies" / "full",
                        ignore=shutil.ignore_patterns("checkpoint_*"))
        return verdict
    finally:
        subprocess.run(["umount", "-l", str(store)], check=False)


def _fill_storage_then_resume(workdir: Path, store: Path, data: Path | None) -> dict[str, Any]:
    data = data_folder(workdir, data, n_train=400)
    cluster = start_cluster([{"num_cpus": 1, "num_gpus": 1}] * 2)
    study, ballast = store / "full", store / "ballast"
    add_space("storage", {"seed": (0, 1)},
              {"model": "small_cnn", "epochs": 6, "image_size": 16, "batch_size": 8})
    filled: dict[str, Any] = {}

    def fill() -> None:
        # As in node_loss: a trial's second checkpoint means its first is registered.
        if not poll(lambda: len(c := checkpoints(study)) == 2
                    and all(len(v) >= 2 for v in c.values()), 300, POLL_S / 4):
            return
        filled.update(checkpoints=checkpoints(study), at=time.time())
        with open(ballast, "wb") as f:
            try:
                while True:
                    f.write(bytes(64 * 1024))
                    f.flush()
            except OSError as exc:
                filled["error"] = f"{type(exc).__name__}: {exc}"
        filled["ballast_bytes"] = ballast.stat().st_size

    filler = threading.Thread(target=fill, daemon=True)
    filler.start()
    first = run_study(["--space", "storage", "--data", str(data), "--storage", str(store),
                       "--name", "full", "--address", cluster.address,
                       "--cpus-per-trial", "0.5", "--gpus-per-trial", "0.5",
                       "--max-failures", "1", "--quiet"])
    filler.join()
    from study.storage_guard import rescue_dir

    rescued = rescue_dir(str(study))
    first.update(tables_written=(study / "trials.parquet").exists(),
                 experiment_state=experiment_state(study), checkpoints=checkpoints(study),
                 rescued=str(rescued) if rescued.exists() else None,
                 rescued_state=experiment_state(rescued))
    ballast.unlink(missing_ok=True)  # the storage has space again
    # Resume with the command the message printed, word for word.
    printed = [line.strip() for line in first["stderr"].splitlines()
               if line.strip().startswith("python -m study.run") and "--resume" in line]
    resumed: dict[str, Any] = {"command": printed[-1] if printed else None}
    if printed:
        words = shlex.split(printed[-1])
        resumed.update(run_study([*words[3:], "--quiet"]))
    trials = {name: {"trial_id": log["rows"][0]["trial_id"] if log["rows"] else None,
                     "epochs_reported": [r["epoch"] for r in log["rows"]],
                     "nodes": [r["ray_node_id"] for r in log["rows"]]}
              for name, log in tune_logs(study).items()}
    verdict = {"store": str(store), "study": str(study), "filled": filled, "first": first,
               "resume": resumed, "rescue_left": rescued.exists(), "trials": trials,
               "epochs": 6, "experiment_state": experiment_state(study)}
    stop(cluster)
    return verdict


# Autoscaling with Ray's fake multi-node provider: cluster.yaml's GPU worker type, on one machine.
IDLE_TIMEOUT_MIN = 0.1  # idle_timeout_minutes of the simulated cluster: 6 s


class NodeWatch(threading.Thread):
    """Samples every POLL_S seconds: when each Ray node was first seen alive and when it was
    last seen alive, and the trials' placement groups on each node (most at once, bundles)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.done = threading.Event()
        self.alive_from: dict[str, float] = {}
        self.alive_until: dict[str, float] = {}
        self.gpus: dict[str, float] = {}  # node -> the GPUs it declares
        self.groups_per_node: dict[str, int] = {}
        self.first_group: dict[str, float] = {}  # node -> when a trial's group was first on it
        self.last_group: dict[str, float] = {}  # ... and last
        self.bundles: set[str] = set()

    def run(self) -> None:
        while not self.done.is_set():
            with contextlib.suppress(Exception):  # a node that goes away mid-sample
                self.sample()
            self.done.wait(POLL_S)

    def stop(self) -> None:
        self.done.set()
        self.join()

    def sample(self) -> None:
        import ray

        now = time.time()
        for n in ray.nodes():
            if n["Alive"]:
                self.alive_from.setdefault(n["NodeID"], now)
                self.alive_until[n["NodeID"]] = now
                self.gpus[n["NodeID"]] = n["Resources"].get("GPU", 0)
        per_node: dict[str, int] = {}
        for pg in ray.util.placement_group_table().values():
            if pg["state"] == "CREATED":
                node = pg["bundles_to_node_id"][0]
                per_node[node] = per_node.get(node, 0) + 1
                self.first_group.setdefault(node, now)
                self.last_group[node] = now
                self.bundles.add(json.dumps(pg["bundles"][0], sort_keys=True))
        for node, count in per_node.items():
            self.groups_per_node[node] = max(self.groups_per_node.get(node, 0), count)

    def alive(self) -> list[str]:
        """The nodes seen alive in the last sample's second."""
        last = max(self.alive_until.values(), default=0)
        return [n for n, t in self.alive_until.items() if t >= last - 1]


def autoscale(workdir: Path, data: Path | None) -> dict[str, Any]:
    """cluster.yaml's shape on Ray's fake multi-node provider: a head without CPUs and a GPU
    worker type (1 GPU, 2 CPUs a node) kept at min_workers 1, up to 2. Four trials at half a GPU
    each fill the first node twice over; the autoscaler adds the second node for the two that
    wait; once the study is over, the idle node goes after idle_timeout_minutes and the
    minimum stays.

    The head is started here as ``ray.cluster_utils.AutoscalingCluster`` would (its template,
    fake_multi_node/example.yaml, is missing from Ray 2.60's wheel), and the cluster is stopped
    with ``ray stop --force``, which stops every Ray on the machine: run this scenario only where
    it has a PID namespace of its own (tests/test_autoscaling.py starts it inside one).
    """
    import ray

    if b"netns_hosts.py" not in Path("/proc/1/cmdline").read_bytes():
        raise SystemExit("autoscale stops every Ray it can see: run it in a host of "
                         "tests/netns_hosts.py (tests/test_autoscaling.py does)")
    data = data_folder(workdir, data, n_train=200)
    # The fake provider's options as in Ray's fake_multi_node/example.yaml: node ids serve as
    # addresses and nodes start as processes of the autoscaler, without updaters or SSH.
    config = {
        "cluster_name": "fake_multinode", "max_workers": 2,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True},
        "available_node_types": {
            # The fake provider names its head's type so; any other name makes it start heads.
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            # cluster.yaml's gpu_worker, scaled down: one GPU, min_workers 1.
            "gpu_worker": {"resources": {"CPU": 2, "GPU": 1}, "node_config": {},
                           "min_workers": 1, "max_workers": 2}},
        "head_node_type": "ray.head.default", "auth": {}, "upscaling_speed": 1.0,
        "idle_timeout_minutes": IDLE_TIMEOUT_MIN, "docker": {},
        **{key: [] for key in ("initialization_commands", "setup_commands",
                               "head_setup_commands", "worker_setup_commands",
                               "head_start_ray_commands", "worker_start_ray_commands",
                               "cluster_synced_files", "rsync_exclude", "rsync_filter")},
        "file_mounts": {}, "file_mounts_sync_continuously": False,
    }
    config_file = workdir / "autoscaling.json"
    config_file.write_text(json.dumps(config))
    # The autoscaler's round every second (Ray's default is 5 s), as AutoscalingCluster does.
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    t0 = time.time()
    subprocess.run(["ray", "start", "--head", f"--autoscaling-config={config_file}",
                    "--num-cpus=0", "--include-dashboard=false"], env=env, check=True,
                   capture_output=True)
    try:
        ray.init(address="auto", include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
        watch = NodeWatch()
        watch.start()
        poll(lambda: sum(1 for n in watch.alive() if watch.gpus.get(n)) >= 1, 120, POLL_S / 4)
        minimum_up = time.time()
        before = set(watch.alive())
        add_space("autoscale", {"seed": (0, 1, 2, 3)},
                  {"model": "small_cnn", "epochs": 6, "image_size": 16, "batch_size": 8})
        run = run_study(["--space", "autoscale", "--data", str(data),
                         "--storage", str(workdir / "studies"), "--name", "autoscale",
                         "--address", "auto", "--cpus-per-trial", "0.5",
                         "--gpus-per-trial", "0.5", "--max-failures", "1", "--quiet"])
        study_end = time.time()
        gpu_nodes = lambda: [n for n in watch.alive() if watch.gpus.get(n)]  # noqa: E731
        peak = len(watch.gpus) - 1  # every node ever seen but the head
        # Idle, the extra node goes (whichever of the two the autoscaler picks); the minimum
        # stays.
        poll(lambda: len(gpu_nodes()) == 1, 90, POLL_S / 4)
        watch.stop()
        gone = [n for n in watch.gpus if watch.gpus[n] and n not in watch.alive()]
        trials = {name: {"nodes": sorted({r["ray_node_id"] for r in log["rows"]}),
                         "epochs": [r["epoch"] for r in log["rows"]]}
                  for name, log in tune_logs(workdir / "studies" / "autoscale").items()}
        added = [n for n in watch.alive_from if n not in before]
        new = added[0] if added else None
        verdict = {
            **run, "cluster_start_s": minimum_up - t0, "before": sorted(before),
            "added": added, "gpus": watch.gpus, "peak_gpu_nodes": peak, "trials": trials,
            "groups_at_once_per_node": watch.groups_per_node,
            "bundles": sorted(watch.bundles),
            "left_after": watch.alive(),
            "study_start_to_new_node_s": watch.alive_from[new] - minimum_up if new else None,
            "new_node_to_first_trial_s": (watch.first_group[new] - watch.alive_from[new]
                                          if new in watch.first_group else None),
            "released": gone,
            # From the end of the released node's last trial to its last sighting alive.
            "idle_to_released_s": (watch.alive_until[gone[0]] + POLL_S
                                   - watch.last_group[gone[0]] if gone else None),
            "study_end_to_released_s": (watch.alive_until[gone[0]] + POLL_S - study_end
                                        if gone else None),
            "idle_timeout_s": IDLE_TIMEOUT_MIN * 60,
        }
    finally:
        ray.shutdown()
        subprocess.run(["ray", "stop", "--force"], env=env, capture_output=True)
    return verdict


# ---------------------------------------------------------------------------------------------
# Measurements for docs/scaling.md (run by hand; nothing is asserted)


def _noop_trainable(config: dict[str, Any]) -> None:
    """Reports as fast as Tune takes results: the controller is the only limit."""
    from ray import tune

    for i in range(config["reports"]):
        if config["checkpoint"]:
            with tempfile.TemporaryDirectory() as folder:
                Path(folder, "state.bin").write_bytes(bytes(config["checkpoint"]))
                tune.report({"i": i}, checkpoint=tune.Checkpoint.from_directory(folder))
        else:
            tune.report({"i": i})


def _hold_data(config: dict[str, Any], data: Any) -> None:
    """Maps the data set from the object store (as every trial does) and holds it a while."""
    from ray import tune

    time.sleep(config["hold_s"])
    tune.report({"image_bytes": int(data.images.nbytes), "images": len(data)})


def _clock() -> Any:
    """A Tune callback recording, on the driver, when each trial started and reported."""
    from ray import tune

    class Clock(tune.Callback):
        def __init__(self) -> None:
            self.started: dict[str, float] = {}
            self.results: list[tuple[float, str, dict[str, Any]]] = []

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any
                           ) -> None:
            self.started[trial.trial_id] = time.time()

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any) -> None:
            self.results.append((time.time(), trial.trial_id, dict(result)))

    return Clock()


def _tune(fn: Any, param_space: dict[str, Any], samples: int, storage: Path, name: str,
          cpus: float, gpus: float = 0.0) -> tuple[Any, float]:
    from ray import tune

    clock = _clock()
    tuner = tune.Tuner(
        tune.with_resources(fn, tune.PlacementGroupFactory([{"CPU": cpus, "GPU": gpus}])),
        param_space=param_space, tune_config=tune.TuneConfig(num_samples=samples),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0,
                                  callbacks=[clock],
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
    t0 = time.perf_counter()
    tuner.fit()
    return clock, time.perf_counter() - t0


def _throughput(clock: Any) -> dict[str, float]:
    """Results per second the driver took, over the middle 80 % of the results (no start-up)."""
    times = sorted(t for t, _, _ in clock.results)
    lo, hi = times[len(times) // 10], times[len(times) * 9 // 10]
    return {"results": len(times), "results_per_s": (len(times) * 0.8) / max(hi - lo, 1e-9)}


def measure(workdir: Path, data: Path | None) -> dict[str, Any]:
    """Controller throughput, trial start-up, time per trial, and the data set's object-store
    footprint per node (with the real CIFAKE training split when it is at hand)."""
    from ray import tune

    from trainables.ingest import load_dataset
    from trainables.tune_adapter import trainable

    out: dict[str, Any] = {"cpu_cores": os.cpu_count(), "load_avg": os.getloadavg()}
    cifake = REPO.parent / "shared" / "data" / "cifake-train.zip"
    t0 = time.perf_counter()
    big = load_dataset(cifake, progress=False) if cifake.exists() else None
    out["cifake_load_s"] = time.perf_counter() - t0
    store = 1200 * MB if big is not None else 150 * MB
    # Four logical CPUs per node: room for 16 no-op trials at a quarter CPU each.
    cluster = start_cluster([{"num_cpus": 4, "num_gpus": 1, "object_store_memory": store}] * 2,
                            head={"object_store_memory": store})
    roles = node_roles(cluster)
    storage = workdir / "measure"
    # 1. The controller: 4 or 16 trials report as fast as they can, without and with a
    # checkpoint each time. Trials and driver share the same two cores here.
    for trials, label, reports, ckpt in ((4, "no_checkpoint", 400, 0),
                                         (16, "no_checkpoint", 100, 0),
                                         (4, "checkpoint_300kB", 60, 300_000),
                                         (16, "checkpoint_300kB", 15, 300_000)):
        clock, wall = _tune(_noop_trainable, {"reports": reports, "checkpoint": ckpt}, trials,
                            storage, f"noop-{trials}-{label}", cpus=0.25)
        out[f"controller_{trials}_trials_{label}"] = {**_throughput(clock), "wall_s": wall}
    # 2. Start-up and time per trial of the real trainable: 4 tiny trials of one epoch.
    tiny = load_dataset(data_folder(workdir, data, n_train=48), progress=False)
    config = {"model": "small_cnn", "epochs": 1, "image_size": 16, "batch_size": 16,
              "seed": tune.grid_search([0, 1, 2, 3])}
    clock, wall = _tune(tune.with_parameters(trainable, data=tiny), config, 1, storage,
                        "startup", cpus=0.5, gpus=0.5)
    first: dict[str, tuple[float, dict[str, Any]]] = {}
    for t, trial_id, result in clock.results:
        first.setdefault(trial_id, (t, result))
    out["startup"] = {
        "wall_s": wall,
        "first_result_after_start_s": [first[k][0] - clock.started[k] for k in first],
        "epoch_train_s": [first[k][1]["epoch_seconds"] for k in first],
        "trial_total_s": [first[k][1]["time_total_s"] for k in first],
    }
    # 3. The object store: the data set is put once on the driver's node and mapped by every
    # trial; each worker node fetches one copy for all its trials.
    if big is not None:
        sampler = Sampler(cluster)
        sampler.start()
        clock, wall = _tune(tune.with_parameters(_hold_data, data=big), {"hold_s": 8}, 4,
                            storage, "store", cpus=0.5, gpus=0.5)
        sampler.stop()
        out["object_store"] = {
            "image_bytes": int(big.images.nbytes),
            "manifest_bytes_in_memory": int(big.manifest.memory_usage(deep=True).sum()),
            "images": len(big),
            "primary_copy_bytes_per_node": {f"{roles[n]}:{n[:8]}": b
                                            for n, b in sampler.store_bytes.items()},
            "shm_bytes_per_node": {f"{roles[n]}:{n[:8]}": b
                                   for n, b in sampler.shm_bytes.items()},
            "groups_at_once_per_node": sampler.groups_per_node, "wall_s": wall,
        }
    stop(cluster)
    return out


SCENARIOS: dict[str, Callable[[Path, Path | None], dict[str, Any]]] = {
    "spread": spread,
    "node_loss": node_loss,
    "storage": storage,
    "measure": measure,
    "autoscale": autoscale,
}


def main(argv: list[str]) -> int:
    name, workdir = argv[0], Path(argv[1]).resolve()
    data = Path(argv[2]).resolve() if len(argv) > 2 else None
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("CIFAKE_STUDY_CACHE", str(workdir / "cache"))
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    t0 = time.perf_counter()
    verdict = SCENARIOS[name](workdir, data)
    verdict["scenario_seconds"] = time.perf_counter() - t0
    (workdir / "verdict.json").write_text(json.dumps(verdict, indent=1, default=str))
    return 0


if __name__ == "__main__":
    # Ray keeps its sockets, logs and "current cluster" address file under RAY_TMPDIR: a short
    # private one (socket paths are limited to 107 bytes), so that no other Ray on this machine
    # finds this cluster through `ray.init()` and joins it.
    if "RAY_TMPDIR" not in os.environ:
        tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")
        try:
            sys.exit(subprocess.call([sys.executable, *sys.argv],
                                     env={**os.environ, "RAY_TMPDIR": tmp}))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(main(sys.argv[1:]))
