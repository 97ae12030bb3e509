"""cluster.yaml's autoscaling, simulated on one machine with Ray's fake multi-node provider.

The ``autoscale`` scenario of ``tests/cluster_scenarios.py`` runs inside a host of its own
(``tests/netns_hosts.py``: its own PID, network and mount namespaces), because Ray's
``AutoscalingCluster`` runs ``ray stop --force``, which would stop every other Ray on the
machine. Its GPU worker type is cluster.yaml's shape (1 GPU a node, min_workers 1) with an idle
timeout of 6 s; docs/scaling.md records the times it measures.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netns_hosts import Hosts, missing_tools

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300  # the scenario takes about a minute on 2 busy cores


@pytest.fixture
def verdict(tmp_path: Path) -> Iterator[dict[str, Any]]:
    why = missing_tools(ssh=False)
    if why:
        pytest.skip(why)
    from helpers import write_cifake_folder

    shared = tmp_path / "shared"
    write_cifake_folder(shared / "data", n_train=200)
    hosts = Hosts(tmp_path / "hosts", {"sim": None}, shared=shared)
    try:
        hosts.start()
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME": "/root", "LANG": "C.UTF-8", "PYTHONPATH": str(REPO),
               "RAY_USAGE_STATS_ENABLED": "0", "RAY_AIR_NEW_OUTPUT": "0"}
        done = hosts.run("sim", [sys.executable, str(REPO / "tests" / "cluster_scenarios.py"),
                                 "autoscale", "/mnt/cifake/work", "/mnt/cifake/data"],
                         timeout=TIMEOUT_S, cwd=str(REPO), env=env, check=False)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        found = json.loads((shared / "work" / "verdict.json").read_text())
        print("autoscaling, measured:", {k: v for k, v in found.items() if k.endswith("_s")})
        yield found
    finally:
        hosts.close()
        shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.cluster
def test_demand_adds_a_gpu_node_that_packs_two_half_gpu_trials_and_goes_when_idle(
    verdict: dict[str, Any],
) -> None:
    assert verdict["code"] == 0, verdict["stderr"]
    gpu_nodes = {n for n, g in verdict["gpus"].items() if g == 1}
    # The study started on the minimum (one GPU node) and its demand added exactly one.
    assert len(set(verdict["before"]) & gpu_nodes) == 1
    assert len(verdict["added"]) == 1 and verdict["added"][0] in gpu_nodes
    # Every trial asked for half a GPU; each GPU node held two trials at once, the new one too.
    assert verdict["bundles"] == [json.dumps({"CPU": 0.5, "GPU": 0.5}, sort_keys=True)]
    assert verdict["groups_at_once_per_node"] == dict.fromkeys(gpu_nodes, 2)
    ran_on = {n for t in verdict["trials"].values() for n in t["nodes"]}
    assert ran_on == gpu_nodes
    assert all(t["epochs"][-1] == 6 for t in verdict["trials"].values())
    # Idle after the study, one GPU node was released (the autoscaler picks which) after the
    # 6 s idle timeout plus its rounds; the minimum stayed.
    assert verdict["peak_gpu_nodes"] == 2
    assert len(set(verdict["left_after"]) & gpu_nodes) == 1
    assert len(verdict["released"]) == 1 and verdict["released"][0] in gpu_nodes
    assert verdict["idle_timeout_s"] <= verdict["idle_to_released_s"] < 90
