"""The cover image of an exported package: a section and the model's segmentation of it, side by side.

The BioImage Model Zoo shows covers at an aspect ratio of 2:1; this one is the (square, centre-cropped) image on the
left and the same crop with the predicted classes blended over it on the right (the bundle's class colours,
:data:`scripts.data.CLASS_COLORS`), saved as a JPEG (a few hundred kB at most).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scripts.visualize.overlay import grey_image, overlay_labels

__all__ = ["centre_crop", "write_cover"]


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The centred ``size x size`` crop of the last two axes of ``image`` (smaller sides are kept whole)."""
    h, w = image.shape[-2:]
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return image[..., top : top + size, left : left + size]


def write_cover(path: str | os.PathLike, image: np.ndarray, labels: np.ndarray, quality: int = 90) -> Path:
    """Write ``[image | image with labels]`` as a JPEG.

    Args:
        path: the ``.jpg`` file.
        image: ``(C, H, W)`` pixels (any range; shown rescaled to its own min..max, channels averaged).
        labels: ``(H, W)`` class indices.
        quality: JPEG quality.

    Returns:
        ``path``.
    """
    from PIL import Image

    grey = np.repeat(grey_image(image)[..., None], 3, axis=-1)
    picture = np.concatenate([grey, overlay_labels(image, labels, alpha=0.45)], axis=1)
    Image.fromarray(picture).save(path, quality=quality)
    return Path(path)
