"""Training throughput: ``python benchmarks/train_throughput.py [--models a,b] [--device cuda]``.

Images per second of one training epoch, per model at its native resolution, for the project's
loop (uint8 data resident on the device, whole-batch resize/normalise/augment there) against the
usual pipeline: a ``Dataset`` over decoded PIL images with per-sample torchvision transforms and a
``DataLoader``. Same model, optimizer, loss, batch size and images; median over repeated epochs.
On a GPU (``--device cuda``) the project's loop also uses bf16 autocast and channels_last.

How close to the machine's own limit each figure is: the script first measures this machine's
matrix-product rate (fp32 on the CPU, bf16 on a GPU: the arithmetic the loop runs in), counts
each model's training FLOPs per image (forward and backward, ``torch.utils.flop_counter``) and
prints the model FLOP utilisation of the project's loop, FLOPs per image x images/s over it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table
from roofline import matmul_tflops, training_flops_per_image

from trainables.config import TrainConfig
from trainables.dataset import subset
from trainables.ingest import load_dataset
from trainables.model_base import IMAGENET_MEAN, IMAGENET_STD
from trainables.models import create_model, model_spec
from trainables.sample import build_sample
from trainables.train import _Run

SMALL = "small_cnn,purba_cnn1,purba_cnn2,purba_cnn3,iacob_cnn"


class PILDataset(Dataset):
    """The usual pipeline: decoded PIL images, transformed one sample at a time."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, size: int, normalize: str,
                 augment: bool) -> None:
        self.images = [Image.fromarray(a) for a in images]
        self.labels = labels
        steps: list = []
        if size != images.shape[1]:
            steps.append(transforms.Resize(size))
        if augment:
            steps += [transforms.RandomHorizontalFlip(), transforms.RandomVerticalFlip(),
                      transforms.ColorJitter(brightness=0.1, contrast=0.1)]
        steps.append(transforms.ToTensor())
        if normalize == "imagenet":
            steps.append(transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD))
        self.transform = transforms.Compose(steps)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), int(self.labels[i])


def baseline_epoch(name: str, images: np.ndarray, labels: np.ndarray, batch: int,
                   augment: bool, workers: int, device: torch.device) -> float:
    spec = model_spec(name)
    torch.manual_seed(0)
    model = create_model(name).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(PILDataset(images, labels, spec.resolution, spec.normalize, augment),
                        batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                        persistent_workers=False)
    start = time.perf_counter()
    n = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        out = model(x)
        loss = (F.cross_entropy(out, y) if out.shape[-1] == 2 else
                F.binary_cross_entropy_with_logits(out.view(-1), y.float()))
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default=SMALL)
    p.add_argument("--images", type=int, default=4000, help="training images per epoch")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="epochs timed per pipeline")
    p.add_argument("--augment", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--loader-workers", type=int, default=0,
                   help="DataLoader workers of the baseline (0: in the training process)")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(torch.get_num_threads())
    data = load_dataset(build_sample(), progress=False)
    # The ceiling: a matrix product large enough to reach the BLAS's steady rate (2048^3 is
    # 17 GFLOP, about a second on 2 cores), in the dtype the loop computes in.
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    ceiling = matmul_tflops(device, dtype, 8192 if device.type == "cuda" else 2048, repeats=5)
    rows = []
    for name in args.models.split(","):
        spec = model_spec(name)
        config = TrainConfig(model=name, batch_size=args.batch_size, augment=args.augment,
                             split_ratio=0.9, epochs=args.repeats + 1)
        pool = np.flatnonzero(data.manifest["split"].to_numpy() == "train")
        part = subset(data, np.concatenate([pool[: args.images], np.flatnonzero(
            data.manifest["split"].to_numpy() == "test")]))
        ours = {}
        for layout in (False, True):
            run = _Run(TrainConfig(**{**config.asdict(), "channels_last": layout}), part, device)
            n_train = len(run.y["train"])
            run.train_epoch()  # warm-up (allocator, kernels)
            ours[layout] = [n_train / run.train_epoch()[1] for _ in range(args.repeats)]
        train_idx = run.splits.train
        imgs, labels = part.images[train_idx], part.labels[train_idx]
        base = [baseline_epoch(name, imgs, labels, args.batch_size, args.augment,
                               args.loader_workers, device) for _ in range(args.repeats)]
        b = statistics.median(base)
        plain, o = statistics.median(ours[False]), statistics.median(ours[True])
        flops = step_flops(name, min(args.batch_size, 8))
        rows.append([name, spec.resolution, n_train, b, plain, o, o / b, flops / 1e9,
                     f"{flops * o / (ceiling * 1e12):.1%}"])
    print_table(
        f"Training throughput, images/s (median of {args.repeats} epochs, batch "
        f"{args.batch_size}, augment={args.augment}, device={device}, "
        f"{torch.get_num_threads()} threads, baseline DataLoader workers={args.loader_workers}; "
        f"measured {str(dtype).split('.')[-1]} matrix-product ceiling {ceiling * 1e3:,.0f} "
        "GFLOP/s)",
        ["model", "px", "images", "DataLoader + per-sample transforms (baseline)",
         "device-resident, NCHW", "device-resident, channels_last (project)", "ratio",
         "training GFLOP/image", "MFU (project)"], rows)


def step_flops(name: str, batch: int) -> float:
    """Training FLOPs per image of ``name`` at its native resolution (counted on the CPU:
    the count depends on shapes only)."""
    spec = model_spec(name)
    torch.manual_seed(0)
    model = create_model(name).train()
    x = torch.rand(batch, 3, spec.resolution, spec.resolution)
    return training_flops_per_image(model, x, torch.arange(batch) % 2)


if __name__ == "__main__":
    main()
