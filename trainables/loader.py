"""Batches from uint8 tensors resident on the training device (airbench style).

Usage:
    images = resident_images(data.images, device)        # the whole uint8 set on the device
    prep = Preprocess(32, "unit", channels_last=True, augment=False, flip=True, translate=2)
    u = prep.draw(n_train, generator, device)           # an epoch's random numbers at once
    x = prep(images[idx].permute(0, 3, 1, 2), u=u[k * bs : (k + 1) * bs])

No DataLoader workers and no per-sample Python: shuffling, resizing, normalisation and
augmentation are whole-batch tensor operations on the device.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from trainables.degrade import Degrade
from trainables.model_base import IMAGENET_MEAN, IMAGENET_STD

CHUNK_BYTES = 64 * 2**20  # staging buffer of a host-to-GPU copy: one 64 MiB pinned block


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():
        # Read-only (object store) memory: we only ever read it, never write.
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return torch.from_numpy(np.ascontiguousarray(array))


def to_device_uint8(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, H, W, 3) uint8 numpy -> (N, 3, H, W) uint8 tensor on ``device``.

    A plain (pageable) copy: inference batches are small, and pinning each one would leave a
    pinned block per batch size in PyTorch's host allocator for the life of the process.
    """
    return _as_tensor(images).to(device).permute(0, 3, 1, 2)


