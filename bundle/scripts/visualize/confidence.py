"""Confidence heatmaps and difficult-pixel masks as pictures (Matsuzuki & Hotta).

Arrays are in the file's orientation, ``(H, W)``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["colormap_rgb", "confidence_to_rgb", "difficult_to_grey"]


def colormap_rgb(values: np.ndarray, cmap: str) -> np.ndarray:
    """Map values in 0..1 through a matplotlib colormap: ``(H, W)`` -> ``uint8`` ``(H, W, 3)``.

    Raises:
        ValueError: an unknown colormap name.
    """
    from matplotlib import colormaps

    if cmap not in colormaps:
        raise ValueError(f"unknown matplotlib colormap {cmap!r}; e.g. 'inferno', 'viridis', 'jet', 'bwr'.")
    rgba = colormaps[cmap](np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0))
    return np.rint(rgba[..., :3] * 255.0).astype(np.uint8)


def confidence_to_rgb(confidence: np.ndarray, num_classes: int | None = None, cmap: str = "inferno") -> np.ndarray:
    """Colour a confidence map ``f = max_c p(c|x)``.

    The scale is absolute, the same for every image, so pictures can be compared: with ``num_classes = C`` the
    lowest possible confidence ``1 / C`` (a uniform prediction) maps to the colormap's start (black for
    'inferno') and 1 (certain) to its end (light yellow); with ``num_classes=None``, 0..1 is mapped.

    Args:
        confidence: ``(H, W)`` values in 0..1.
        num_classes: number of classes C, or ``None``.
        cmap: matplotlib colormap name. Defaults to 'inferno'.

    Returns:
        ``uint8`` ``(H, W, 3)``.

    Raises:
        ValueError: ``num_classes < 2`` or not a 2D map.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    if confidence.ndim != 2:
        raise ValueError(f"expected an (H, W) confidence map, got shape {confidence.shape}.")
    if num_classes is not None and num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 or None, got {num_classes}.")
    low = 1.0 / num_classes if num_classes else 0.0
    return colormap_rgb((confidence - low) / (1.0 - low), cmap)


def difficult_to_grey(difficult: np.ndarray) -> np.ndarray:
    """Difficult-pixel mask as a picture: white (255) = difficult, black (0) = not; ``uint8`` ``(H, W)``."""
    difficult = np.asarray(difficult)
    if difficult.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {difficult.shape}.")
    return np.where(difficult.astype(bool), 255, 0).astype(np.uint8)
