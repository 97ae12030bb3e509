"""The Kubernetes manifests (k8s/): every field they set exists in the API they name, and they
keep the security of cluster.yaml (token authentication, no public dashboard).

The API is ``tests/data/kuberay_v1_fields.yaml``, a trimmed copy of KubeRay's ray.io/v1 field
reference and of the core types the pod templates use; nothing here talks to a cluster.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))
DOC = REPO / "docs" / "cluster.md"
API = yaml.safe_load((REPO / "tests" / "data" / "kuberay_v1_fields.yaml").read_text())


def documents() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{path.name}[{i}]", doc) for path in MANIFESTS
            for i, doc in enumerate(yaml.safe_load_all(path.read_text())) if doc]


def unknown_fields(value: Any, kind: str, where: str) -> list[str]:
    """Paths below ``where`` that ``kind`` (a type of the API file) does not have."""
    if kind == "any":
        return []
    if kind.startswith("["):
        if not isinstance(value, list):
            return [f"{where}: a list expected"]
        return [bad for i, item in enumerate(value)
                for bad in unknown_fields(item, kind[1:-1], f"{where}[{i}]")]
    if kind == "scalar":
        return [] if isinstance(value, str | int | float | bool) else [f"{where}: not a scalar"]
    if kind in ("map", "quantities"):
        ok = isinstance(value, dict) and all(isinstance(v, str | int | float | bool)
                                             for v in value.values())
        return [] if ok else [f"{where}: a map of scalars expected"]
    fields = API["types"][kind]
    if not isinstance(value, dict):
        return [f"{where}: a {kind} mapping expected"]
    bad = [f"{where}.{key}: no such field in {kind}" for key in value if key not in fields]
    return bad + [b for key, item in value.items() if key in fields
                  for b in unknown_fields(item, fields[key], f"{where}.{key}")]


def walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every (path, value) in a document."""
    if isinstance(node, dict):
        return [(f"{path}.{k}", node[k]) for k in node] + [
            pair for k, v in node.items() for pair in walk(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [pair for i, v in enumerate(node) for pair in walk(v, f"{path}[{i}]")]
    return []


def cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    """Every RayClusterSpec: a RayCluster's spec and a RayJob's rayClusterSpec."""
    specs = []
    for name, doc in documents():
        if doc["kind"] == "RayCluster":
            specs.append((name, doc["spec"]))
        elif doc["kind"] == "RayJob":
            specs.append((name, doc["spec"]["rayClusterSpec"]))
    return specs


def test_the_manifests_are_a_ray_cluster_a_ray_job_and_their_storage() -> None:
    kinds = sorted(doc["kind"] for _, doc in documents())
    assert kinds == ["PersistentVolumeClaim", "RayCluster", "RayJob"]


@pytest.mark.parametrize("name,doc", documents(), ids=[n for n, _ in documents()])
def test_every_field_exists_in_the_api_it_names(name: str, doc: dict[str, Any]) -> None:
    kind = API["kinds"].get(f"{doc['apiVersion']} {doc['kind']}")
    assert kind, f"{name}: {doc['apiVersion']} {doc['kind']} is not an API these manifests use"
    assert unknown_fields(doc, kind, doc["kind"]) == []


def test_the_field_check_catches_a_misspelt_field() -> None:
    spec = {"headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [
        {"name": "x", "image": "y", "resource": {}}]}}}, "autoscalingOptions": {}}
    bad = unknown_fields(spec, "RayClusterSpec", "spec")
    assert bad == ["spec.autoscalingOptions: no such field in RayClusterSpec",
                   "spec.headGroupSpec.template.spec.containers[0].resource: no such field in "
                   "Container"]


@pytest.mark.parametrize("name,spec", cluster_specs(), ids=[n for n, _ in cluster_specs()])
def test_token_authentication_and_no_public_dashboard(name: str, spec: dict[str, Any]) -> None:
    assert spec["authOptions"]["mode"] == "token", name
    # The Secret docs/cluster.md has the user create: a token they can read, one for both files.
    assert spec["authOptions"]["secretName"] == "cifake-ray-token", name
    assert "kubectl create secret generic cifake-ray-token" in DOC.read_text()
    head = spec["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP" and head.get("enableIngress") is False, name
    containers = [c for group in [head, *spec["workerGroupSpecs"]]
                  for c in group["template"]["spec"]["containers"]]
    for container in containers:  # no token in the manifest itself, and auth never disabled
        for env in container.get("env", []):
            assert env["name"] not in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE"), (name, env)
    assert "dashboard-host" not in head["rayStartParams"]


def test_no_service_type_or_object_opens_the_cluster_to_the_outside() -> None:
    for name, doc in documents():
        assert doc["kind"] not in ("Ingress", "Service", "Gateway", "Route"), name
        for path, value in walk(doc):
            if path.endswith(".serviceType"):
                assert value == "ClusterIP", f"{name}{path} = {value}"
            assert not path.endswith(".hostNetwork"), f"{name}{path}"
            assert not path.endswith(".hostPort"), f"{name}{path}"


@pytest.mark.parametrize("name,spec", cluster_specs(), ids=[n for n, _ in cluster_specs()])
def test_ray_release_gpu_workers_and_shared_storage(name: str, spec: dict[str, Any]) -> None:
    import ray

    assert spec["rayVersion"] == ray.__version__
    dockerfile = (K8S / "Dockerfile").read_text()
    assert re.search(rf"^FROM rayproject/ray:{re.escape(ray.__version__)}-", dockerfile, re.M)
    head = spec["headGroupSpec"]
    assert head["rayStartParams"].get("num-cpus") == "0", "the head should run no trials"
    (group,) = spec["workerGroupSpecs"]
    assert 1 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    (worker,) = group["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    claims = {d["metadata"]["name"] for _, d in documents()
              if d["kind"] == "PersistentVolumeClaim"}
    for pod in (head["template"]["spec"], group["template"]["spec"]):
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for c in pod["containers"]
                  for m in c["volumeMounts"]}
        assert volumes[mounts["/mnt/cifake"]]["persistentVolumeClaim"]["claimName"] in claims


def test_the_job_runs_the_documented_study_on_the_shared_storage() -> None:
    from study.run import parse_args

    (job,) = [doc for _, doc in documents() if doc["kind"] == "RayJob"]
    words = job["spec"]["entrypoint"].split()
    assert words[:3] == ["python", "-m", "study.run"]
    args = parse_args(words[3:])
    assert args.data.startswith("/mnt/cifake/") and args.storage.startswith("/mnt/cifake/")
    assert args.address is None  # a job's driver joins the cluster it was submitted to
    (cluster,) = [doc for _, doc in documents() if doc["kind"] == "RayCluster"]
    assert job["spec"]["rayClusterSpec"] == cluster["spec"], (
        "k8s/rayjob.yaml's cluster should be k8s/raycluster.yaml's")


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_placeholders_are_marked(path: Path) -> None:
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if "REGISTRY/" in line or "nfs-client" in line:
            assert "FILL IN" in line, f"{path.name}:{number}"
