"""U-Net border weight map (Ronneberger et al., 2015, eq. 2), as a MONAI array transform and dictionary wrapper.

``w(x) = w_c(x) + w0 · exp(-(d1(x) + d2(x))² / (2σ²))``

How the map reaches the loss: MONAI's ``SupervisedTrainer`` calls ``loss(y_pred, y)`` only, so
:class:`UNetBorderWeightMapd` by default appends the map to the label as a second channel (label ``(1, H, W)``
becomes ``(2, H, W)``: channel 0 class index, channel 1 weight), and
:class:`scripts.losses.BorderWeightedCELoss` reads channel 1 as the per-pixel weight. Put the transform
right after loading (and class-index conversion), before any random transform, so ``CacheDataset`` caches it
(it is deterministic); later spatial transforms must treat the label with ``mode="nearest"`` (both channels
then stay valid: class indices stay whole, weights are copied from a neighbour). Alternatively
``weight_key="weight"`` writes the map under its own key: give that key the same spatial transforms as the
label (nearest) and concatenate at the end of the chain with
``ConcatItemsd(keys=["label", "weight"], name="label")``. Only the training chain needs the map; validation
and inference labels keep their single channel.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_dst_type, convert_to_numpy
from scipy import ndimage
from scripts.data.classes import MEMBRANE

__all__ = ["UNetBorderWeightMap", "UNetBorderWeightMapd", "border_distances"]

#: The border term is neglected where it would be below this fraction of ``w0`` (see ``border_distances``).
_TRUNCATION = 1e-4


def border_distances(objects: np.ndarray, max_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Distances ``d1``, ``d2`` from every pixel to the nearest and the second-nearest object.

    Objects are the face-connected components of ``objects`` (4-connectivity in 2D, 6 in 3D, so cells that
    touch only diagonally through a thin membrane stay apart). The distance from pixel ``x`` to an object is
    the Euclidean distance, in pixels, from the centre of ``x`` to the centre of the nearest pixel of that
    object (``scipy.ndimage.distance_transform_edt``): 0 on the object, 1 for a pixel next to it, so a
    one-pixel gap between two objects has ``d1 = d2 = 1`` and the first pixel of a two-pixel gap ``d1 = 1``,
    ``d2 = 2``.

    Efficient: each object's distance transform is computed only in its bounding box grown by
    ``max_distance``; distances beyond it are reported as ``inf``. ``d1``/``d2`` are exact wherever
    ``d2 <= max_distance``.

    Args:
        objects: boolean array, any number of spatial dimensions, no channel.
        max_distance: how far from each object distances are computed, in pixels.

    Returns:
        ``(d1, d2)``, float64 arrays of ``objects``'s shape (``inf`` where fewer objects lie within reach).
    """
    components, n = ndimage.label(objects)
    d1 = np.full(objects.shape, np.inf)
    d2 = np.full(objects.shape, np.inf)
    margin = int(math.ceil(max_distance))
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        grown = tuple(
            slice(max(s.start - margin, 0), min(s.stop + margin, size)) for s, size in zip(box, objects.shape)
        )
        dist = ndimage.distance_transform_edt(components[grown] != index)
        r1, r2 = d1[grown], d2[grown]
        np.minimum(r2, np.maximum(r1, dist), out=r2)
        np.minimum(r1, dist, out=r1)
    return d1, d2


