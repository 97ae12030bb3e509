"""A data source, a folder or a zip, listed, read and fingerprinted the same way.

Usage: ``source = Source(path); files = source.listing(); data = source.read(files.files[0])``

What is checked on the way, so that the bytes handed to the decoder are the bytes that were meant:
- a zip member's bytes against the CRC-32 its archive records (a flipped bit is a bad file);
- a truncated or corrupt archive is named as such, not as "not a zip";
- symbolic links in a folder are followed (class folders and files alike); a dangling link or a
  loop is a bad file, named like an unreadable image.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from trainables.dataset import DataError

HEAD_BYTES = 1 << 16  # enough for an image header after a large EXIF block
ZIP_LOCAL_HEADER = b"PK\x03\x04"
ZIP_END_RECORD = b"PK\x05\x06"


class UnreadableFileError(Exception):
    """One file of the source whose bytes cannot be had intact; the message says why."""


@dataclass
class Listing:
    """The source's files (relative posix paths), and what could not be listed as a file."""

    files: list[str]
    bad: list[tuple[str, str]] = field(default_factory=list)  # (path, why): broken links etc.
    links: list[str] = field(default_factory=list)  # symbolic links that were followed


class Source:
    """A folder or a zip, listed and read the same way.

    Members of a zip stored without compression (as the CIFAKE archive is) are sliced straight
    out of a memory map of the file: about 10x cheaper than ``ZipFile.read``, which seeks and
    re-parses the local header under a lock for every member; their CRC-32 is checked here
    (``ZipFile.read`` checks it for the others).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.is_zip = path.is_file()
        self._zip: zipfile.ZipFile | None = None
        self._infos: dict[str, zipfile.ZipInfo] = {}
        self._map: mmap.mmap | None = None
        self._listing: Listing | None = None
        if self.is_zip:
            _check_archive(path)

    @classmethod
    def of_files(cls, root: Path, files: list[str]) -> Source:
        """The folder ``root`` restricted to ``files`` (a manifest's paths, relative to it);
        a listed file that is missing or not a file is a bad file, named."""
        source = cls(root)
        present, bad = [], []
        for rel in files:
            target = root / rel
            if target.is_file():
                present.append(rel)
            elif target.is_symlink() and not target.exists():
                bad.append((rel, "a broken symbolic link (listed in the manifest)"))
            else:
                bad.append((rel, "listed in the manifest but missing" if not target.exists()
                            else "listed in the manifest but not a file"))
        source._listing = Listing(sorted(present), bad)
        return source

    def _open(self) -> zipfile.ZipFile:
        if self._zip is None:
            try:
                self._zip = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, zlib.error, ValueError, EOFError) as exc:
                raise DataError(f"{self.path} is a corrupt zip archive ({exc}); copy or "
                                "download it again, or unpack what is readable and pass the "
                                "folder") from None
            self._infos = {i.filename: i for i in self._zip.infolist()}
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._zip

    def central_directory(self) -> bytes | None:
        """The zip's central directory, raw: a cheap, complete identity of the archive.

        It holds every member's name, size and CRC-32 (a checksum of its bytes, checked against
        them at every decode). Hashing it costs one read of a few MB; parsing it into ZipInfo
        objects takes about a second for CIFAKE's 100,000 members, too slow for a cache hit.
        None for folders and for archives whose directory this reader does not locate (zip64).
        """
        if not self.is_zip:
            return None
        with open(self.path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65_557))  # end record: 22 bytes + a comment of up to 64 KiB
            tail = f.read()
            at = tail.rfind(ZIP_END_RECORD)
            if at < 0 or len(tail) - at < 22:
                return None
            cd_size, cd_offset = struct.unpack("<II", tail[at + 12 : at + 20])
            if cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
                return None
            f.seek(cd_offset)
            return f.read(cd_size)

    def listing(self) -> Listing:
        if self._listing is None:
            if self.is_zip:
                self._open()
                files = [i.filename for i in self._infos.values()
                         if not i.is_dir() and not i.filename.startswith("__MACOSX/")]
                self._listing = Listing(sorted(files))
            else:
                self._listing = _walk(self.path)
        return self._listing

    def content_digest(self) -> bytes:
        """A digest of the content: each file's name and bytes, or each zip member's name and CRC.

        A zip's central directory holds every member's size and CRC-32 (checked against its bytes
        at each decode). Folders are keyed on their bytes, not on sizes and modification times:
        an edit that keeps the size and restores the time is still seen. xxHash3 reads at memory
        speed, far below the cost of decoding the same bytes.
        """
        h = xxhash.xxh3_128()
        directory = self.central_directory()
        if directory is not None:
            h.update(directory)
            return h.digest()
        listing = self.listing()
        if self.is_zip:  # a directory this reader does not slice (zip64): the same facts, parsed
            for rel in listing.files:
                info = self._infos[rel]
                h.update(f"{rel}\0{info.file_size}:{info.CRC}\n".encode())
            return h.digest()
        root = str(self.path)
        for rel in listing.files:
            h.update(f"{rel}\0".encode())
            try:
                with open(os.path.join(root, rel), "rb") as f:
                    h.update(xxhash.xxh3_128_digest(f.read()))
            except OSError as exc:
                h.update(f"unreadable: {exc.strerror}".encode())
        for rel, why in listing.bad:
            h.update(f"{rel}\0bad: {why}\n".encode())
        return h.digest()

    def head(self, rel: str, n: int = HEAD_BYTES) -> bytes:
        """The first ``n`` bytes of a file, unchecked (b"" if unreadable): enough for a header."""
        try:
            if not self.is_zip:
                with open(self.path / rel, "rb") as f:
                    return f.read(n)
            zf = self._open()
            info = self._infos[rel]
            if _is_stored(info):
                start = self._stored_start(info)
                return self._map[start : start + min(n, info.compress_size)]  # type: ignore[index]
            with zf.open(info) as f:
                return f.read(n)
        except Exception:  # read() will name what is wrong with this file
            return b""

    def read(self, rel: str) -> bytes:
        """The bytes of one file; ``UnreadableFileError`` if they cannot be had intact."""
        if not self.is_zip:
            try:
                return (self.path / rel).read_bytes()
            except OSError as exc:
                raise UnreadableFileError(f"cannot be read: {exc.strerror or exc}") from None
        zf = self._open()
        info = self._infos[rel]
        if _is_stored(info):
            return self._read_stored(info)
        try:
            return zf.read(info)
        except Exception as exc:  # zlib.error, BadZipFile (bad CRC), unsupported method, ...
            raise UnreadableFileError(
                f"corrupt archive member ({type(exc).__name__}: {exc})") from None

    def _stored_start(self, info: zipfile.ZipInfo) -> int:
        """Where a stored member's bytes start in the memory map."""
        m = self._map
        h = info.header_offset  # local header: 30 bytes, then name and extra field
        if m is None or len(m) < h + 30 or m[h : h + 4] != ZIP_LOCAL_HEADER:
            raise UnreadableFileError("corrupt archive member (no local header where the "
                                      "archive's directory says it starts)")
        name_len, extra_len = struct.unpack("<HH", m[h + 26 : h + 30])
        return h + 30 + name_len + extra_len

    def _read_stored(self, info: zipfile.ZipInfo) -> bytes:
        start = self._stored_start(info)
        data = self._map[start : start + info.compress_size]  # type: ignore[index]
        crc = zlib.crc32(data)
        if len(data) != info.compress_size or crc != info.CRC:
            raise UnreadableFileError(
                f"corrupt archive member: CRC-32 {crc:08x} of its {len(data):,} bytes differs "
                f"from the {info.CRC:08x} the archive records; its bytes have changed")
        return data


