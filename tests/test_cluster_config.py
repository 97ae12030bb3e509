"""The cluster-launcher configurations: valid for Ray itself, safe, and documented correctly.

Everything here runs offline. ``ray up`` first loads the YAML, runs
``ray.autoscaler._private.util.prepare_config`` (merges the provider's defaults.yaml and the
setup commands; no cloud calls) and ``validate_config`` (the JSON schema Ray ships,
``ray/autoscaler/ray-schema.json``, plus its cross-field checks), and only then calls the
provider's ``bootstrap_config`` and instance-type detection, which talk to AWS. These tests
take the first two steps and never the others; a fixture turns any network connection into a
test failure.
"""

from __future__ import annotations

import copy
import fnmatch
import itertools
import json
import os
import re
import shlex
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
AWS = REPO / "cluster.yaml"
LOCAL = REPO / "cluster-local.yaml"
DOC = REPO / "docs" / "cluster.md"
CONFIGS = [AWS, LOCAL]
RAY_PORTS = {8265: "dashboard and jobs API", 6379: "GCS", 10001: "Ray client server"}
WORLD = {"0.0.0.0/0", "::/0"}


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any TCP/UDP connection or name lookup fails the test: nothing may contact AWS."""
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"a cluster-config test tried to connect to {address!r}")
        return real_connect(sock, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a cluster-config test tried to resolve {host!r}")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def load(path: Path) -> dict[str, Any]:
    with open(path) as f:
        config = yaml.safe_load(f)  # what `ray up` does with the file
    assert isinstance(config, dict), f"{path.name} is not a YAML mapping"
    return config


def prepared(path: Path) -> dict[str, Any]:
    """The config as `ray up` validates it, before it contacts the cloud."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(load(path)))
    validate_config(config)
    return config


def ray_schema() -> dict[str, Any]:
    import ray.autoscaler

    with open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")) as f:
        return json.load(f)


def start_commands(config: dict[str, Any]) -> list[str]:
    return [*config["head_start_ray_commands"], *config["worker_start_ray_commands"]]


# --------------------------------------------------------------------------------------------
# Ray's own validation


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_file_matches_the_schema_ray_ships(path: Path) -> None:
    """The file as written: no misspelt or unknown top-level keys, right types everywhere."""
    import jsonschema

    jsonschema.validate(load(path), ray_schema())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_ray_up_validation_passes(path: Path) -> None:
    """prepare_config + validate_config, exactly as `ray up` runs them before the cloud."""
    config = prepared(path)
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    assert sum(t.get("min_workers", 0) for t in types.values()) <= config["max_workers"]


def test_no_test_network_access_is_possible() -> None:
    """The guard works, so the tests above really ran offline."""
    with pytest.raises(AssertionError, match="tried to"):
        socket.create_connection(("ec2.us-west-2.amazonaws.com", 443), timeout=1)


# --------------------------------------------------------------------------------------------
# AWS: machines, GPUs and the security group


