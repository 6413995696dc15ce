"""The bundle's own prediction of one image, in-process: what ``inference.json`` computes for it, as float
probabilities (the reference an export's test output and its agreement check are made from).

``inference.json`` loads an image with MONAI's ``LoadImage`` (columns first: ``(C, x, y)``), scales it from
``0..intensity_max`` to ``0..1`` (clipped; :class:`scripts.transforms.ScaleIntensityByRule`, rule ``"model"``: an
8-bit image under the default ``"auto"`` rule), runs :class:`scripts.inferers.OverlapTileInferer` (mirror padding by
the network's context margin, tiles whose outputs abut) and takes the softmax over the classes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from scripts.inferers import OverlapTileInferer
from scripts.transforms import ScaleIntensityByRule

__all__ = ["bundle_probabilities", "to_channel_first"]


def to_channel_first(image: np.ndarray) -> np.ndarray:
    """A ``(H, W)`` grey or ``(H, W, C)`` image (as :func:`scripts.data.read_image` returns it) as ``(C, H, W)``."""
    image = np.asarray(image)
    return image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)


def bundle_probabilities(
    network: nn.Module,
    image: np.ndarray,
    intensity_max: float,
    overlap_tile: bool = True,
    memory_budget_mb: float | None = None,
) -> np.ndarray:
    """Class probabilities of ``image`` as the bundle's inference computes them.

    Args:
        network: the bundle network (eval mode is set here).
        image: ``(C, H, W)`` raw pixel values (``0..intensity_max``), in the file's row-major orientation.
        intensity_max: the model's ``intensity_max`` (``model_info``).
        overlap_tile: True (default): the inference's :class:`~scripts.inferers.OverlapTileInferer`; False: one
            forward pass over the image as it is, without mirror padding (one tile's raw output, context band
            included: what a bioimage.io package's test output holds).
        memory_budget_mb: the overlap-tile inferer's budget (``None``: its default).

    Returns:
        ``float32`` ``(num_classes, H, W)`` probabilities, in the file's orientation.
    """
    network.eval()
    monai_view = torch.as_tensor(np.ascontiguousarray(np.swapaxes(image, -2, -1)), dtype=torch.float32)
    scaled = ScaleIntensityByRule("model", intensity_max)(monai_view, value_range=(0.0, float(intensity_max)))
    batch = torch.as_tensor(scaled, dtype=torch.float32)[None]
    with torch.no_grad():
        if overlap_tile:
            logits = OverlapTileInferer(mode="reflect", memory_budget_mb=memory_budget_mb)(batch, network)
        else:
            logits = network(batch)
        probabilities = torch.softmax(logits, dim=1)[0]
    return np.ascontiguousarray(np.swapaxes(probabilities.numpy(), -2, -1)).astype(np.float32)
