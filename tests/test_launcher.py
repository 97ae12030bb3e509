"""`ray up cluster-local.yaml` for real, on three hosts of their own, the way docs/cluster.md says.

The hosts (``tests/netns_hosts.py``) are Linux network namespaces on a bridge, each with its
own address, sshd, process table, mounts and host name; a fourth, ``client``, is the user's
machine, where ``ray up``, ``ray dashboard`` and ``ray job submit`` run. The configuration is the
shipped ``cluster-local.yaml`` with only what a user fills in changed: the addresses and the
SSH user (root here; the key is at the shipped default path, ``~/.ssh/id_ed25519``). The hosts
are prepared as the file asks of a machine before ``ray up``, and two things are prebuilt to
save time, as an offline machine would have them:

- ``~/cifake-venv`` exists, so setup's ``python3 -m venv`` is skipped. It sees the
  dependencies already installed for this test run (a ``.pth`` file naming this virtual
  environment's site-packages) and the synced tree ``~/cifake-study`` (another ``.pth``, what
  ``pip install -e`` makes). Its ``pip`` installs nothing: it records the arguments it was
  called with, and the test checks that setup asked for the pinned ``ray[default,...]`` and
  the project. The hosts have no route to a package index anyway.
- ResNet-18's ImageNet weights are in ``~/.cache/torch/hub/checkpoints`` (as the file tells
  hosts without internet access to do), a stand-in with random weights written here.

Shared storage is one folder mounted at ``/mnt/cifake`` on every host, as NFS would be.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import poll
from netns_hosts import Hosts, missing_tools

import results

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "cluster-local.yaml"
HEAD = "10.213.0.10"
WORKERS = {"worker1": "10.213.0.11", "worker2": "10.213.0.12"}
HOSTS = {"head": HEAD, **WORKERS}
VENV = "/root/cifake-venv"  # the shipped setup's ~/cifake-venv on a host
CONFIG = "/root/cluster-local.yaml"  # on the client, filled in
STUDY = "launcher1"
EPOCHS = 10
DASHBOARD = "http://127.0.0.1:8265"  # on the client, through `ray dashboard`'s SSH tunnel
POLL_S = 0.2
RAY_PROCESS = re.compile(r"ray|raylet|gcs_server|plasma|dashboard", re.I)

pytestmark = [pytest.mark.launcher, pytest.mark.slow]

# Prints the status code and body of GET URL, with "Authorization: Bearer TOKEN" if given.
PROBE = """\
import json, sys, urllib.error, urllib.request
url, token = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
headers = {"Authorization": f"Bearer {token}"} if token else {}
request = urllib.request.Request(url, headers=headers)
try:
    with urllib.request.urlopen(request, timeout=10) as r:
        print(json.dumps([r.status, r.read().decode()]))
except urllib.error.HTTPError as e:
    print(json.dumps([e.code, e.read().decode()]))
except OSError as e:
    print(json.dumps([None, str(e)]))
"""


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    why = missing_tools()
    if why:
        pytest.skip(why)
    shared = tmp_path / "shared"
    write_shared_storage(shared, tmp_path)
    weights = stand_in_resnet18_weights(tmp_path)
    built = Hosts(tmp_path / "hosts", {"client": None, **HOSTS}, shared=shared)
    try:
        built.start()
        for name in HOSTS:
            prepare_host(built, name, weights)
        yield built
    finally:
        built.close()  # every host's processes, the namespaces, the bridge and its veths
        shutil.rmtree(tmp_path, ignore_errors=True)


def write_shared_storage(shared: Path, tmp: Path) -> None:
    """/mnt/cifake as the file expects it: data/cifake.zip, a writable studies/, and the
    study's space file, a grid of three seeds with no ASHA."""
    from helpers import write_cifake_folder

    # 120 training images per class in batches of 8: an epoch takes 1-3 s while three trials
    # share two cores, so a trial is still running when its host is taken away.
    folder = write_cifake_folder(tmp / "cifake", n_train=120, n_test=16, size=16)
    (shared / "data").mkdir(parents=True)
    (shared / "studies").mkdir()
    with zipfile.ZipFile(shared / "data" / "cifake.zip", "w") as archive:
        for path in sorted(folder.rglob("*.*")):
            archive.write(path, path.relative_to(folder).as_posix())
    (shared / "launcher.yaml").write_text(yaml.safe_dump({
        "name": "launcher", "description": "three seeds, one per host", "search": "grid",
        "num_samples": 1, "metric": "val_accuracy", "mode": "max", "asha": None,
        "params": {"seed": {"grid": [0, 1, 2]}},
        "fixed": {"model": "small_cnn", "epochs": EPOCHS, "image_size": 16, "batch_size": 8},
    }))


def stand_in_resnet18_weights(tmp: Path) -> Path:
    import torch
    from torchvision.models import ResNet18_Weights, resnet18

    path = tmp / Path(ResNet18_Weights.DEFAULT.url).name
    torch.save(resnet18().state_dict(), path)
    return path


