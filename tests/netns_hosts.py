"""Hosts of their own on one Linux machine, for testing the cluster launcher end to end.

Usage (as root)::

    with Hosts(workdir, {"client": None, "head": "10.213.0.10"}, shared=folder) as hosts:
        hosts.run("client", ["ssh", "root@10.213.0.10", "hostname"])

Each host is a network namespace with one address on a bridge, and inside it an init process
(this file, run as ``python netns_hosts.py init SPEC``) in PID, mount and UTS namespaces of its
own: its own process table (so ``ray stop`` or ``pkill`` on one host cannot reach another's
processes), its own host name, its own ``/root`` (home), ``/tmp`` and ``/run``, and the shared
folder mounted at ``/mnt/cifake`` on every host, as an NFS mount would be. A host given an
address runs an sshd on port 22 of that address, which takes the client's key for root. The
bridge lives in a namespace of its own and no namespace has a route elsewhere, so the hosts
reach only one another and their own loopback; nothing is added to this machine's own network.

What the hosts share with this machine: its file system except the folders above (read-only
under ``/work``, so a host cannot change the checkout or the virtual environments there), its
kernel and its CPUs. Killing a host's init (``Hosts.kill``) kills every process of that host at
once, as a power cut would, and removing its namespace takes its address off the bridge.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PREFIX_LEN = 24  # /24: every host on one bridge
SSH_PORT = 22
START_TIMEOUT_S = 20  # for an init to come up and its sshd to listen (s)
REPO = Path(__file__).resolve().parents[1]


def missing_tools(ssh: bool = True) -> str | None:
    """Why hosts (with sshd, unless ``ssh`` is false) cannot be built here, or None."""
    if os.geteuid() != 0:
        return "building hosts needs root (network, PID and mount namespaces)"
    packages = {"ip": "iproute2", "unshare": "util-linux", "nsenter": "util-linux",
                "mount": "mount", "/usr/sbin/sshd": "openssh-server", "ssh": "openssh-client",
                "ssh-keygen": "openssh-client", "rsync": "rsync"}
    if not ssh:
        packages = {k: v for k, v in packages.items() if "ssh" not in k and k != "rsync"}
    for tool, package in packages.items():
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package {package}; .ci/run installs sshd " \
                   "and rsync)"
    probe = f"cfkprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    try:
        bridge = subprocess.run(["ip", "-n", probe, "link", "add", "br0", "type", "bridge"],
                                capture_output=True, text=True)
        if bridge.returncode != 0:
            return f"cannot create a bridge: {bridge.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Hosts:
    """Hosts by name; a name whose address is None gets the first free one and no sshd."""

    def __init__(self, workdir: Path, hosts: Mapping[str, str | None], shared: Path,
                 subnet: str = "10.213.0", tag: str | None = None) -> None:
        self.workdir, self.shared, self.subnet = workdir, shared, subnet
        self.tag = tag or f"cfk{os.getpid() % 100000}"
        self.switch = f"{self.tag}-sw"
        used = {a for a in hosts.values() if a}
        free = (f"{subnet}.{i}" for i in range(2, 250) if f"{subnet}.{i}" not in used)
        self.address = {name: address or next(free) for name, address in hosts.items()}
        self.sshd = {name: address is not None for name, address in hosts.items()}
        self.procs: dict[str, subprocess.Popen] = {}
        self.init_pid: dict[str, int] = {}
        self.namespaces: list[str] = []

    # -- building ------------------------------------------------------------------------------

    def __enter__(self) -> Hosts:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def netns(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def home(self, name: str) -> Path:
        """The host's /root, seen from this machine."""
        return self.workdir / name / "root"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        _ip("netns", "add", self.switch)
        self.namespaces.append(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        keys = self.workdir / "keys"
        keys.mkdir()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "client",
                        "-f", str(keys / "id_ed25519")], check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "host",
                        "-f", str(keys / "ssh_host_ed25519_key")], check=True)
        for i, name in enumerate(self.address):
            self._plumb(name, i)
            self._start_init(name, keys)
        for name in self.address:
            self._wait_ready(name)

    def _plumb(self, name: str, i: int) -> None:
        ns = self.netns(name)
        _ip("netns", "add", ns)
        self.namespaces.append(ns)
        _ip("-n", self.switch, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0",
            "netns", ns)
        _ip("-n", self.switch, "link", "set", f"p{i}", "master", "br0", "up")
        _ip("-n", ns, "addr", "add", f"{self.address[name]}/{PREFIX_LEN}", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")

    def _start_init(self, name: str, keys: Path) -> None:
        root = self.workdir / name
        home, tmp, etc_ssh = self.home(name), root / "tmp", root / "etc-ssh"
        for folder in (home / ".ssh", tmp, etc_ssh):
            folder.mkdir(parents=True, exist_ok=True)
        (home / ".ssh").chmod(0o700)
        if self.sshd[name]:
            shutil.copy(keys / "id_ed25519.pub", home / ".ssh" / "authorized_keys")
            shutil.copy(keys / "ssh_host_ed25519_key", etc_ssh)
            (etc_ssh / "sshd_config").write_text(sshd_config(self.address[name]))
        else:  # the client: the key that every host accepts
            shutil.copy(keys / "id_ed25519", home / ".ssh" / "id_ed25519")
            shutil.copy(keys / "id_ed25519.pub", home / ".ssh" / "id_ed25519.pub")
        (root / "hosts").write_text(self.etc_hosts())
        # No name servers: a look-up of any other name fails at once, inside the host.
        (root / "resolv.conf").write_text("# the hosts resolve only each other (/etc/hosts)\n")
        spec = {"hostname": name, "home": str(home), "tmp": str(tmp), "shared": str(self.shared),
                "etc_hosts": str(root / "hosts"), "resolv_conf": str(root / "resolv.conf"),
                "etc_ssh": str(etc_ssh) if self.sshd[name] else None,
                "binds": [[str(p), ro] for p, ro in self.binds(name)],
                "ready": str(root / "ready")}
        with open(root / "init.log", "w") as log:  # the init keeps its own copy of the file
            self.procs[name] = subprocess.Popen(
                ["ip", "netns", "exec", self.netns(name), "unshare", "--pid", "--fork",
                 "--kill-child", "--mount-proc", "--mount", "--uts",
                 sys.executable, __file__, "init", json.dumps(spec)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def _wait_ready(self, name: str) -> None:
        ready = self.workdir / name / "ready"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                break
            if ready.exists():
                self.init_pid[name] = _child_of(self.procs[name].pid)
                return
            time.sleep(0.05)
        log = (self.workdir / name / "init.log").read_text()[-2000:]
        raise RuntimeError(f"host {name} did not come up:\n{log}")

    def etc_hosts(self) -> str:
        """Every host's name and address, as a cluster's machines usually resolve each other;
        Ray finds a node's own address through its host name when it has no default route."""
        return "".join(["127.0.0.1\tlocalhost\n",
                        *(f"{a}\t{n}\n" for n, a in self.address.items())])

    def binds(self, name: str) -> list[tuple[Path, bool]]:
        """What the host sees of this machine at the same paths (path, read-only), where its own
        /root or /tmp would hide it or it must not be written: the Python and the virtual
        environment that run Ray there, read-only, and this checkout, which `ray up` is run
        in on the client and which the other hosts may only read."""
        binds = {Path(sys.base_prefix): True, Path(sys.prefix): True, REPO: self.sshd[name]}
        # Parents first, so that a virtual environment inside the checkout keeps its mount.
        return sorted(binds.items())

    # -- using ---------------------------------------------------------------------------------

    def command(self, name: str, argv: Sequence[str], cwd: str = "/") -> list[str]:
        """``argv`` run inside host ``name`` (all its namespaces, working in ``cwd``)."""
        return ["nsenter", "--target", str(self.init_pid[name]), "--all", f"--wd={cwd}",
                *argv]

    def run(self, name: str, argv: Sequence[str], *, timeout: float, cwd: str = "/",
            env: Mapping[str, str] | None = None, check: bool = True
            ) -> subprocess.CompletedProcess:
        done = subprocess.run(self.command(name, argv, cwd), env=dict(env or os.environ),
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise AssertionError(f"on {name}: {' '.join(argv)} exited {done.returncode}\n"
                                 f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    def processes(self, name: str) -> dict[int, str]:
        """pid -> command line of every process of host ``name`` (pids as this machine sees
        them), the host's init excepted; zombies, which hold no resources, are left out."""
        if name not in self.init_pid:
            return {}
        try:
            own = os.readlink(f"/proc/{self.init_pid[name]}/ns/pid")
        except OSError:
            return {}
        found = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == self.init_pid[name]:
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") != own:
                    continue
                if Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            found[int(entry)] = " ".join(a.decode(errors="replace") for a in argv if a)
        return found

    def kill(self, name: str) -> None:
        """Every process of the host dies at once (its init is killed, and the kernel kills
        the rest of its PID namespace); then its network namespace goes, with its address."""
        proc = self.procs.pop(name, None)
        pid = self.init_pid.pop(name, None)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        ns = self.netns(name)
        if ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            self.namespaces.remove(ns)

    def close(self) -> None:
        """Every host killed and every namespace removed, whatever state they are in."""
        for name in list(self.procs):
            self.kill(name)
        for ns in list(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            self.namespaces.remove(ns)


def sshd_config(address: str) -> str:
    return "\n".join([
        f"ListenAddress {address}:{SSH_PORT}",
        "HostKey /etc/ssh/ssh_host_ed25519_key",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "AuthorizedKeysFile .ssh/authorized_keys",
        "PidFile /run/sshd.pid",
        "PrintMotd no",
        "Subsystem sftp internal-sftp",
        # The launcher opens many sessions at once (one per command, per host).
        "MaxStartups 100:30:200",
        "MaxSessions 100",
        "",
    ])


def _child_of(pid: int, timeout: float = 5) -> int:
    """The pid of the process that ``pid`` (``unshare --fork``) started: the host's init."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            children = []
        if children:
            return int(children[0])
        time.sleep(0.02)
    raise RuntimeError(f"unshare ({pid}) started no init")


# --------------------------------------------------------------------------------------------
# The init of a host: PID 1 of its PID namespace


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _target(path: str, spec: dict[str, Any]) -> str:
    """Where ``path`` must be mounted for the host to see it at ``path`` once its own /root and
    /tmp are in place."""
    for hidden, own in (("/root", spec["home"]), ("/tmp", spec["tmp"])):
        if path == hidden or path.startswith(hidden + "/"):
            return own + path[len(hidden):]
    return path


def init(spec: dict[str, Any]) -> int:
    """Make this mount namespace the host's, start its sshd, and reap orphans until killed."""
    subprocess.run(["hostname", spec["hostname"]], check=True)
    # The ready marker's folder disappears behind the private /tmp: keep a handle on it.
    ready_dir = os.open(os.path.dirname(spec["ready"]), os.O_RDONLY | os.O_DIRECTORY)
    # Sources first: the private /root and /tmp below hide the folders they come from.
    for path, read_only in spec["binds"]:
        target = _target(path, spec)
        Path(target).mkdir(parents=True, exist_ok=True)
        _mount("--rbind", path, target)
        if read_only:
            _mount("-o", "remount,bind,ro", target)
    _mount("-t", "tmpfs", "-o", "mode=755", "tmpfs", "/mnt")
    Path("/mnt/cifake").mkdir()
    _mount("--bind", spec["shared"], "/mnt/cifake")
    _mount("-t", "tmpfs", "-o", "mode=755", "tmpfs", "/run")
    _mount("--bind", spec["etc_hosts"], "/etc/hosts")
    _mount("--bind", spec["resolv_conf"], "/etc/resolv.conf")
    if spec["etc_ssh"]:
        _mount("--bind", spec["etc_ssh"], "/etc/ssh")
        Path("/run/sshd").mkdir(mode=0o755)
    _mount("--rbind", spec["home"], "/root")
    _mount("--rbind", spec["tmp"], "/tmp")
    sshd = None
    if spec["etc_ssh"]:
        sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e"], stdin=subprocess.DEVNULL)
        _wait_listening(SSH_PORT)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the kernel kills the rest
    print(f"{spec['hostname']}: up, sshd {sshd.pid if sshd else 'none'}", flush=True)
    os.close(os.open(os.path.basename(spec["ready"]), os.O_CREAT | os.O_WRONLY,
                     dir_fd=ready_dir))
    os.close(ready_dir)
    while True:
        try:
            os.wait()  # orphans (daemons whose parent exited) are reparented to this process
        except ChildProcessError:
            time.sleep(1)


def _wait_listening(port: int, timeout: float = START_TIMEOUT_S) -> None:
    """Until something in this network namespace listens on TCP ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for row in Path(table).read_text().splitlines()[1:]:
                local, state = row.split()[1], row.split()[3]
                if local.endswith(f":{port:04X}") and state == "0A":  # 0A: LISTEN
                    return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["init"]:
        sys.exit(init(json.loads(sys.argv[2])))
    sys.exit(f"usage: {sys.argv[0]} init SPEC_JSON")
