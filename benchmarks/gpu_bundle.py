"""What ``gpu_check.py`` needs on an air-gapped GPU node: ``python benchmarks/gpu_bundle.py``.

Usage:
    python benchmarks/gpu_bundle.py --data ../shared/data/cifake-train.zip
    python benchmarks/gpu_bundle.py --node-has node-freeze.txt   # a node's `pip list` instead
    python benchmarks/gpu_bundle.py --data-only --data cifake-train.zip

Run it where pip reaches a package registry. It writes into ``--out`` (``benchmarks/gpu_data``,
git-ignored), which then travels with the repository to the node:

- ``site.tar.xz``: an unpacked ``pip install --target`` tree, for the node's Python and
  platform (default CPython 3.12, manylinux x86-64), of every distribution the check imports
  that the node lacks: Ray with Tune (its Java jars, RLlib, Serve, LLM, workflow and dashboard
  front-end removed, its binaries stripped of symbols), Optuna and their small dependencies.
  Never torch, torchvision or numpy: the check runs on the node's own.
- ``cifake-subset.zip``: a seeded subset of the CIFAKE training zip, stratified by label and
  CIFAR-10 content class, the members' bytes copied untouched.
- ``manifest.json``: every file's size and sha256, every bundled distribution's version and
  wheel hash, the distributions left to the node, what was removed from Ray.

What the node holds comes from ``--node-has``: a ``pip list --format=freeze`` (or one name a
line) of the node. The default, ``gpu_node_packages.txt`` beside this file, is the package list
of the GPU image the check was prepared for. The tree is limited to 40 MB and the subset to
15 MB (decimal megabytes); a build over a limit is refused, and nothing is left in its place.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "gpu_data"
DEFAULT_NODE = HERE / "gpu_node_packages.txt"
DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "cifake-train.zip"
SITE = "site.tar.xz"
SUBSET = "cifake-subset.zip"
MANIFEST = "manifest.json"
MB = 10**6
SITE_LIMIT = 40 * MB  # issue #18: the bundle of what the node lacks
SUBSET_LIMIT = 15 * MB  # issue #18: the CIFAKE subset; both travel with the repo in < 60 MB
# What the check imports beyond the standard library and the node's torch: Ray Tune (stage 4),
# Optuna (the project's searcher), and the project's own runtime dependencies that its
# training, ingest and Tune adapter import (pyproject.toml's list, less plotting, SQL and
# scikit-learn, which no stage imports).
DISTRIBUTIONS = ("ray[tune]", "optuna", "pandas", "pyarrow", "pillow", "xxhash", "tqdm",
                 "pyyaml")
# Never bundled, whatever the node list says: the check must run on the node's own CUDA build.
NODE_OWN = re.compile(r"^(torch|torchvision|torchaudio|triton|numpy|nvidia-.*|cuda-.*)$")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64",
             "linux_x86_64")
# Parts of Ray a local Tune study never loads (checked by importing ray, ray.tune and ray.train
# and running a study from the stripped tree): Java, C++ API, RLlib, Serve, LLM serving,
# workflows, and the dashboard's web front-end (ray.init(include_dashboard=False)). ray.data
# stays: ray.train imports it.
RAY_DROP = ("ray/jars", "ray/cpp", "ray/rllib", "ray/serve", "ray/llm", "ray/workflow",
            "ray/dashboard/client/build", "ray/tests")
ELF = b"\x7fELF"


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_node_list(path: Path) -> set[str]:
    """Normalised names from a ``pip list --format=freeze`` or one-name-a-line file."""
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(normalise(re.split(r"[\s=<>!~@;\[]", line, maxsplit=1)[0]))
    return names


def pinned_requirements(names: Iterable[str] = DISTRIBUTIONS) -> list[str]:
    """Each distribution at the version installed here (the versions the project is tested
    with), or unpinned where it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in names:
        base = name.split("[", 1)[0]
        try:
            out.append(f"{name}=={version(base)}")
        except PackageNotFoundError:
            out.append(name)
    return out


def platform_args(python_version: str, platforms: Iterable[str] = PLATFORMS) -> list[str]:
    abi = "cp" + python_version.replace(".", "")
    args = ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
            "--abi", abi, "--abi", "abi3", "--abi", "none"]
    for platform in platforms:
        args += ["--platform", platform]
    return args