class UNetBorderWeightMap(Transform):
    """Compute U-Net's weight map ``w(x) = w_c(x) + w0 · exp(-(d1(x) + d2(x))² / (2σ²))`` from a label map.

    ``d1``, ``d2``: distances (pixels, convention in :func:`border_distances`) to the nearest and the
    second-nearest object, where objects are the connected components of the pixels whose class is in
    ``object_classes``. By default that is every class except membrane (class 1), so each cell bounded by
    membrane is one object and the membrane pixels between two close cells get the border emphasis. The
    border term is added on the pixels outside the objects only (the separating pixels; on an object
    ``d1 = 0`` and the term would also light up the cell rims); it is neglected (set to 0) where
    it would be below ``1e-4 · w0``, which keeps the computation fast on many small cells.

    ``w_c(x)`` balances the class frequencies:

    - ``"frequency"`` (default): from the label itself, ``w_c = N / (K · n_c)`` with ``n_c`` the pixel count
      of class ``c``, ``N`` the pixel count and ``K`` the number of classes present, so ``w_c`` averages to 1
      over the image;
    - a sequence: ``w_c = class_weights[c]`` (e.g. dataset frequencies from
      :func:`scripts.losses.compute_class_weights`);
    - ``None``: no class term, the map holds the border term only (then give ``w_c`` to the loss:
      ``BorderWeightedCELoss(weight=...)`` adds it).

    Reference:
        Ronneberger, O., Fischer, P., Brox, T. (2015) U-Net: Convolutional Networks for Biomedical Image
        Segmentation. MICCAI 2015 (``w0 = 10``, ``σ ≈ 5`` pixels).

    Args:
        w0: amplitude of the border term, no less than 0.
        sigma: width ``σ`` of the border term in pixels, greater than 0.
        object_classes: class indices whose connected components are the objects; ``None``: all classes
            except membrane (:data:`scripts.data.classes.MEMBRANE`).
        class_weights: ``"frequency"``, a sequence of per-class weights no less than 0, or ``None``.

    Raises:
        ValueError: when ``w0`` or ``sigma`` is out of range, ``object_classes`` is empty or not integers, or
            ``class_weights`` is neither ``"frequency"``, ``None`` nor a sequence of finite numbers >= 0.
    """

    backend = [np.ndarray, torch.Tensor]

    def __init__(
        self,
        w0: float = 10.0,
        sigma: float = 5.0,
        object_classes: Sequence[int] | None = None,
        class_weights: str | Sequence[float] | None = "frequency",
    ) -> None:
        if not math.isfinite(w0) or w0 < 0:
            raise ValueError(f"`w0` must be a finite number no less than 0, got {w0!r}.")
        if not math.isfinite(sigma) or sigma <= 0:
            raise ValueError(f"`sigma` must be a finite number greater than 0 (pixels), got {sigma!r}.")
        if object_classes is not None:
            if isinstance(object_classes, (str, bytes)) or not isinstance(object_classes, Sequence):
                raise ValueError(f"`object_classes` must be None or a list of class indices, got {object_classes!r}.")
            if len(object_classes) == 0 or not all(
                isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c >= 0 for c in object_classes
            ):
                raise ValueError(
                    f"`object_classes` must be a non-empty list of class indices >= 0, got {object_classes!r}."
                )
            object_classes = [int(c) for c in object_classes]
        bad_weights = (
            "`class_weights` must be 'frequency', None or a non-empty list of finite floats >= 0, "
            f"got {class_weights!r}."
        )
        if isinstance(class_weights, str):
            if class_weights != "frequency":
                raise ValueError(bad_weights)
        elif class_weights is not None:
            try:
                cw = np.asarray(class_weights, dtype=np.float64)
            except (TypeError, ValueError) as e:
                raise ValueError(bad_weights) from e
            if cw.ndim != 1 or cw.size == 0 or not np.all(np.isfinite(cw)) or np.any(cw < 0):
                raise ValueError(bad_weights)
            class_weights = cw
        self.w0 = float(w0)
        self.sigma = float(sigma)
        self.object_classes = object_classes
        self.class_weights = class_weights
        # beyond this distance w0 * exp(-d² / 2σ²) < _TRUNCATION * w0
        self.max_distance = self.sigma * math.sqrt(2.0 * math.log(1.0 / _TRUNCATION))

    def __call__(self, label: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """
        Args:
            label: class-index label, channel first: ``(1, H, W)`` or ``(1, H, W, D)``.

        Returns:
            the weight map, ``(1, *spatial)`` float32, of ``label``'s type (numpy, torch or MetaTensor).

        Raises:
            ValueError: when ``label`` does not have exactly one channel, holds negative or non-integer values,
                or a class index that ``class_weights`` has no weight for.
        """
        lab = convert_to_numpy(label)
        if lab.ndim < 3 or lab.shape[0] != 1:
            raise ValueError(
                f"label must be channel-first with one channel of class indices, (1, H, W[, D]); got shape "
                f"{tuple(lab.shape)}. (A 2-channel label already carries a weight map.)"
            )
        lab = lab[0]
        if not np.issubdtype(lab.dtype, np.integer):
            if not np.all(np.isfinite(lab)) or np.any(lab != np.round(lab)):
                raise ValueError("label must hold whole class indices; found non-integer values.")
            lab = np.round(lab)
        lab = lab.astype(np.int64)
        if lab.size and lab.min() < 0:
            raise ValueError(f"label must hold class indices >= 0, found {lab.min()}.")

        if isinstance(self.class_weights, str):  # "frequency"
            counts = np.bincount(lab.ravel())
            present = counts > 0
            per_class = np.zeros(counts.shape, dtype=np.float64)
            per_class[present] = lab.size / (present.sum() * counts[present])
            weight = per_class[lab]
        elif self.class_weights is not None:
            if lab.size and lab.max() >= self.class_weights.size:
                raise ValueError(
                    f"label holds class {lab.max()} but `class_weights` has only {self.class_weights.size} values."
                )
            weight = self.class_weights[lab]
        else:
            weight = np.zeros(lab.shape, dtype=np.float64)

        objects = lab != MEMBRANE if self.object_classes is None else np.isin(lab, self.object_classes)
        if self.w0 > 0:
            d1, d2 = border_distances(objects, self.max_distance)
            border = self.w0 * np.exp(-((d1 + d2) ** 2) / (2.0 * self.sigma**2))
            weight = weight + np.where(objects, 0.0, border)
        out, *_ = convert_to_dst_type(weight[None].astype(np.float32), label, dtype=torch.float32)
        return out


class UNetBorderWeightMapd(MapTransform):
    """Dictionary wrapper of :class:`UNetBorderWeightMap`.

    By default the weight map is appended to the label as channel 1 (``(1, H, W)`` -> ``(2, H, W)``, the label
    cast to float32), which is what :class:`scripts.losses.BorderWeightedCELoss` reads. With ``weight_key``
    the map is written under that key instead and the label is left untouched (see the module docstring).
    Deterministic: place it before the random transforms so it is cached.

    Args:
        keys: the label key(s).
        w0: amplitude of the border term.
        sigma: width of the border term in pixels.
        object_classes: class indices whose connected components are the objects; ``None``: all but membrane.
        class_weights: ``"frequency"``, a list of per-class weights, or ``None`` (see :class:`UNetBorderWeightMap`).
        weight_key: ``None`` to append the map to the label; a key name to store it there instead (one label
            key only).
        allow_missing_keys: don't raise when a key is missing.

    Raises:
        ValueError: when ``weight_key`` is given with more than one key, or an argument of
            :class:`UNetBorderWeightMap` is invalid.
    """

    backend = UNetBorderWeightMap.backend

    def __init__(
        self,
        keys: KeysCollection = "label",
        w0: float = 10.0,
        sigma: float = 5.0,
        object_classes: Sequence[int] | None = None,
        class_weights: str | Sequence[float] | None = "frequency",
        weight_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if weight_key is not None and len(self.keys) != 1:
            raise ValueError(f"`weight_key` stores one map: give one label key, got {list(self.keys)}.")
        self.transform = UNetBorderWeightMap(
            w0=w0, sigma=sigma, object_classes=object_classes, class_weights=class_weights
        )
        self.weight_key = weight_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            weight = self.transform(d[key])
            if self.weight_key is not None:
                d[self.weight_key] = weight
            elif isinstance(d[key], torch.Tensor):
                d[key] = torch.cat([d[key].to(torch.float32), weight], dim=0)
            else:
                d[key] = np.concatenate([np.asarray(d[key], dtype=np.float32), weight], axis=0)
        return d
