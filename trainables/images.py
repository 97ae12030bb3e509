"""Image files: which names are images, and decoding one into the pixels every path uses.

Usage: ``fit_square(decode_image(data), 32)`` (the ingest and ``study.predict`` share these, so
the same file gives the same pixels in training and in prediction).
"""

from __future__ import annotations

import io

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
# Files that operating systems and archivers add; counted and reported, never read as images.
SYSTEM_FILES = {".ds_store", "thumbs.db", "desktop.ini"}


def fit_square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square (keeping the aspect ratio) and resize to ``size``."""
    from PIL import Image

    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    im = Image.fromarray(image).crop((left, top, left + side, top + side))
    return np.asarray(im.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None))


def decode_image(data: bytes) -> np.ndarray:
    """The RGB uint8 pixels (H, W, 3) of an image file's bytes, decoded by PIL."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