def copy_to_device(array: np.ndarray, device: torch.device, chunk_bytes: int = CHUNK_BYTES,
                   pin: bool | None = None) -> torch.Tensor:
    """``array`` as a tensor on ``device``, copied through one staging buffer of at most
    ``chunk_bytes`` (whole rows; pinned when ``pin``, by default when ``device`` is CUDA).

    ``tensor.pin_memory()`` of a whole data set would allocate a pinned copy of it that
    PyTorch's caching host allocator rounds up to a power of two and keeps for the life of the
    process: per trial, in a reused worker, several GiB of locked host memory. One small staging
    buffer copies at pinned (DMA) speed and is the only pinned block left behind.
    """
    device = torch.device(device)
    src = _as_tensor(array)
    out = torch.empty(src.shape, dtype=src.dtype, device=device)
    if not src.numel():
        return out
    pin = device.type == "cuda" if pin is None else pin
    row_bytes = max(1, src[0].numel() * src.element_size())
    rows = max(1, min(len(src), chunk_bytes // row_bytes))
    staging = torch.empty((rows, *src.shape[1:]), dtype=src.dtype, pin_memory=pin)
    for start in range(0, len(src), rows):
        part = src[start : start + rows]
        staging[: len(part)].copy_(part)
        # Blocking, so the staging buffer is free to refill when copy_ returns.
        out[start : start + len(part)].copy_(staging[: len(part)])
    return out


def pinned_host_mib() -> dict[str, float] | None:
    """Pinned host memory held by PyTorch's caching host allocator (current and peak MiB, the
    blocks rounded up to powers of two as allocated), or None where it cannot say: no CUDA,
    CUDA not started in this process, or a torch without ``torch.cuda.host_memory_stats``."""
    stats_of = getattr(torch.cuda, "host_memory_stats", None)
    if stats_of is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    stats = stats_of()
    if "allocated_bytes.current" not in stats:
        return None
    return {"pinned_mib": stats["allocated_bytes.current"] / 2**20,
            "pinned_peak_mib": stats.get("allocated_bytes.peak", 0) / 2**20}


def resident_images(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """The whole (N, H, W, 3) uint8 data set as a tensor on ``device``, indexed per batch.

    On the CPU this is a zero-copy view of the array, which under Ray is the object store's
    shared-memory copy: concurrent trials on a node share one data set instead of holding one
    each. On a GPU the whole set is copied to the device once per trial (uint8, 3 KB per 32x32
    image) so batches never cross the PCIe bus; the copy goes through one 64 MiB pinned
    staging buffer (``copy_to_device``), not a pinned copy of the whole set.
    """
    if device.type == "cpu":
        with warnings.catch_warnings():
            # Read-only (object store) memory: we only ever index it, never write.
            warnings.filterwarnings("ignore", message=".*not writable.*")
            return torch.from_numpy(images)
    return copy_to_device(images, device)


class Preprocess:
    """uint8 NCHW batch -> float batch at the model's resolution and normalisation.

    Its random augmentations take uniform numbers per image, ``uniforms`` of them: either drawn
    for a whole epoch at once (``draw``, one host-to-device copy per epoch; the training loop
    does this) and passed in per batch, or drawn per call from ``generator``.
    """

    def __init__(self, size: int, normalize: str, channels_last: bool, augment: bool,
                 flip: bool = False, translate: int = 0, degrade: Degrade | None = None
                 ) -> None:
        self.size = size
        # Blur, JPEG and rescaling (trainables.degrade), before the geometric augmentations.
        self.degrade = degrade if degrade is not None and degrade.active else None
        self.channels_last = channels_last
        self.augment = augment
        self.flip = flip
        self.translate = translate
        if normalize == "imagenet":
            self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        elif normalize == "unit":
            self.mean, self.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        elif isinstance(normalize, tuple) and len(normalize) == 2:  # (mean, std), e.g. timm's
            self.mean, self.std = tuple(normalize[0]), tuple(normalize[1])
        else:
            raise ValueError(f"unknown normalisation {normalize!r}; use 'unit' or 'imagenet'")
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def uniforms(self) -> int:
        """Uniform numbers each image's augmentation takes (translate 2, flip 1, augment 4,
        then the degradations'; a config without degradations draws as it always did)."""
        return (TRANSLATE_U if self.translate else 0) + (FLIP_U if self.flip else 0) + (
            AUGMENT_U if self.augment else 0) + (self.degrade.uniforms if self.degrade else 0)

    def draw(self, n: int, generator: torch.Generator | None, device: torch.device
             ) -> torch.Tensor:
        """(n, uniforms) uniform numbers for n images, drawn on ``generator`` in one call."""
        return _rand(generator, device, n, self.uniforms)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None,
                 u: torch.Tensor | None = None) -> torch.Tensor:
        """``u``: this batch's rows of ``draw``; drawn here from ``generator`` if None."""
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        x = x.contiguous(memory_format=fmt).float().div_(255.0)
        if self.uniforms and u is None:
            u = self.draw(x.shape[0], generator, x.device)
        col = self.uniforms - (self.degrade.uniforms if self.degrade else 0)
        if self.degrade is not None:
            x = self.degrade(x, u[:, col:])
        col = 0
        if self.translate:
            x = random_translate(x, self.translate, u=u[:, col : col + TRANSLATE_U])
            col += TRANSLATE_U
        if self.flip:
            x = random_flip(x, u=u[:, col])
            col += FLIP_U
        if self.augment:
            x = augment(x, u=u[:, col : col + AUGMENT_U])
        return self.from_unit(x)

    def from_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Float [0, 1] NCHW batch -> model input; differentiable (attacks, Grad-CAM use it)."""
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                              align_corners=False, antialias=x.shape[-1] > self.size)
        if self.mean != (0.0, 0.0, 0.0) or self.std != (1.0, 1.0, 1.0):
            mean, std = self._normalisation(x.device)
            x = (x - mean) / std
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)

    def _normalisation(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std as (1, 3, 1, 1) tensors on ``device``, built once per device: building
        them per batch is two host-to-device copies every step."""
        if device not in self._constants:
            self._constants[device] = (
                torch.tensor(self.mean, device=device).view(1, 3, 1, 1),
                torch.tensor(self.std, device=device).view(1, 3, 1, 1))
        return self._constants[device]


TRANSLATE_U, FLIP_U, AUGMENT_U = 2, 1, 4  # uniforms per image: (dy, dx); flip; augment's four


def _rand(generator: torch.Generator | None, device: torch.device, *shape: int) -> torch.Tensor:
    where = generator.device if generator is not None else device
    return torch.rand(*shape, generator=generator, device=where).to(device)


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None,
                u: torch.Tensor | None = None) -> torch.Tensor:
    """Mirror a random half of the (N, C, H, W) batch left-right (``u``: (N,) uniforms)."""
    if u is None:
        u = _rand(generator, x.device, x.shape[0])
    return torch.where((u < 0.5).view(-1, 1, 1, 1), x.flip(-1), x)


def random_translate(x: torch.Tensor, pixels: int, generator: torch.Generator | None = None,
                     u: torch.Tensor | None = None) -> torch.Tensor:
    """Shift each image of the (N, C, H, W) batch by up to ``pixels`` in x and y.

    Whole-pixel shifts with reflect padding (airbench's random crop): every output pixel is an
    input pixel, so no interpolation smooths the high frequencies a detector looks at. Works on
    float batches. ``u``: (N, 2) uniforms for (dy, dx).
    """
    n, _, h, w = x.shape
    dev = x.device
    if u is None:
        u = _rand(generator, dev, n, TRANSLATE_U)
    padded = F.pad(x, (pixels,) * 4, mode="reflect")
    span = 2 * pixels + 1
    dy = (u[:, 0] * span).long()
    dx = (u[:, 1] * span).long()
    rows = (torch.arange(h, device=dev).view(1, h) + dy.view(n, 1)).view(n, 1, h, 1)
    cols = (torch.arange(w, device=dev).view(1, w) + dx.view(n, 1)).view(n, 1, 1, w)
    batch = torch.arange(n, device=dev).view(n, 1, 1, 1)
    chans = torch.arange(x.shape[1], device=dev).view(1, -1, 1, 1)
    return padded[batch, chans, rows, cols]


def augment(x: torch.Tensor, generator: torch.Generator | None = None,
            u: torch.Tensor | None = None) -> torch.Tensor:
    """Random flips (left-right, up-down), brightness +-0.1 and contrast 0.9-1.1 per image.

    Ranges from Prudhvi et al. (ImageDataGenerator settings). Applied to [0, 1] images.
    ``u``: (N, 4) uniforms for (flip left-right, flip up-down, brightness, contrast).
    """
    n = x.shape[0]
    if u is None:
        u = _rand(generator, x.device, n, AUGMENT_U)
    flip_lr = (u[:, 0] < 0.5).view(n, 1, 1, 1)
    flip_ud = (u[:, 1] < 0.5).view(n, 1, 1, 1)
    x = torch.where(flip_lr, x.flip(-1), x)
    x = torch.where(flip_ud, x.flip(-2), x)
    brightness = (u[:, 2].view(n, 1, 1, 1) - 0.5) * 0.2
    contrast = 0.9 + u[:, 3].view(n, 1, 1, 1) * 0.2
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + brightness).clamp_(0.0, 1.0)


def batches(
    n: int, batch_size: int, shuffle: bool, generator: torch.Generator | None, device: torch.device
) -> Iterator[torch.Tensor]:
    """Index batches over ``n`` items.

    Shuffled (training) batches drop a last partial batch of one image, which batch norm cannot
    normalise; evaluation keeps every image.
    """
    if shuffle:
        order = torch.randperm(n, generator=generator, device=generator.device
                               if generator is not None else "cpu").to(device)
    else:
        order = torch.arange(n, device=device)
    for k in range(batch_count(n, batch_size, shuffle)):
        yield order[k * batch_size : (k + 1) * batch_size]


def batch_count(n: int, batch_size: int, shuffle: bool) -> int:
    """How many batches ``batches`` yields (the steps of a training epoch when shuffled)."""
    count = -(-n // batch_size)
    return count - 1 if shuffle and n > 1 and n % batch_size == 1 else count
