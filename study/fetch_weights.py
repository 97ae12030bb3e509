"""Pre-fetch ImageNet weights into the torch hub cache: ``python -m study.fetch_weights [MODEL]``.

Run it once on a machine with network access (or every cluster node's image build); trials then
load weights from the cache (``$TORCH_HOME/hub/checkpoints``) and never download during a study.
"""

from __future__ import annotations

import argparse
import os
import sys

from trainables.models import MODELS, create_model


def main(argv: list[str] | None = None) -> int:
    pretrained = [n for n in MODELS.names() if MODELS.get(n).pretrained]
    p = argparse.ArgumentParser(prog="python -m study.fetch_weights", description=__doc__)
    p.add_argument("models", nargs="*", default=pretrained,
                   help=f"models to fetch (default: all with weights: {', '.join(pretrained)})")
    args = p.parse_args(argv)
    unknown = [m for m in args.models if m not in pretrained]
    if unknown:
        print(f"error: no ImageNet weights for {unknown}; models with weights: "
              f"{', '.join(pretrained)}", file=sys.stderr)
        return 2
    os.environ["CIFAKE_STUDY_OFFLINE"] = "0"  # downloading is this command's job
    for name in args.models:
        create_model(name, pretrained=True)
        print(f"cached ImageNet weights for {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
