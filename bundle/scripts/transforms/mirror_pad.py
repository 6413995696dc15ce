"""Mirror padding in torch, with pads of any width: :func:`mirror_pad` (the inferers' padding) and
:class:`MirrorSpatialPad` (training patches of small images).

MONAI's ``SpatialPad`` pads with ``torch.nn.functional.pad`` in the torch modes, whose ``"reflect"`` refuses a pad
as wide as the image (an image smaller than about half a patch), and falls back to NumPy for the NumPy-only modes
such as ``"symmetric"`` (on a GPU: a copy to the host and back, with a warning, every call).
:class:`MirrorSpatialPad` pads like ``SpatialPad(method="symmetric")`` (half the missing pixels before, the rest
after) with :func:`mirror_pad`, which reflects repeatedly, so it stays on the tensor's device for
any image size. ``"reflect"`` mirrors without repeating the edge pixel (NumPy's ``"reflect"``, the U-Net paper's
mirroring and the bundle's inference padding); NumPy's ``"symmetric"`` repeats it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_dst_type, convert_to_tensor, fall_back_tuple
from scripts.checks import check_option

__all__ = ["PAD_MODES", "MirrorSpatialPad", "MirrorSpatialPadd", "mirror_pad"]

PAD_MODES = ("reflect", "replicate", "constant")


def mirror_pad(image: torch.Tensor, pads: Sequence[tuple[int, int]], mode: str = "reflect") -> torch.Tensor:
    """Pad the spatial dimensions of ``image``, with pads of any size.

    ``torch.nn.functional.pad`` in ``"reflect"`` mode refuses pads as large as the image; this pads repeatedly, which
    gives the even (mirror) periodic extension of the image, so a pad may exceed the image size (an image smaller
    than one tile). A spatial dimension of a single pixel is repeated (its mirror image is itself).

    Args:
        image: (B, C, *spatial) tensor.
        pads: one ``(before, after)`` pair of non-negative pad widths per spatial dimension, in order.
        mode: ``"reflect"`` (mirror without repeating the edge pixel, as in the U-Net paper), ``"replicate"``
            (repeat the edge pixel) or ``"constant"`` (zeros).

    Returns:
        The padded tensor, same dtype and device.

    Raises:
        ValueError: ``mode`` is not one of the above, or ``pads`` does not give one non-negative pair per spatial
            dimension.
    """
    check_option("mode", mode, PAD_MODES)
    spatial_dims = image.ndim - 2
    if len(pads) != spatial_dims or any(len(p) != 2 or min(p) < 0 for p in pads):
        raise ValueError(f"pads must give one (before, after) pair of non-negative ints per spatial dim, got {pads}.")
    for dim, (before, after) in enumerate(pads):
        axis = 2 + dim
        while before > 0 or after > 0:
            size = image.shape[axis]
            # reflect can add at most size - 1 pixels per pass; a single pixel can only be replicated
            step = size - 1 if mode == "reflect" and size > 1 else max(before, after)
            pass_mode = "replicate" if mode == "reflect" and size == 1 else mode
            b, a = min(before, step), min(after, step)
            # F.pad takes (last dim before, last dim after, previous dim before, ...) for all spatial dims
            torch_pad = [0, 0] * (image.ndim - 1 - axis) + [b, a] + [0, 0] * dim
            image = F.pad(image, torch_pad, mode=pass_mode) if pass_mode != "constant" else F.pad(image, torch_pad)
            before, after = before - b, after - a
    return image


class MirrorSpatialPad(Transform):
    """Pad a channel-first image ``(C, *spatial)`` to at least ``spatial_size`` by mirroring (module docstring).

    Dimensions already as large are left as they are (crop them with e.g. ``RandSpatialCrop``). The output has the
    input's type, dtype and device (a ``MetaTensor`` keeps its metadata; its affine is not shifted, as training
    does not use it).

    Args:
        spatial_size: the smallest output size, one int per spatial dimension (or one int for all); a value
            ``<= 0`` keeps that dimension's size.
        mode: ``"reflect"`` (mirror without repeating the edge pixel; default), ``"replicate"`` or ``"constant"``.

    Raises:
        ValueError: an unknown ``mode``.
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(self, spatial_size: Sequence[int] | int, mode: str = "reflect") -> None:
        check_option("mode", mode, PAD_MODES)
        self.spatial_size = spatial_size
        self.mode = mode

    def __call__(self, img: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        sizes = tuple(img.shape[1:])
        target = fall_back_tuple(self.spatial_size, sizes, lambda v: v is not None and v > 0)
        pads = [((max(t - s, 0)) // 2, max(t - s, 0) - max(t - s, 0) // 2) for s, t in zip(sizes, target)]
        if not any(b or a for b, a in pads):
            return img
        x = convert_to_tensor(img, track_meta=isinstance(img, MetaTensor))
        out = mirror_pad(x[None], pads, self.mode)[0]
        if isinstance(img, torch.Tensor):
            return out
        return convert_to_dst_type(out, img)[0]


class MirrorSpatialPadd(MapTransform):
    """Dictionary wrapper of :class:`MirrorSpatialPad`: the same padding for every key (image and label).

    Args:
        keys: keys of the images to pad.
        spatial_size: see :class:`MirrorSpatialPad`.
        mode: one mode for all keys, see :class:`MirrorSpatialPad`.
        allow_missing_keys: don't raise when a key is missing.
    """

    backend = MirrorSpatialPad.backend

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int] | int,
        mode: str = "reflect",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.padder = MirrorSpatialPad(spatial_size, mode)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.padder(d[key])
        return d