def prepare_host(hosts: Hosts, name: str, weights: Path) -> None:
    """A machine as cluster-local.yaml expects it, with the prebuilt parts of the docstring."""
    home = hosts.home(name)
    for dotfile in (".bashrc", ".profile"):  # a new account's, which setup appends to
        shutil.copy(Path("/etc/skel") / dotfile, home / dotfile)
    python = Path(sys.base_prefix) / "bin" / "python3"
    hosts.run(name, [str(python), "-m", "venv", "--without-pip", VENV], timeout=60)
    venv = home / Path(VENV).name
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = venv / "lib" / version / "site-packages"
    (site / "00-cifake-study.pth").write_text("/root/cifake-study\n")
    (site / "10-prebuilt.pth").write_text(sysconfig.get_path("purelib") + "\n")
    pip = venv / "bin" / "pip"
    pip.write_text('#!/bin/sh\necho "$*" >> "$HOME/cifake-venv/pip-calls"\n')
    ray = venv / "bin" / "ray"
    ray.write_text(f"#!{VENV}/bin/python\nimport sys\nfrom ray.scripts.scripts import main\n"
                   "sys.exit(main())\n")
    for script in (pip, ray):
        script.chmod(0o755)
    cache = home / ".cache" / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    os.link(weights, cache / weights.name)


def filled_in_config() -> str:
    """The shipped file with the addresses and the SSH user filled in, nothing else."""
    config = yaml.safe_load(SHIPPED.read_text())
    config["provider"]["head_ip"] = HEAD
    config["provider"]["worker_ips"] = list(WORKERS.values())
    config["auth"]["ssh_user"] = "root"
    return yaml.safe_dump(config, sort_keys=False)


def client_env(**extra: str) -> dict[str, str]:
    """The user's shell: this virtual environment's ray on the PATH, the client's own home."""
    return {"PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root", "LANG": "C.UTF-8", "RAY_USAGE_STATS_ENABLED": "0", **extra}


def wait_until(condition: Callable[[], Any], timeout: float, what: str,
               every: float = POLL_S) -> Any:
    value = poll(condition, timeout, every)
    if not value:
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
    return value


def ray_processes(hosts: Hosts, name: str) -> list[str]:
    return [c for c in hosts.processes(name).values()
            if RAY_PROCESS.search(c) and not c.startswith("sshd")]


