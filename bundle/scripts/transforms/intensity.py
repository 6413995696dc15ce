"""Scale an image to the network's 0..1 input by the inference ``intensity_rule`` (:mod:`scripts.data.intensity`)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, ScaleIntensityRange, Transform
from scripts.data.intensity import check_intensity_rule, intensity_scaling

__all__ = ["ScaleIntensityByRule", "ScaleIntensityByRuled"]


class ScaleIntensityByRule(Transform):
    """Map an image's values from ``low..high`` to ``0..1``, clipped, as MONAI's ``ScaleIntensityRange`` (so with the
    model's range ``0..intensity_max`` the result is exactly the training scaling).

    The range is ``value_range`` when given (decided by the pre-flight, which knows the file's pixel type), else
    derived from the pixel values by ``rule`` (``"auto"``, ``"model"``, ``"percentile"``; ``"dtype"`` needs the
    pre-flight's range, since the loader has already converted the pixels to float).

    Args:
        rule: one of ``scripts.data.INTENSITY_RULES``.
        intensity_max: the model's training scaling.

    Raises:
        ValueError: an unknown rule; at call time, an image the rule refuses (the message gives the fix).
    """

    def __init__(self, rule: str = "auto", intensity_max: float = 255) -> None:
        self.rule = check_intensity_rule(rule)
        self.intensity_max = float(intensity_max)

    def __call__(self, img: NdarrayOrTensor, value_range: Sequence[float] | None = None) -> NdarrayOrTensor:
        if value_range is None:
            if self.rule == "dtype":
                raise ValueError(
                    "intensity_rule 'dtype' needs the range the pre-flight takes from the file's pixel type "
                    "(scripts.workflows.InferencePlan); use 'auto', 'model' or 'percentile' without it."
                )
            values = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
            scaling = intensity_scaling(values, self.rule, self.intensity_max, dtype=values.dtype)
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
        range_key: item key of a ``[low, high]`` range decided before loading.
        allow_missing_keys: don't raise for missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        rule: str = "auto",
        intensity_max: float = 255,
        range_key: str = "intensity_range",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.scaler = ScaleIntensityByRule(rule, intensity_max)
        self.range_key = range_key

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        value_range = d.get(self.range_key)
        for key in self.key_iterator(d):
            d[key] = self.scaler(d[key], value_range)
        return d