def _is_stored(info: zipfile.ZipInfo) -> bool:
    """Stored without compression or encryption: its bytes can be sliced from the file."""
    return info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1


def _check_archive(path: Path) -> None:
    """A file given as the source must be a readable zip; say what it is otherwise."""
    if zipfile.is_zipfile(path):
        return
    with open(path, "rb") as f:
        head = f.read(4)
    size = path.stat().st_size
    if head == ZIP_LOCAL_HEADER:
        raise DataError(
            f"{path} starts like a zip archive but is truncated or corrupt: its central directory "
            f"(the index at the end of a zip) is missing from its {size:,} bytes. Copy or "
            "download it again (compare its size with the original), or unpack what is "
            "readable and pass the folder")
    what = "an empty file" if size == 0 else "a file but not a zip archive"
    raise DataError(f"{path} is {what}; pass a folder or a .zip")


def _walk(root: Path) -> Listing:
    """Every file under ``root``, following symbolic links to folders and files.

    A link whose target does not exist, a link that leads back to a folder it sits in (a loop)
    and anything that is neither a file nor a folder are listed as bad, with the reason.
    """
    listing = Listing([])
    top = os.stat(root)
    stack: list[tuple[str, str, tuple[tuple[int, int], ...]]] = [
        ("", str(root), ((top.st_dev, top.st_ino),))]
    while stack:
        rel_dir, full_dir, ancestors = stack.pop()
        try:
            entries = sorted(os.scandir(full_dir), key=lambda e: e.name)
        except OSError as exc:
            listing.bad.append((rel_dir or ".", f"folder cannot be listed: {exc.strerror}"))
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if not entry.is_symlink() and entry.is_file(follow_symlinks=False):
                listing.files.append(rel)  # the common case: no stat call (d_type says it)
                continue
            try:
                st = entry.stat(follow_symlinks=True)
            except OSError as exc:
                listing.bad.append((rel, _broken_link(entry, exc)))
                continue
            if entry.is_symlink():
                listing.links.append(rel)
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    listing.bad.append((rel, f"symbolic link loop: it points to "
                                             f"{os.readlink(entry.path)}, a folder that holds it"))
                    continue
                stack.append((rel, entry.path, (*ancestors, key)))
            elif stat.S_ISREG(st.st_mode):
                listing.files.append(rel)
            else:
                listing.bad.append((rel, "not a regular file (a device, socket or pipe)"))
    listing.files.sort()
    return listing


def _broken_link(entry: os.DirEntry[str], exc: OSError) -> str:
    if not entry.is_symlink():
        return f"cannot be read: {exc.strerror or exc}"
    target = os.readlink(entry.path)
    if exc.errno == errno.ELOOP:
        return f"symbolic link loop: it points to {target}, which leads back to itself"
    if exc.errno == errno.ENOENT:
        return f"dangling symbolic link: its target {target} does not exist"
    return f"symbolic link to {target} cannot be followed: {exc.strerror or exc}"
