"""Colour overlays of label maps on images, and the class legend.

All functions take and return arrays in the file's orientation, ``(H, W)`` rows x columns (a MONAI ``(C, W, H)``
array from ``LoadImage`` must be transposed first; :class:`scripts.visualize.PictureWriter` does that).

Blending, per pixel: ``out = round((1 - alpha) * grey + alpha * colour)``, with ``grey`` the image rescaled from
its own min..max to 0..255 (same value in R, G and B) and ``colour = CLASS_COLORS[label]``. Every class is drawn,
intracellular (light grey) included, so a pixel's tint always names its class; the legend (``legend.png`` of an
inference run) lists the colours.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scripts.data.classes import CLASS_COLORS, class_palette

__all__ = ["grey_image", "label_to_rgb", "overlay_labels", "legend_image"]


def grey_image(image: np.ndarray) -> np.ndarray:
    """Rescale an image to ``uint8`` grey for display.

    Args:
        image: ``(H, W)`` grey, ``(1, H, W)``, or ``(C, H, W)`` with C > 1 (the channels are averaged).

    Returns:
        ``uint8`` ``(H, W)``, the image rescaled linearly from its own min..max to 0..255 (constant -> 0).

    Raises:
        ValueError: for other shapes or non-finite values.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3:
        image = image.mean(axis=0)
    if image.ndim != 2:
        raise ValueError(f"expected an (H, W) or (C, H, W) image, got shape {image.shape}.")
    if not np.all(np.isfinite(image)):
        raise ValueError("image holds NaN or infinite values.")
    lo, hi = float(image.min()), float(image.max())
    if hi <= lo:
        return np.zeros(image.shape, np.uint8)
    return np.rint((image - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _palette(colors: Sequence[Sequence[int]]) -> np.ndarray:
    palette = np.asarray(colors, dtype=np.uint8)
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise ValueError(f"colors must be a sequence of (R, G, B) triples, got shape {palette.shape}.")
    return palette


def label_to_rgb(labels: np.ndarray, colors: Sequence[Sequence[int]] = CLASS_COLORS) -> np.ndarray:
    """Colour a label map: ``(H, W)`` class indices -> ``uint8`` ``(H, W, 3)``.

    Raises:
        ValueError: a label outside ``0 .. len(colors) - 1``.
    """
    palette = _palette(colors)
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= len(palette)):
        raise ValueError(f"labels must lie in 0..{len(palette) - 1}, got {labels.min()}..{labels.max()}.")
    return palette[labels.astype(np.intp)]


def overlay_labels(
    image: np.ndarray, labels: np.ndarray, colors: Sequence[Sequence[int]] = CLASS_COLORS, alpha: float = 0.5
) -> np.ndarray:
    """Blend a label map over an image (formula in the module docstring).

    Args:
        image: ``(H, W)`` or ``(C, H, W)`` image, any value range.
        labels: ``(H, W)`` class indices.
        colors: one RGB colour per class. Defaults to ``CLASS_COLORS``.
        alpha: colour weight in 0..1 (0 = image only, 1 = colours only). Defaults to 0.5.

    Returns:
        ``uint8`` ``(H, W, 3)``.

    Raises:
        ValueError: ``alpha`` outside 0..1, or image and labels of different sizes.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in 0..1, got {alpha}.")
    grey = grey_image(image).astype(np.float64)
    labels = np.asarray(labels)
    if labels.shape != grey.shape:
        raise ValueError(f"image {grey.shape} and labels {labels.shape} must have the same (H, W).")
    colour = label_to_rgb(labels, colors).astype(np.float64)
    return np.rint((1.0 - alpha) * grey[..., None] + alpha * colour).astype(np.uint8)


def legend_image(names: Sequence[str], colors: Sequence[Sequence[int]] | None = None, swatch: int = 16) -> np.ndarray:
    """A legend strip: one row per class, a colour swatch and the class name, black on white.

    Args:
        names: class names, index order.
        colors: class colours, same order; ``None`` (default): ``class_palette(len(names))``.
        swatch: swatch size in pixels (row height is ``swatch + 4``).

    Returns:
        ``uint8`` ``(H, W, 3)``.

    Raises:
        ValueError: different numbers of names and colours.
    """
    from PIL import Image, ImageDraw, ImageFont

    palette = _palette(class_palette(len(names)) if colors is None else colors)
    if len(names) != len(palette):
        raise ValueError(f"got {len(names)} class names but {len(palette)} colours.")
    font = ImageFont.load_default()
    texts = [f"{i} {name}" for i, name in enumerate(names)]
    row = swatch + 4
    width = swatch + 12 + max(int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(t, font=font)) for t in texts)
    img = Image.new("RGB", (width + 4, row * len(names) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for i, (text, colour) in enumerate(zip(texts, palette)):
        top = 4 + i * row
        draw.rectangle(
            [4, top, 4 + swatch - 1, top + swatch - 1], fill=tuple(int(c) for c in colour), outline=(0, 0, 0)
        )
        draw.text((swatch + 10, top + 2), text, fill=(0, 0, 0), font=font)
    return np.asarray(img)
