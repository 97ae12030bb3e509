"""The embedded default data set, built on first use from material installed with the dependencies.

Usage: ``path = build_sample()`` -> a folder in the CIFAKE layout (train|test / REAL|FAKE).

REAL images are random 32x32 crops (random position, scale and mirror) of the real photographs that
ship inside scikit-learn (china.jpg, flower.jpg) and matplotlib (grace_hopper.jpg). FAKE images are
other such crops re-decoded through a small convolutional autoencoder trained here on real crops:
the same mechanism by which a latent-diffusion model's decoder renders its images, so the fakes
carry a decoder's spectral traces rather than a hand-made artefact. Both are saved as JPEG, as in
CIFAKE. It exercises the system end to end; accuracies on it say nothing about CIFAKE.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainables.ingest import cache_root

SAMPLE_VERSION = 1
SIZE = 32  # pixels, as CIFAKE


def source_photographs() -> list[np.ndarray]:
    """The real photographs shipped inside installed packages, as uint8 (H, W, 3) arrays."""
    import matplotlib
    import sklearn.datasets
    from PIL import Image

    paths = [
        Path(sklearn.datasets.__file__).parent / "images" / "china.jpg",
        Path(sklearn.datasets.__file__).parent / "images" / "flower.jpg",
        Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
    ]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"sample photographs missing from the installed packages: {missing}; reinstall "
            "scikit-learn and matplotlib, or pass --data with a real data set"
        )
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def random_crops(photos: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` crops of random photo, side 32-192 px, position and mirror, resized to 32x32."""
    from PIL import Image

    out = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    for i in range(n):
        photo = photos[rng.integers(len(photos))]
        h, w = photo.shape[:2]
        side = int(rng.integers(SIZE, min(192, h, w) + 1))
        top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        crop = Image.fromarray(photo[top : top + side, left : left + side])
        crop = crop.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
        arr = np.asarray(crop)
        out[i] = arr[:, ::-1] if rng.random() < 0.5 else arr
    return out


class Autoencoder(nn.Module):
    """32x32x3 -> 8x8x8 latent (6x compression, as a latent-diffusion VAE's 8x8x4 per 64 px)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 8, 4, stride=2, padding=1),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(8, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 3, 3, padding=1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def train_autoencoder(real: np.ndarray, steps: int, seed: int) -> Autoencoder:
    torch.manual_seed(seed)
    model = Autoencoder()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x_all = torch.from_numpy(real).permute(0, 3, 1, 2).float() / 255
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = x_all[torch.randint(len(x_all), (64,), generator=gen)]
        loss = nn.functional.mse_loss(model(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def decode_through(model: Autoencoder, images: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    out = torch.cat([model(x[i : i + 512]) for i in range(0, len(x), 512)])
    return (out.permute(0, 2, 3, 1).numpy() * 255).round().clip(0, 255).astype(np.uint8)


def build_sample(
    seed: int = 0,
    n_train: int = 2500,
    n_test: int = 500,
    ae_steps: int = 400,
    root: str | os.PathLike[str] | None = None,
) -> Path:
    """Build (once; later calls return the cached folder) and return the sample data folder.

    ``n_train`` and ``n_test`` are images per class.
    """
    from PIL import Image

    root = Path(root) if root else cache_root() / "sample"
    target = root / f"v{SAMPLE_VERSION}-seed{seed}-{n_train}-{n_test}"
    if (target / "train").exists():
        return target
    rng = np.random.default_rng(seed)
    photos = source_photographs()
    with torch.random.fork_rng():
        autoencoder = train_autoencoder(random_crops(photos, 4000, rng), ae_steps, seed)
        real = random_crops(photos, n_train + n_test, rng)
        fake = decode_through(autoencoder, random_crops(photos, n_train + n_test, rng))
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        for label, images in (("REAL", real), ("FAKE", fake)):
            for split, part in (("train", images[:n_train]), ("test", images[n_train:])):
                folder = tmp / split / label
                folder.mkdir(parents=True)
                for i, img in enumerate(part):
                    Image.fromarray(img).save(folder / f"{i}.jpg", quality=95)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "train").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
