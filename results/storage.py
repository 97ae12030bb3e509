"""Where study directories live: local paths and URIs, the study file, atomic writes.

Usage:
    fs, base = filesystem("s3://bucket/studies/grid1")      # (pyarrow filesystem, path in it)
    join("studies/grid1", "trials.parquet")                 # a URI stays a URI
    info = read_study_file("studies/grid1")                 # study.json, or None
    write_study_file("studies/grid1", info)

Every module that touches a study directory goes through this one: it is the only place that
knows how a URI is told from a local path, how ``study.json`` is read and written, and what a
trial's checkpoint file is called.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

STUDY_FILE = "study.json"  # written by study.run when a study starts
CHECKPOINT_FILE = "checkpoint.pt"  # inside each of a trial's checkpoint folders


class StudyFileError(ValueError):
    """A ``study.json`` that exists but cannot be read as one."""


def is_uri(path: str | os.PathLike[str]) -> bool:
    """True for ``s3://...``, ``gs://...`` and other URIs, False for local paths."""
    return "://" in str(path)


def normalise(path: str | os.PathLike[str]) -> str:
    """A URI as it is (without a trailing slash); a local path absolute, ``~`` expanded."""
    path = str(path)
    if is_uri(path):
        return path.rstrip("/")
    return str(Path(path).expanduser().resolve())


def filesystem(path: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path in it) of a local path or a URI (s3://, gs://, ...)."""
    path = str(path)
    if is_uri(path):
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), normalise(path)


def join(base: str | os.PathLike[str], *names: str) -> str:
    """``<base>/<name>/...``, keeping a URI a URI and making a local path absolute."""
    out = normalise(base)
    for name in names:
        out = out + "/" + name.strip("/") if is_uri(out) else str(Path(out) / name)
    return out


def is_file(path: str, fs: pafs.FileSystem | None = None) -> bool:
    """Whether ``path`` (local, a URI, or a path on ``fs``) is a file."""
    fs, local = (fs, path) if fs else filesystem(path)
    return fs.get_file_info(local).type == pafs.FileType.File


def is_dir(path: str, fs: pafs.FileSystem | None = None) -> bool:
    fs, local = (fs, path) if fs else filesystem(path)
    return fs.get_file_info(local).type == pafs.FileType.Directory


def subfolders(path: str) -> list[str]:
    """The names of the folders directly inside ``path``, sorted."""
    fs, base = filesystem(path)
    return sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(base))
                  if i.type == pafs.FileType.Directory)


def read_bytes(path: str, fs: pafs.FileSystem | None = None) -> bytes:
    """The whole file at ``path`` (local, a URI, or a path on ``fs``)."""
    fs, local = (fs, path) if fs else filesystem(path)
    with fs.open_input_file(local) as f:
        return f.read()


def replace_atomically(path: str | os.PathLike[str], write: Callable[[str], Any]) -> None:
    """``write(tmp)`` to a temporary file beside local ``path``, then ``os.replace`` it there.

    A reader (or a crash) sees the old file or the new one, never half of one.
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".tmp", dir=folder or ".")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path: str, data: bytes) -> None:
    """Write a file atomically: locally through ``replace_atomically``; on object stores a
    PUT is atomic already."""
    fs, local = filesystem(path)
    if isinstance(fs, pafs.LocalFileSystem):
        os.makedirs(os.path.dirname(local), exist_ok=True)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                f.write(data)

        replace_atomically(local, write)
    else:
        fs.create_dir(local.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(local) as f:
            f.write(data)


def read_study_file(study_dir: str) -> dict[str, Any] | None:
    """``study.json`` of a study directory (local or URI), or None when there is none.

    StudyFileError when the file is there but is not a JSON object.
    """
    target = join(study_dir, STUDY_FILE)
    if not is_file(target):
        return None
    try:
        info = json.loads(read_bytes(target).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StudyFileError(f"{target} is not readable JSON ({exc}); restore it from a copy "
                             "of the study, or start a new study under another --name"
                             ) from None
    if not isinstance(info, dict):
        raise StudyFileError(f"{target} does not hold a JSON object")
    return info


def write_study_file(study_dir: str, info: dict[str, Any]) -> str:
    """Write ``study.json`` (atomically); returns its path."""
    target = join(study_dir, STUDY_FILE)
    write_bytes(target, json.dumps(info, indent=1).encode())
    return target


class AlreadyClaimed(FileExistsError):
    """Another study already holds this study directory."""


def claim_study_file(study_dir: str, info: dict[str, Any]) -> str:
    """Write ``study.json`` only if there is none: the atomic claim of a study directory.

    Locally the file is written beside its target and hard-linked into place, which fails if
    the target exists, so of two studies started at once under one name exactly one wins, and
    no reader sees a half-written file. Object stores offer no create-if-absent through
    pyarrow: there the claim checks first and then writes, so two starts within the same
    second can both pass (use distinct --name values for concurrent submissions there).
    AlreadyClaimed when the directory is taken.
    """
    target = join(study_dir, STUDY_FILE)
    data = json.dumps(info, indent=1).encode()
    fs, local = filesystem(target)
    if not isinstance(fs, pafs.LocalFileSystem):
        if is_file(target):
            raise AlreadyClaimed(target)
        write_bytes(target, data)
        return target
    os.makedirs(os.path.dirname(local), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{STUDY_FILE}-", suffix=".tmp",
                               dir=os.path.dirname(local))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            os.link(tmp, local)
        except FileExistsError:
            raise AlreadyClaimed(target) from None
    finally:
        os.unlink(tmp)
    return target


def relative_to(fs_path: str, study_dir: str) -> str | None:
    """``fs_path`` (a path as the study directory's filesystem names it, such as a Tune
    checkpoint's ``path``) relative to the study directory, or None when it is not inside."""
    _, base = filesystem(study_dir)
    base, inner = base.rstrip("/"), fs_path.rstrip("/")
    if not inner.startswith(base + "/"):
        return None
    return inner[len(base) + 1:]
