"""Layout detection: which file is which class and split, from the paths alone.

Usage: ``layout, entries, ignored = detect_layout(["train/REAL/0.jpg", "train/FAKE/0.png"])``

Layouts, read from a folder or a zip without unpacking:
- CIFAKE (Kaggle): ``train/{REAL,FAKE}/`` and optionally ``test/{REAL,FAKE}/``;
- tiny-GenImage: ``<generator>/{train,val}/{ai,nature}/`` (the generator is kept as a column);
- generic: ``<root>/<class>/`` with two class folders.
A single wrapping folder (``archive/train/...``) is looked through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainables.dataset import CLASS_NAMES, DataError
from trainables.images import SYSTEM_FILES

REAL_NAMES = ("real", "nature", "authentic", "0_real")
FAKE_NAMES = ("fake", "ai", "synthetic", "generated", "1_fake")


@dataclass
class Entry:
    """One image file of the source: its path, label, split and generator ("" if none)."""

    path: str
    label: int
    split: str
    generator: str


def _class_label(name: str, where: str) -> int:
    low = name.lower()
    if low in REAL_NAMES:
        return 0
    if low in FAKE_NAMES:
        return 1
    raise DataError(
        f"class folder {where!r} is neither a real ({', '.join(REAL_NAMES)}) nor a generated "
        f"({', '.join(FAKE_NAMES)}) class; rename it (e.g. to REAL or FAKE)"
    )


def detect_layout(files: list[str]) -> tuple[str, list[Entry], list[str]]:
    """Return (layout, image entries, ignored system files)."""
    # str.split, not PurePosixPath: this runs once per file of a 100,000-file archive.
    ignored = [f for f in files if f.rsplit("/", 1)[-1].lower() in SYSTEM_FILES]
    files = [f for f in files if f.rsplit("/", 1)[-1].lower() not in SYSTEM_FILES]
    if not files:
        raise DataError("the source holds no files; expected train/REAL and train/FAKE folders")
    parts = [tuple(f.split("/")) for f in files]
    # Look through wrapping folders that every file shares (archive/train/... -> train/...).
    prefix = 0
    while all(len(p) > prefix + 2 for p in parts) and len({p[prefix] for p in parts}) == 1:
        if parts[0][prefix].lower() in ("train", "test"):
            break
        prefix += 1
    rel = [p[prefix:] for p in parts]
    base = "/".join(parts[0][:prefix])

    def where(*names: str) -> str:
        return "/".join(n for n in (base, *names) if n)

    firsts = {p[0].lower() for p in rel}
    if "train" in firsts and firsts <= {"train", "test"}:
        return "cifake", _cifake_entries(files, rel, where), ignored
    if all(len(p) == 4 and p[1].lower() in ("train", "val") for p in rel):
        return "genimage", _genimage_entries(files, rel, where), ignored
    if all(len(p) == 2 for p in rel):
        classes = sorted({p[0] for p in rel})
        if len(classes) != 2:
            raise DataError(
                f"found class folder(s) {classes} under {where() or 'the root'}; a generic source "
                "needs exactly two class folders, one real and one generated (e.g. REAL and FAKE)"
            )
        labels = {c: _class_label(c, where(c)) for c in classes}
        if set(labels.values()) != {0, 1}:
            raise DataError(
                f"class folders {classes} do not name one real and one generated class")
        entries = [Entry(f, labels[p[0]], "train", "") for f, p in zip(files, rel, strict=True)]
        return "generic", entries, ignored
    tops = sorted({p[0] for p in rel})[:10]
    raise DataError(
        f"unrecognised layout: top-level entries {tops}. Expected train/{{REAL,FAKE}}/ (CIFAKE), "
        "<generator>/{train,val}/{ai,nature}/ (tiny-GenImage) or <class>/ folders"
    )


def _cifake_entries(files: list[str], rel: list[tuple[str, ...]], where: Any) -> list[Entry]:
    entries, seen = [], set()
    for f, p in zip(files, rel, strict=True):
        if len(p) != 3:
            raise DataError(
                f"{f!r} is not inside a class folder; CIFAKE files live in "
                "train/REAL, train/FAKE, test/REAL or test/FAKE"
            )
        split, cls = p[0].lower(), p[1]
        label = _class_label(cls, where(p[0], cls))
        seen.add((split, label))
        entries.append(Entry(f, label, split, ""))
    for split in sorted({s for s, _ in seen}):
        for label, name in enumerate(CLASS_NAMES):
            if (split, label) not in seen:
                raise DataError(
                    f"class folder {where(split, name)!r} is missing or empty; CIFAKE needs both "
                    f"{where(split, 'REAL')} and {where(split, 'FAKE')} with images"
                )
    return entries


def _genimage_entries(files: list[str], rel: list[tuple[str, ...]], where: Any) -> list[Entry]:
    entries, seen = [], set()
    for f, p in zip(files, rel, strict=True):
        gen, split, cls = p[0], p[1].lower(), p[2]
        label = _class_label(cls, where(*p[:3]))
        seen.add((gen, split, label))
        entries.append(Entry(f, label, "test" if split == "val" else "train", gen))
    for gen, split in sorted({(g, s) for g, s, _ in seen}):
        for label, name in enumerate(("nature", "ai")):
            if (gen, split, label) not in seen:
                raise DataError(
                    f"class folder {where(gen, split, name)!r} is missing or empty; "
                    f"tiny-GenImage needs {gen}/{split}/ai and {gen}/{split}/nature"
                )
    return entries