def test_aws_head_is_cpu_only_and_workers_have_gpus() -> None:
    config = prepared(AWS)
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, "the head should not take GPU trials"
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    assert workers, "no worker node type"
    gpu_types = {name: t for name, t in workers.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu_types, "no worker node type declares resources: {GPU: ...}"
    for name, t in gpu_types.items():
        assert t["resources"].get("CPU", 0) >= 1, f"{name} declares no CPUs for its trials"
        assert 1 <= t["max_workers"] <= config["max_workers"], name
    # study.run gives trials the model's GPU share only if the cluster has a GPU when the
    # study starts, so at least one GPU node must always be up.
    assert sum(t["min_workers"] for t in gpu_types.values()) >= 1


def ingress_rules(node: Any) -> list[dict[str, Any]]:
    """Every ingress rule (IpPermissions entry) anywhere in a config."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "IpPermissions" and isinstance(value, list):
                found.extend(value)
            else:
                found.extend(ingress_rules(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(ingress_rules(item))
    return found


def world_open_ray_ports(rule: dict[str, Any]) -> list[int]:
    """The Ray ports this rule opens to the whole internet."""
    sources = {r.get("CidrIp") for r in rule.get("IpRanges", [])}
    sources |= {r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])}
    if not sources & WORLD:
        return []
    if str(rule.get("IpProtocol", "")).lower() in ("-1", "all"):
        return sorted(RAY_PORTS)
    low, high = rule.get("FromPort", -1), rule.get("ToPort", -1)
    if low in (None, -1):
        return sorted(RAY_PORTS)
    return [port for port in RAY_PORTS if low <= port <= high]


def test_no_ray_port_is_open_to_the_internet() -> None:
    for path in CONFIGS:
        for rule in ingress_rules(load(path)):
            opened = world_open_ray_ports(rule)
            assert not opened, (f"{path.name} opens {[RAY_PORTS[p] for p in opened]} "
                                f"to the internet: {rule}")


def test_the_port_check_would_catch_an_open_dashboard() -> None:
    """Ray's own example-security-group.yaml opens 8265 to 0.0.0.0/0: the check must see it."""
    config = load(AWS)
    config["provider"]["security_group"] = {"GroupName": "x", "IpPermissions": [
        {"FromPort": 8265, "ToPort": 8265, "IpProtocol": "TCP",
         "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}
    assert [p for r in ingress_rules(config) for p in world_open_ray_ports(r)] == [8265]
    assert world_open_ray_ports({"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]})
    assert not world_open_ray_ports({"FromPort": 22, "ToPort": 22, "IpProtocol": "tcp",
                                     "IpRanges": [{"CidrIp": "0.0.0.0/0"}]})


def test_every_aws_node_uses_the_admin_only_security_group() -> None:
    """Without SecurityGroupIds, Ray creates its default group, which opens SSH to 0.0.0.0/0."""
    config = load(AWS)
    for name, node_type in config["available_node_types"].items():
        groups = node_type["node_config"].get("SecurityGroupIds")
        assert groups, f"node type {name} has no SecurityGroupIds: Ray would create its own group"
    assert "security_group" not in config["provider"], (
        "provider.security_group is ignored once SecurityGroupIds are set; keep the rules in "
        "the group itself (docs/cluster.md)")


def documented_shell_lines() -> list[str]:
    """The lines of the ```bash blocks of docs/cluster.md, backslash continuations joined."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)
    lines: list[str] = []
    for block in blocks:
        pending = ""
        for raw in block.splitlines():
            line = raw.strip()
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            lines.append((pending + line).strip())
            pending = ""
    return [line for line in lines if line and not line.startswith("#")]


def test_documented_security_group_opens_only_ssh_from_a_cidr_and_the_group_itself() -> None:
    rules = [shlex.split(line) for line in documented_shell_lines()
             if "authorize-security-group-ingress" in line]
    assert rules, "docs/cluster.md shows no security group rules"
    for argv in rules:
        args = dict(itertools.pairwise(argv))  # each flag -> the token after it
        if "--source-group" in args:
            assert args["--source-group"] == args["--group-id"], argv  # intra-cluster only
        else:
            assert args.get("--port") == "22" and args.get("--protocol") == "tcp", argv
            assert args.get("--cidr") not in WORLD, f"SSH must not be open to the world: {argv}"


# --------------------------------------------------------------------------------------------
# Both configurations: dashboard, token authentication, project install, data, Ray version


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_dashboard_listens_on_localhost_only(path: Path) -> None:
    for command in start_commands(prepared(path)):
        host = re.search(r"--dashboard-host[= ](\S+)", command)
        assert host is None or host.group(1) in ("127.0.0.1", "localhost", "::1"), command


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_token_authentication_is_on_for_every_node(path: Path) -> None:
    config = prepared(path)
    mounts = config["file_mounts"]
    token = [remote for remote, local in mounts.items() if remote.endswith("/.ray/auth_token")]
    assert token and mounts[token[0]] == "~/.ray/auth_token", "token not copied to the nodes"
    starts = [c for c in start_commands(config) if "ray start" in c]
    assert len(starts) == 2, starts
    for command in starts:
        assert "RAY_AUTH_MODE=token" in command, f"Ray starts without token auth: {command}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_setup_installs_the_project_on_every_node(path: Path) -> None:
    config = prepared(path)
    project = re.search(r'^name = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)[1]
    mounted = {remote for remote, local in config["file_mounts"].items()
               if (REPO / os.path.expanduser(local)).resolve() == REPO}
    for role in ("head_setup_commands", "worker_setup_commands"):  # setup_commands merged in
        installs = [c for c in config[role] if "pip install" in c]
        assert any(f"{project} @ git+" in c or any(f"-e {m}" in c for m in mounted)
                   for c in installs), f"{path.name}: {role} does not install {project}"


def test_data_and_storage_in_the_docs_match_the_configs() -> None:
    """The documented --data paths are the ones the configs stage; --storage is shared."""
    from study.run import parse_args

    setups = {path: " ".join(prepared(path)["head_setup_commands"]) for path in CONFIGS}
    runs = [parse_args(argv) for argv in documented_study_runs()]
    assert runs
    for args in runs:
        assert any(args.data in text for text in setups.values()), (
            f"--data {args.data} is staged by neither configuration")
        assert args.storage.startswith("s3://") or any(
            args.storage in text for text in setups.values()), (
            f"--storage {args.storage} is neither S3 nor the shared path the setup checks")


def test_cluster_runs_the_ray_release_installed_here() -> None:
    """Cluster and client must run the same Ray release; bump the configs with the venv."""
    import ray

    docker = load(AWS)["docker"]
    for key in ("image", "head_image", "worker_image"):
        if key in docker:
            assert docker[key].split(":")[1].startswith(f"{ray.__version__}-"), docker[key]
    local_setup = " ".join(load(LOCAL)["setup_commands"])
    assert re.search(rf"ray\[[^\]]*\]=={re.escape(ray.__version__)}\b", local_setup)


def test_local_provider_config_uses_only_what_it_supports() -> None:
    config = load(LOCAL)
    provider = config["provider"]
    assert provider["type"] == "local"
    assert provider["head_ip"] and provider["worker_ips"]
    # The local provider aborts on available_node_types: GPUs are detected by `ray start`.
    assert "available_node_types" not in config and "head_node_type" not in config


def test_local_head_runs_the_v1_autoscaler() -> None:
    """`ray up` exports RAY_enable_autoscaler_v2=1 before the head's start commands (Ray 2.50+);
    with the local provider, v2 takes the head's node for a worker and never launches the last
    worker host (tests/test_launcher.py found it). The head's own setting must win."""
    from ray.autoscaler._private.util import with_envs

    starts = [c for c in load(LOCAL)["head_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 1
    assert re.search(r"\bRAY_enable_autoscaler_v2=0 (?:\S+=\S+ )*ray start --head", starts[0])
    # What the head's shell runs: an assignment in front of the command beats the export.
    exported = with_envs(starts, {"RAY_enable_autoscaler_v2": "1"})[0]
    assert exported.index("RAY_enable_autoscaler_v2=1") < exported.index(
        "RAY_enable_autoscaler_v2=0")


def test_local_workers_stop_ray_once_the_head_is_gone() -> None:
    """`ray down` with the local provider stops the head only: each worker starts a watcher that
    runs `ray stop` there when the head's GCS stops answering, detached from the SSH session."""
    commands = load(LOCAL)["worker_start_ray_commands"]
    start = next(i for i, c in enumerate(commands) if "ray start" in c)
    watchers = [c for c in commands[start + 1:] if "ray stop" in c]
    assert len(watchers) == 1, commands
    watcher = watchers[0]
    assert watcher.startswith("setsid -f nohup ") and "</dev/null >/dev/null 2>&1" in watcher
    assert "/dev/tcp/$RAY_HEAD_IP/6379" in watcher and "timeout " in watcher
    assert re.search(r"while \[ \"\$failed\" -lt \d+ \]", watcher)  # it gives up and exits


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shell_command_parses(path: Path) -> None:
    """The launcher hands each command to bash on the node: a quoting slip in the YAML would
    only show there, in the middle of `ray up`."""
    import subprocess

    config = prepared(path)
    keys = ("initialization_commands", "setup_commands", "head_setup_commands",
            "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
    for command in (c for key in keys for c in config.get(key, [])):
        done = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
        assert done.returncode == 0, f"{path.name}: {command}\n{done.stderr}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_placeholders_are_marked(path: Path) -> None:
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if "REPLACE_ME" in line:
            assert "FILL IN" in line, f"{path.name}:{number} has an unmarked placeholder"


# --------------------------------------------------------------------------------------------
# What `ray up` copies to every node

# Local bulk that must stay on the machine `ray up` runs on (paths relative to the repository).
LOCAL_BULK = [
    ".venv/lib/python3.11/site-packages/torch/lib/libtorch_cpu.so",  # the Quick start's venv
    "venv/bin/python",
    ".git/objects/pack/pack-0.pack",
    "studies/grid1/trials.parquet",
    "results/__pycache__/sql.cpython-311.pyc",
    "tests/__pycache__/conftest.cpython-311-pytest-9.2.0.pyc",
    "cifake_study.egg-info/PKG-INFO",
    "build/lib/results/sql.py",
    "dist/cifake_study-0.1.0-py3-none-any.whl",
    "figures/learning_curves.png",
    ".pytest_cache/v/cache/nodeids",
    ".ruff_cache/0.5.0/123",
    ".mypy_cache/3.11/results/sql.data.json",
    "archive.zip",
]


def rsync_excluded(path: str, patterns: list[str]) -> bool:
    """Whether ``rsync --exclude PATTERN ...`` skips ``path`` (relative to the transfer root).

    Modelled on rsync(1), "INCLUDE/EXCLUDE PATTERN RULES", for simple patterns (no ``**``):
    rsync tests each folder on the way down, so a path is skipped when any leading part of it
    is; a pattern without a slash matches the name of that part, one with a slash its whole
    path (from the root when it starts with one), and a trailing slash matches folders only.
    """
    parts = path.split("/")
    for depth in range(1, len(parts) + 1):
        lead, is_dir = parts[:depth], depth < len(parts)
        for raw in patterns:
            pattern = raw.rstrip("/")
            if raw.endswith("/") and not is_dir:
                continue
            if "/" not in pattern:
                hit = fnmatch.fnmatchcase(lead[-1], pattern)
            elif pattern.startswith("/"):
                hit = fnmatch.fnmatchcase("/".join(lead), pattern[1:])
            else:
                hit = any(fnmatch.fnmatchcase("/".join(lead[i:]), pattern) for i in range(depth))
            if hit:
                return True
    return False


def test_the_rsync_model_matches_names_at_any_depth_and_only_whole_names() -> None:
    assert rsync_excluded("a/b/.venv/x", [".venv"]) and rsync_excluded(".venv", [".venv"])
    assert not rsync_excluded("results/studies.py", ["studies"])
    assert rsync_excluded("x/build/y", ["build/"]) and not rsync_excluded("x/build", ["build/"])
    assert rsync_excluded("a/b/c", ["b/c"]) and not rsync_excluded("a/b/c", ["/b"])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_rsync_leaves_virtual_environments_and_local_bulk_behind(path: Path) -> None:
    config = load(path)
    assert config["file_mounts"], f"{path.name} syncs nothing"
    excludes = config["rsync_exclude"]
    assert not any("**" in p for p in excludes), "rsync_excluded() models simple patterns only"
    synced = [p for p in LOCAL_BULK if not rsync_excluded(p, excludes)]
    assert synced == [], f"{path.name} would copy these to every node"
    # rsync_filter adds every .gitignore's patterns (rsync --filter "dir-merge,- .gitignore").
    assert config["rsync_filter"] == [".gitignore"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_rsync_still_copies_the_project(path: Path) -> None:
    config = load(path)
    ignored = [line.strip() for line in (REPO / ".gitignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    patterns = [*config["rsync_exclude"], *ignored]
    sources = [p.relative_to(REPO).as_posix() for folder in (
        "study", "trainables", "results", "search_spaces", "tests", "benchmarks", "docs")
        for p in (REPO / folder).iterdir() if p.suffix in (".py", ".md")]
    sources += ["pyproject.toml", "README.md", "cluster.yaml", "cluster-local.yaml"]
    assert len(sources) > 50
    assert [s for s in sources if rsync_excluded(s, patterns)] == []


# --------------------------------------------------------------------------------------------
# docs/cluster.md: every documented command parses with the installed Ray and study.run


def documented_ray_commands() -> list[list[str]]:
    commands = []
    for line in documented_shell_lines():
        if re.match(r"^(?:[A-Z_][A-Z0-9_]*=\S+\s+)*ray\s", line):
            argv = shlex.split(line, comments=True)
            while "=" in argv[0]:  # leading VAR=value assignments
                argv.pop(0)
            commands.append(argv)
    return commands


def study_run_args(argv: list[str]) -> list[str] | None:
    for i in range(len(argv) - 2):
        if argv[i:i + 3] == ["python", "-m", "study.run"]:
            return argv[i + 3:]
    for token in argv:  # a command string passed to `ray exec`
        if "study.run" in token and " " in token:
            inner = study_run_args(shlex.split(token))
            if inner is not None:
                return inner
    return None


def documented_study_runs() -> list[list[str]]:
    runs = []
    for line in documented_shell_lines():
        if "study.run" in line:
            args = study_run_args(shlex.split(line))
            assert args is not None, line
            runs.append(args)
    return runs


def test_documented_ray_commands_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    import click
    from ray.scripts.scripts import cli

    monkeypatch.chdir(REPO)
    commands = documented_ray_commands()
    used = {" ".join(argv[:3]) for argv in commands}
    for expected in ("ray up cluster.yaml", "ray down cluster.yaml", "ray dashboard cluster.yaml",
                     "ray job submit", "ray job logs", "ray get-auth-token --generate"):
        assert any(u.startswith(expected) for u in used), f"docs never show `{expected}`"
    for argv in commands:
        command: click.Command = cli
        rest = argv[1:]
        while isinstance(command, click.Group):
            sub = command.get_command(None, rest[0])  # type: ignore[arg-type]
            assert sub is not None, f"no such command: {' '.join(argv)}"
            command, rest = sub, rest[1:]
        try:
            ctx = command.make_context(" ".join(argv[: len(argv) - len(rest)]), list(rest))
        except click.ClickException as exc:
            pytest.fail(f"`{' '.join(argv)}` does not parse: {exc.format_message()}")
        config_file = ctx.params.get("cluster_config_file")
        if config_file is not None:
            assert (REPO / config_file).is_file(), f"{config_file} does not exist"


def test_documented_study_runs_parse() -> None:
    from study.run import parse_args

    runs = documented_study_runs()
    assert len(runs) >= 3  # submit, resume, on premise
    for args in runs:
        try:
            parsed = parse_args(args)
        except SystemExit:
            pytest.fail(f"python -m study.run {' '.join(args)} does not parse")
        assert parsed.space and parsed.name and parsed.data, args
        assert parsed.storage != "studies", "multi-node runs need --storage on S3 or NFS"
