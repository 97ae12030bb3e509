"""Training-time degradations that make a detector generalise: blur, JPEG, rescaling.

Usage:
    d = Degrade(blur=0.5, blur_sigma=3.0, jpeg=0.5, rescale=0.0)
    x = d(x, u)    # x: float (N, 3, H, W) in [0, 1]; u: (N, d.uniforms) uniforms

After Wang et al., "CNN-generated images are surprisingly easy to spot... for now" (CVPR 2020),
Sec. 4: each training image is blurred with probability ``blur`` (Gaussian, sigma ~ U[0,
``blur_sigma``]) and JPEG re-compressed with probability ``jpeg`` (quality ~ U{30..100}); their
"Blur+JPEG (0.5)" model is ``blur=0.5, jpeg=0.5``. Rescaling, with probability ``rescale``,
resamples an image down by a factor ~ U[0.5, 1] and back up (bilinear), as a resize on upload
would. They teach the detector to ignore what sharing degrades instead of the fragile high
frequencies of one generator.

Wang et al. trained at 224 px; sigma 3 on a 32 px CIFAKE image removes most of it, so
``blur_sigma`` is a hyperparameter (e.g. 1.0 at 32 px). Every draw comes from ``u``, the
epoch's uniforms (``trainables.loader.Preprocess``), so a resumed run degrades the same images
the same way. JPEG runs on the CPU through torchvision's libjpeg (about 50 us per 32 px image);
on a GPU the chosen images make one round trip to the host per batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

JPEG_QUALITY = (30, 100)  # Wang et al., Sec. 4: quality ~ U{30..100}
RESCALE_FACTOR = (0.5, 1.0)
BLUR_U, JPEG_U, RESCALE_U = 2, 2, 2  # uniforms per image: (apply?, strength) each


class Degrade:
    """The degradations a config asks for; ``uniforms`` per image, consumed in this order."""

    def __init__(self, blur: float = 0.0, blur_sigma: float = 3.0, jpeg: float = 0.0,
                 rescale: float = 0.0) -> None:
        self.blur, self.blur_sigma, self.jpeg, self.rescale = blur, blur_sigma, jpeg, rescale

    @property
    def active(self) -> bool:
        return bool(self.blur or self.jpeg or self.rescale)

    @property
    def uniforms(self) -> int:
        return ((BLUR_U if self.blur else 0) + (JPEG_U if self.jpeg else 0)
                + (RESCALE_U if self.rescale else 0))

    def __call__(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        col = 0
        if self.blur:
            sigma = u[:, col + 1] * self.blur_sigma * (u[:, col] < self.blur)
            x = gaussian_blur(x, sigma)
            col += BLUR_U
        if self.jpeg:
            lo, hi = JPEG_QUALITY
            quality = lo + (u[:, col + 1] * (hi - lo + 1)).long().clamp_(max=hi - lo)
            x = jpeg_recompress(x, quality, u[:, col] < self.jpeg)
            col += JPEG_U
        if self.rescale:
            lo, hi = RESCALE_FACTOR
            x = rescale(x, lo + u[:, col + 1] * (hi - lo), u[:, col] < self.rescale)
            col += RESCALE_U
        return x


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Each image of the (N, C, H, W) batch blurred with its own ``sigma`` (N,) in pixels.

    Separable, reflect-padded, one grouped convolution per axis; sigma 0 leaves an image as
    it is. The kernel spans 3 sigma of the largest sigma, capped by the image size.
    """
    n, c, h, w = x.shape
    top = float(sigma.max()) if n else 0.0
    if top <= 0:
        return x
    radius = max(1, min(math.ceil(3 * top), (min(h, w) - 1) // 2))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    s = sigma.to(x.device, torch.float32).view(n, 1)
    kernel = torch.exp(-0.5 * (offsets.view(1, -1) / s.clamp(min=1e-6)) ** 2)
    # sigma 0: a unit impulse (the exp above is 0 everywhere but the centre, 1 there).
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    kernel = kernel.repeat_interleave(c, dim=0).to(x.dtype)  # (N*C, K): one per channel
    flat = x.reshape(1, n * c, h, w)
    k = 2 * radius + 1
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"),
                    kernel.view(n * c, 1, 1, k), groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"),
                    kernel.view(n * c, 1, k, 1), groups=n * c)
    return flat.view(n, c, h, w).contiguous(memory_format=_format(x))


def jpeg_recompress(x: torch.Tensor, quality: torch.Tensor, chosen: torch.Tensor
                    ) -> torch.Tensor:
    """The ``chosen`` images of a [0, 1] batch JPEG-encoded at their ``quality`` and decoded."""
    picked = torch.nonzero(chosen).view(-1).cpu()
    if not len(picked):
        return x
    # Imported here: torchvision costs ~3 s of import in every trial process, and only the
    # trials that ask for JPEG degradation use its codec.
    from torchvision.io import decode_jpeg, encode_jpeg

    q = quality.cpu()
    images = (x[picked.to(x.device)].detach().float() * 255).round_().clamp_(0, 255)
    images = images.to(device="cpu", dtype=torch.uint8).contiguous()
    done = torch.stack([decode_jpeg(encode_jpeg(img, quality=int(q[i])))
                        for img, i in zip(images, picked.tolist(), strict=True)])
    out = x.clone()
    out[picked.to(x.device)] = (done.to(x.device, torch.float32) / 255).to(x.dtype)
    return out


def rescale(x: torch.Tensor, factor: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """The ``chosen`` images resampled down by their ``factor`` (< 1) and back up (bilinear).

    Images sharing a rounded size are resampled together, so a batch costs a few interpolations.
    """
    h, w = x.shape[-2:]
    sizes = (factor.cpu() * h).round().long().clamp_(min=2, max=h)
    pick = chosen.cpu() & (sizes < h)
    out = x
    for size in sorted(set(sizes[pick].tolist())):
        idx = torch.nonzero(pick & (sizes == size)).view(-1).to(x.device)
        small = F.interpolate(x[idx], size=(size, max(2, round(size * w / h))),
                              mode="bilinear", align_corners=False, antialias=True)
        back = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        if out is x:
            out = x.clone()
        out[idx] = back.clamp_(0.0, 1.0)
    return out.contiguous(memory_format=_format(x))


def _format(x: torch.Tensor) -> torch.memory_format:
    return (torch.channels_last if x.dim() == 4 and x.is_contiguous(
        memory_format=torch.channels_last) and not x.is_contiguous() else torch.contiguous_format)
