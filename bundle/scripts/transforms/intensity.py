"""Scale an image to the network's 0..1 input by the inference ``intensity_rule`` (:mod:`scripts.data.intensity`)."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, ScaleIntensityRange, Transform
from scripts.data.header import read_header
from scripts.data.intensity import check_intensity_rule, intensity_scaling

__all__ = ["ScaleIntensityByRule", "ScaleIntensityByRuled", "stored_dtype"]


def stored_dtype(img: NdarrayOrTensor) -> np.dtype:
    """The pixel type of the file an image was loaded from (MONAI's loader converts pixels to float32, and uint16 to
    int32): read from the header of the file its metadata names (``filename_or_obj``), else the array's own type."""
    source = (getattr(img, "meta", None) or {}).get("filename_or_obj")
    if isinstance(source, (str, os.PathLike)) and os.path.isfile(source):
        header = read_header(source)
        if not header.problem:
            return np.dtype(header.dtype)
    return img.detach().cpu().numpy().dtype if isinstance(img, torch.Tensor) else np.asarray(img).dtype


class ScaleIntensityByRule(Transform):
    """Map an image's values from ``low..high`` to ``0..1``, clipped, as MONAI's ``ScaleIntensityRange`` (so with the
    model's range ``0..intensity_max`` the result is exactly the training scaling).

    The range is ``value_range`` when given (decided by the pre-flight, which knows the file's pixel type), else
    derived from the pixel values by ``rule`` (``"auto"``, ``"model"``, ``"percentile"``; ``"dtype"`` needs the
    pre-flight's range, since the loader has already converted the pixels to float). Under ``"auto"`` with
    ``intensity_statistics`` the pixel type is the stored file's (:func:`stored_dtype`).

    Args:
        rule: one of ``scripts.data.INTENSITY_RULES``.
        intensity_max: the model's training scaling.
        intensity_statistics: the model's training statistics (``scripts.networks.model_intensity_statistics``);
            ``None``: a model that records none.

    Raises:
        ValueError: an unknown rule; at call time, an image the rule refuses (the message gives the fix).
    """

    def __init__(
        self, rule: str = "auto", intensity_max: float = 255, intensity_statistics: Mapping[str, Any] | None = None
    ) -> None:
        self.rule = check_intensity_rule(rule)
        self.intensity_max = float(intensity_max)
        self.intensity_statistics = intensity_statistics

    def __call__(self, img: NdarrayOrTensor, value_range: Sequence[float] | None = None) -> NdarrayOrTensor:
        if value_range is None:
            if self.rule == "dtype":
                raise ValueError(
                    "intensity_rule 'dtype' needs the range the pre-flight takes from the file's pixel type "
                    "(scripts.workflows.InferencePlan); use 'auto', 'model' or 'percentile' without it."
                )
            values = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
            stats = self.intensity_statistics if self.rule == "auto" else None
            dtype = stored_dtype(img) if stats is not None else values.dtype
            scaling = intensity_scaling(values, self.rule, self.intensity_max, dtype=dtype, statistics=stats)
            value_range = (scaling.low, scaling.high)
        low, high = (float(v) for v in value_range)
        return ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)(img)


class ScaleIntensityByRuled(MapTransform):
    """Dictionary wrapper of :class:`ScaleIntensityByRule`; the range comes from ``data[range_key]`` when present
    (the pre-flight's ``intensity_range``).

    Args:
        keys: image keys.
        rule: see :class:`ScaleIntensityByRule`.
        intensity_max: see :class:`ScaleIntensityByRule`.
        intensity_statistics: see :class:`ScaleIntensityByRule`.
        range_key: item key of a ``[low, high]`` range decided before loading.
        allow_missing_keys: don't raise for missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        rule: str = "auto",
        intensity_max: float = 255,
        intensity_statistics: Mapping[str, Any] | None = None,
        range_key: str = "intensity_range",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.scaler = ScaleIntensityByRule(rule, intensity_max, intensity_statistics)
        self.range_key = range_key

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        value_range = d.get(self.range_key)
        for key in self.key_iterator(d):
            d[key] = self.scaler(d[key], value_range)
        return d
