"""A study's evaluation sets: ``python -m study.run ... --eval-data NAME=PATH`` (repeatable).

Usage:
    specs = parse_eval_data(["external=../shared/data/external-dev.zip"])
    sets = load_eval_sets(specs, image_size=32, skip_bad=False, train=data)

Every trial scores these sets whenever it scores the common test set (``trainables.eval_sets``);
they enter Ray's object store once per study, beside the training data. Each is ingested at the
training data's image size (centre crop and resize), as ``study.evaluate`` does, and is checked
against the training data: images that are byte-identical to training images are counted, since
they would flatter the set's figures.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from search_spaces import Space
from study.cli import StudyError, resolve_data
from trainables.dataset import ImageSet, describe
from trainables.eval_sets import check_set_name, parse_eval_metric


def parse_eval_data(values: list[str]) -> dict[str, str]:
    """``["NAME=PATH", ...]`` -> {name: path}; each name once, each usable as a column."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not path:
            raise StudyError(f"--eval-data {value!r} must look like NAME=PATH (e.g. "
                             "external=../shared/data/external-dev.zip)")
        name = check_set_name(name.strip())
        if name in out:
            raise StudyError(f"--eval-data names {name!r} twice; give each set its own name")
        out[name] = path.strip()
    return out


def check_metric_set(space: Space, specs: dict[str, str]) -> None:
    """A space ranking on ``eval:<set>/...`` needs that set among the study's evaluation sets."""
    parsed = parse_eval_metric(space.metric)
    if parsed and parsed[0] not in specs:
        have = f" (given: {', '.join(specs)})" if specs else ""
        raise StudyError(
            f"space {space.name!r} ranks trials on {space.metric}, the set {parsed[0]!r}, which "
            f"no --eval-data names{have}: add --eval-data {parsed[0]}=PATH (a folder or .zip "
            "of images from other generators), or choose another --metric")


def load_eval_sets(specs: dict[str, str], image_size: int, skip_bad: bool,
                   train: ImageSet) -> dict[str, ImageSet]:
    """The sets of ``specs`` ingested at ``image_size``, each described and checked."""
    sets: dict[str, ImageSet] = {}
    train_hashes = train.manifest["content_hash"].astype(str).unique()
    for name, path in specs.items():
        data = resolve_data(path, image_size, skip_bad)
        shared = int(np.isin(data.manifest["content_hash"].astype(str).to_numpy(),
                             train_hashes).sum())
        if shared == len(data):
            raise StudyError(f"--eval-data {name}={path}: every image of it is one of the "
                             "training data's (it is the training data, or part of it); an "
                             "evaluation set must come from elsewhere")
        if len(set(data.labels.tolist())) < 2:
            print(f"notice: evaluation set {name!r} holds one class only: its AUC and AP are "
                  "undefined (NaN), its accuracy is the recall of that class")
        if shared:
            print(f"warning: {shared} image(s) of evaluation set {name!r} are byte-identical "
                  "to images of the training data; its figures are flattered by them")
        print(f"evaluation set {name!r}: {describe(data)}")
        sets[name] = data
    return sets


def record_entry(sets: dict[str, ImageSet]) -> dict[str, Any]:
    """What ``study.json`` records of the sets: a resume must name the same ones."""
    return {name: {"source": s.source, "fingerprint": s.fingerprint} for name, s in sets.items()}