def resolve(requirements: list[str], pip: list[str], target: list[str]) -> list[dict[str, Any]]:
    """The full closure of ``requirements`` for the target (name, version, url, sha256), from
    pip's resolver without downloading anything (``pip install --dry-run --report``)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([*pip, "install", "--dry-run", "--ignore-installed", "--quiet",
                        "--report", str(report), "--target", str(Path(tmp) / "never"),
                        *target, *requirements], check=True)
        items = json.loads(report.read_text())["install"]
    out = []
    for item in items:
        info = item["download_info"]
        out.append({"name": item["metadata"]["name"], "version": item["metadata"]["version"],
                    "wheel": info["url"].rsplit("/", 1)[-1].split("#", 1)[0],
                    "sha256": info.get("archive_info", {}).get("hashes", {}).get("sha256")})
    return sorted(out, key=lambda d: normalise(d["name"]))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def strip_ray(root: Path) -> dict[str, Any]:
    """Remove ``RAY_DROP`` from an installed tree and strip the symbols of its ELF files (when
    ``strip`` exists); the bytes each step saved."""
    removed: dict[str, int] = {}
    for rel in RAY_DROP:
        path = root / rel
        if path.exists():
            removed[rel] = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path)
    for dist_info in root.glob("ray-*.dist-info"):
        (dist_info / "RECORD").unlink(missing_ok=True)  # no longer true; nothing reads it
    saved = 0
    strip = shutil.which("strip")
    if strip:
        for f in (root / "ray").rglob("*"):
            if f.is_file() and not f.is_symlink() and f.stat().st_size > 2**20:
                with open(f, "rb") as fh:
                    if fh.read(4) != ELF:
                        continue
                before = f.stat().st_size
                # Symbol tables only: the dynamic symbols loading and linking need stay.
                subprocess.run([strip, "--strip-unneeded", str(f)], check=True)
                saved += before - f.stat().st_size
    return {"removed_bytes": removed, "stripped_bytes": saved, "strip": bool(strip)}


def pack(root: Path, target: Path) -> None:
    """``root``'s contents as an xz tarball (file modes kept: Ray's binaries stay executable)."""
    with lzma.open(target, "wb", preset=9) as xz, tarfile.open(fileobj=xz, mode="w") as tar:
        for path in sorted(root.rglob("*")):
            if "__pycache__" not in path.parts:
                tar.add(path, arcname=str(path.relative_to(root)), recursive=False)


def build_site(out: Path, node_has: set[str], python_version: str, pip: list[str],
               limit: int = SITE_LIMIT) -> dict[str, Any]:
    """Write ``out/site.tar.xz``; its manifest entry. Raises ``SystemExit`` over ``limit``."""
    target = platform_args(python_version)
    closure = resolve(pinned_requirements(), pip, target)
    bundled = [d for d in closure if normalise(d["name"]) not in node_has
               and not NODE_OWN.match(normalise(d["name"]))]
    left = [d for d in closure if d not in bundled]
    with tempfile.TemporaryDirectory() as tmp:
        wheels, tree = Path(tmp) / "wheels", Path(tmp) / "site"
        subprocess.run([*pip, "download", "--quiet", "--no-deps", "-d", str(wheels), *target,
                        *(f"{d['name']}=={d['version']}" for d in bundled)], check=True)
        for d in bundled:
            wheel = wheels / d["wheel"]
            if d["sha256"] and sha256_of(wheel) != d["sha256"]:
                raise SystemExit(f"{wheel.name}: sha256 differs from the index's")
        subprocess.run([*pip, "install", "--quiet", "--no-deps", "--no-index", "--no-compile",
                        "--target", str(tree), *target, *map(str, sorted(wheels.glob("*.whl")))],
                       check=True)
        ray = strip_ray(tree) if (tree / "ray").exists() else {}
        unpacked = sum(f.stat().st_size for f in tree.rglob("*") if f.is_file())
        packed = Path(tmp) / SITE
        pack(tree, packed)
        size = packed.stat().st_size
        if size > limit:
            raise SystemExit(f"{SITE} would be {size / MB:.1f} MB, over its {limit / MB:.0f} MB "
                             f"limit; bundled: {', '.join(d['name'] for d in bundled)}. Name "
                             "what the node already holds with --node-has")
        out.mkdir(parents=True, exist_ok=True)
        shutil.move(packed, out / SITE)
    return {"file": SITE, "bytes": size, "sha256": sha256_of(out / SITE),
            "unpacked_bytes": unpacked, "python_version": python_version,
            "platforms": list(PLATFORMS), "requirements": pinned_requirements(),
            "bundled": bundled, "left_to_node": [f"{d['name']}=={d['version']}" for d in left],
            "ray": ray}


def _stratum(name: str) -> tuple[str, str] | None:
    """(label folder, CIFAR-10 class suffix) of a CIFAKE member, None for anything else:
    ``train/FAKE/1234 (3).jpg`` -> ("FAKE", "3"); no suffix is class 1 (airplane)."""
    parts = name.split("/")
    if len(parts) < 2 or parts[-2].upper() not in ("REAL", "FAKE") or not parts[-1]:
        return None
    if not parts[-1].lower().endswith((".jpg", ".jpeg")):
        return None
    match = re.search(r"\((\d+)\)\.[^.]+$", parts[-1])
    return parts[-2].upper(), match.group(1) if match else "1"


def _member_cost(info: zipfile.ZipInfo) -> int:
    # A stored member's data, local header (30 B) and central directory entry (46 B), each
    # with the name.
    return info.compress_size + 76 + 2 * len(info.filename.encode())


def stratified_subset(source: Path, target: Path, max_bytes: int = SUBSET_LIMIT,
                      seed: int = 0) -> dict[str, Any]:
    """Copy a seeded subset of ``source``'s images into ``target``, at most ``max_bytes``:
    taken in turn from each (label, content class) stratum, so every stratum gets the same
    count (up to one) until one runs out; each member's bytes, name, date and compression are
    the source's. Its manifest entry (counts per stratum)."""
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(source) as src:
        strata: dict[tuple[str, str], list[zipfile.ZipInfo]] = {}
        for info in src.infolist():
            key = None if info.is_dir() else _stratum(info.filename)
            if key is not None:
                strata.setdefault(key, []).append(info)
        if not strata:
            raise SystemExit(f"{source} holds no REAL/ or FAKE/ JPEG members")
        queues = {k: [v[i] for i in rng.permutation(len(v))] for k, v in sorted(strata.items())}
        chosen: list[zipfile.ZipInfo] = []
        total = 22  # the end-of-central-directory record
        full = False
        while not full and any(queues.values()):
            for queue in queues.values():
                if not queue:
                    continue
                if total + _member_cost(queue[0]) > max_bytes:
                    full = True
                    break
                info = queue.pop(0)
                chosen.append(info)
                total += _member_cost(info)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".partial")
        with zipfile.ZipFile(tmp, "w") as dst:
            for info in sorted(chosen, key=lambda i: i.filename):
                copy = zipfile.ZipInfo(info.filename, info.date_time)
                copy.compress_type, copy.external_attr = info.compress_type, info.external_attr
                dst.writestr(copy, src.read(info))
    if tmp.stat().st_size > max_bytes:
        tmp.unlink()
        raise SystemExit(f"the subset came out over {max_bytes / MB:.0f} MB (compressed "
                         "members?); lower --subset-mb")
    tmp.replace(target)
    counts: dict[str, int] = {}
    for info in chosen:
        label, cls = _stratum(info.filename)  # type: ignore[misc]
        counts[f"{label}/{cls}"] = counts.get(f"{label}/{cls}", 0) + 1
    return {"file": target.name, "bytes": target.stat().st_size, "sha256": sha256_of(target),
            "images": len(chosen), "per_stratum": dict(sorted(counts.items())), "seed": seed,
            "source": source.name, "source_bytes": source.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the CIFAKE training zip")
    p.add_argument("--node-has", type=Path, default=DEFAULT_NODE,
                   help="the node's `pip list --format=freeze`, or one name a line")
    p.add_argument("--python-version", default="3.12", help="the node's Python (major.minor)")
    p.add_argument("--pip", default=f"{sys.executable} -m pip", help="the pip command to run")
    p.add_argument("--site-mb", type=float, default=SITE_LIMIT / MB,
                   help="limit of site.tar.xz (a simulation of a bare node may raise it)")
    p.add_argument("--subset-mb", type=float, default=SUBSET_LIMIT / MB)
    p.add_argument("--seed", type=int, default=0)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--site-only", action="store_true")
    group.add_argument("--data-only", action="store_true")
    args = p.parse_args(argv)
    start = time.perf_counter()
    old = json.loads((args.out / MANIFEST).read_text()) if (args.out / MANIFEST).exists() else {}
    manifest: dict[str, Any] = {"format": 1, "built": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                    time.gmtime()),
                                "node_has": str(args.node_has)}
    if not args.data_only:
        node_has = read_node_list(args.node_has)
        manifest["site"] = build_site(args.out, node_has, args.python_version,
                                      args.pip.split(), int(args.site_mb * MB))
    elif "site" in old:
        manifest["site"] = old["site"]
    if not args.site_only:
        if not args.data.exists():
            raise SystemExit(f"no CIFAKE zip at {args.data}; pass --data")
        manifest["subset"] = stratified_subset(args.data, args.out / SUBSET,
                                               int(args.subset_mb * MB), args.seed)
    elif "subset" in old:
        manifest["subset"] = old["subset"]
    (args.out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    for key in ("site", "subset"):
        if key in manifest:
            print(f"{manifest[key]['file']}: {manifest[key]['bytes'] / MB:.2f} MB")
    if "site" in manifest:
        print("bundled: " + ", ".join(f"{d['name']} {d['version']}"
                                      for d in manifest["site"]["bundled"]))
    print(f"{args.out}: {total / MB:.2f} MB in all, built in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