def test_ray_up_runs_a_study_over_every_host_and_ray_down_stops_them_all(
    hosts: Hosts, tmp_path: Path,
) -> None:
    t0 = time.monotonic()
    took: dict[str, float] = {}

    def lap(step: str) -> None:
        took[step] = round(time.monotonic() - t0, 1)

    client = hosts.home("client")
    (client / "cluster-local.yaml").write_text(filled_in_config())
    (client / "probe.py").write_text(PROBE)

    def on_client(*argv: str, timeout: float = 120, check: bool = True, **env: str
                  ) -> subprocess.CompletedProcess:
        return hosts.run("client", argv, timeout=timeout, cwd=str(REPO), env=client_env(**env),
                         check=check)

    def get(path: str, token: str | None = None) -> tuple[int | None, str]:
        done = on_client(sys.executable, "/root/probe.py", DASHBOARD + path,
                         *([token] if token else []), timeout=30)
        return tuple(json.loads(done.stdout))  # type: ignore[return-value]

    # 1. docs/cluster.md, "On-premise machines": the token, then `ray up`.
    on_client("ray", "get-auth-token", "--generate")
    token = (client / ".ray" / "auth_token").read_text().strip()
    up = on_client("ray", "up", "-y", CONFIG, timeout=300, check=False)
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    lap("ray_up")

    # 2. Every configured host joins.
    wait_until(lambda: all(any("raylet" in c for c in ray_processes(hosts, n)) for n in HOSTS),
               timeout=180, what="a raylet on every host")
    tunnel = subprocess.Popen(hosts.command("client", ["ray", "dashboard", CONFIG], str(REPO)),
                              env=client_env(), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: get("/api/version", token)[0] == 200, timeout=60,
                   what="the dashboard through `ray dashboard`", every=1)

        def active_nodes() -> int:
            status, body = get("/api/cluster_status?format=1", token)
            text = json.loads(body)["data"]["clusterStatus"] if status == 200 else ""
            found = re.search(r"Active:\n((?: \d+ \S+\n)+)", text)
            return sum(int(n) for n in re.findall(r" (\d+) ", found[1])) if found else 0

        wait_until(lambda: active_nodes() == len(HOSTS), timeout=120,
                   what="three active nodes in the autoscaler's status", every=2)
        status = on_client("ray", "exec", CONFIG, "ray status", timeout=120)
        assert re.search(rf"Active:\n {len(HOSTS)} local\.cluster\.node\n", status.stdout), (
            status.stdout[-2000:])
        lap("all_hosts_joined")
        for name in HOSTS:  # what setup asked the (recording) pip for
            calls = (hosts.home(name) / "cifake-venv" / "pip-calls").read_text()
            assert re.search(r"ray\[default,[^\]]*\]==\d", calls) and "-e " in calls, calls

        # 3. A client without the token is refused: the jobs API, and `ray job submit`.
        assert get("/api/jobs/")[0] == 401
        assert get("/api/jobs/", "not-the-token")[0] == 403
        assert get("/api/jobs/", token)[0] == 200
        (client / "no-token").mkdir()
        refused = on_client("ray", "job", "submit", "--address", DASHBOARD, "--", "true",
                            check=False, HOME="/root/no-token", RAY_AUTH_MODE="token")
        assert refused.returncode != 0
        assert "401" in refused.stdout + refused.stderr or "uthentication" in (
            refused.stdout + refused.stderr)
        lap("tokenless_refused")

        # 4. The study, submitted the documented way; a worker host dies in the middle.
        submit = on_client(
            "ray", "job", "submit", "--address", DASHBOARD, "--submission-id", STUDY,
            "--no-wait", "--working-dir", ".", "--runtime-env-json",
            json.dumps({"excludes": [".git", "studies", "*.zip"]}), "--",
            "python", "-m", "study.run", "--space", "/mnt/cifake/launcher.yaml",
            "--data", "/mnt/cifake/data/cifake.zip", "--storage", "/mnt/cifake/studies",
            "--name", STUDY, "--cpus-per-trial", "2", "--max-failures", "1",
            "--progress-interval", "5", timeout=120, RAY_AUTH_MODE="token")
        assert STUDY in submit.stdout + submit.stderr
        study = hosts.shared / "studies" / STUDY
        killed = wait_until(lambda: busy_trial(hosts, "worker1", study), timeout=180,
                            what="a trial on worker1 with two checkpoints and epochs to go")
        lap("worker1_busy")
        hosts.kill("worker1")
        lap("worker1_killed")

        def job_status() -> str | None:
            status, body = get(f"/api/jobs/{STUDY}", token)
            state = json.loads(body).get("status") if status == 200 else None
            return state if state in ("SUCCEEDED", "FAILED", "STOPPED") else None

        state = wait_until(job_status, timeout=240, what="the study to end", every=2)
        lap("study_done")
        _, logs = get(f"/api/jobs/{STUDY}/logs", token)
        assert state == "SUCCEEDED", json.loads(logs).get("logs", logs)[-4000:]
    finally:
        tunnel.send_signal(signal.SIGTERM)
        tunnel.wait(timeout=30)

    # 5. The tables are on the shared storage: trials on every host, the lost one moved.
    tables = results.load(study)
    trials = tables["trials"].set_index("trial_id")
    assert len(trials) == 3 and (trials["status"] == "TERMINATED").all()
    assert (trials["epochs_run"] == EPOCHS).all()
    reported = reported_epochs(study)
    assert {host for r in reported.values() for host in r["hosts"]} == set(HOSTS)
    moved = reported[killed["trial"]]
    assert set(moved["hosts"]) - {"worker1"} and moved["hosts"].get("worker1"), moved
    resumed_at = min(e for host, es in moved["hosts"].items() if host != "worker1" for e in es)
    # It went on from its last checkpoint, not from the first epoch.
    assert resumed_at >= killed["checkpoints"] >= 2, moved
    assert trials.loc[moved["trial_id"], "restarts"] == 1
    assert (trials.drop(index=moved["trial_id"])["restarts"] == 0).all()
    epochs = tables["epochs"]
    assert sorted(epochs.groupby("trial_id")["epoch"].apply(list).sum()) == sorted(
        list(range(1, EPOCHS + 1)) * 3)
    lap("tables_checked")

    # 6. `ray down` leaves no Ray process on any host left.
    down = on_client("ray", "down", "-y", CONFIG, timeout=180, check=False)
    assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
    lap("ray_down")
    alive = ["head", "worker2"]
    wait_until(lambda: not any(ray_processes(hosts, n) for n in alive), timeout=60,
               what="no Ray process on " + ", ".join(alive)
               + f": {({n: ray_processes(hosts, n) for n in alive})}", every=1)
    lap("no_ray_left")
    print(f"launcher scenario, seconds since start: {took}")


def busy_trial(hosts: Hosts, name: str, study: Path) -> dict[str, Any] | None:
    """The trial that host ``name`` runs, once it has two checkpoints in the storage (the first
    is then Tune's to restore) and epochs left; None before. A trial's actor works in a folder
    named after the trial's folder in the storage."""
    for pid, command in hosts.processes(name).items():
        if "ImplicitFunc" not in command:
            continue
        try:
            trial = os.path.basename(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            continue
        done = len(list((study / trial).glob("checkpoint_*")))
        if 2 <= done <= EPOCHS - 4:
            return {"trial": trial, "checkpoints": done}
    return None


def reported_epochs(study: Path) -> dict[str, dict[str, Any]]:
    """Trial folder -> its trial id and, by host name, the epochs it reported from there
    (Tune's result.json, restarts included)."""
    out: dict[str, dict[str, Any]] = {}
    for result in study.glob("*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        hosts_of: dict[str, list[int]] = {}
        for row in rows:
            hosts_of.setdefault(row["node"], []).append(row["epoch"])
        out[result.parent.name] = {"trial_id": rows[0]["trial_id"], "hosts": hosts_of}
    return out
