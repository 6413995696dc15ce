"""How an image's pixel values are scaled to the network's 0..1 input range: the inference ``intensity_rule``.

The bundle's models are trained on images divided by ``intensity_max`` (255 for 8-bit data) and clipped at 1.
Inference applies one of these rules per image, and says which it used (log and ``inference_report.json``):

- ``"auto"`` (default): the model's range ``0..intensity_max`` for an image of a pixel type the model was trained on
  whose values fit in it (every 8-bit image with the shipped model: exactly the training scaling); any other image
  (16-bit, float, another type) is ``"matched"``: the linear map that puts its own 0.5 and 99.5 percentiles onto
  those of the training images (the model's :func:`training_statistics`, recorded in its ``model_info``), so that
  a rescaled copy of an image (8-bit x 257 as uint16, /255 as float) is given the same input as the original, up to
  the difference between its percentiles and the training images'. A model that records no statistics (saved by
  v0.8.0 or earlier) keeps the rule of those versions: the model's range when the values fit in it (whatever the
  type), otherwise the image's own percentiles onto 0..1 (``"percentile"``). Nothing is clipped silently.
- ``"model"``: always ``0..intensity_max``; an image with values outside it is refused (reported, not predicted).
- ``"dtype"``: ``0..`` the largest value of the image's integer type (``65535`` for ``uint16``, ``255`` for
  ``uint8``); float images must lie in ``0..1`` (that range is used), otherwise they are refused.
- ``"percentile"``: every image from its own 0.5 and 99.5 percentiles to 0..1 (robust to any bit depth and
  exposure, but 8-bit images then differ from the training scaling).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "INTENSITY_RULES",
    "PERCENTILES",
    "STATISTICS_KEY",
    "IntensityScaling",
    "check_intensity_rule",
    "header_suffices",
    "intensity_scaling",
    "training_statistics",
]

#: The accepted values of ``intensity_rule``.
INTENSITY_RULES: tuple[str, ...] = ("auto", "model", "dtype", "percentile")
#: Lower and upper percentile of the ``"percentile"`` rule.
PERCENTILES: tuple[float, float] = (0.5, 99.5)
#: ``model_info`` key of the training images' intensity statistics (:func:`training_statistics`).
STATISTICS_KEY = "intensity_statistics"
#: At most this many training images are read for the statistics (evenly spread over the list).
MAX_STATISTICS_IMAGES = 100


class IntensityScaling(NamedTuple):
    """The rule applied to one image and the value range it maps to 0..1 (clipped outside)."""

    rule: str
    low: float
    high: float


def check_intensity_rule(rule: str) -> str:
    """Return ``rule`` if it is one of :data:`INTENSITY_RULES`.

    Raises:
        ValueError: for any other value, naming the choices.
    """
    if rule not in INTENSITY_RULES:
        raise ValueError(
            f"intensity_rule must be one of {', '.join(INTENSITY_RULES)}, got {rule!r} (see the user manual, "
            "Inference: 'auto' keeps 8-bit images as trained and scales others by their percentiles)."
        )
    return rule


def _percentiles(image: np.ndarray, percentiles: Sequence[float] = PERCENTILES) -> IntensityScaling:
    low, high = (float(v) for v in np.percentile(image, list(percentiles)))
    if high <= low:  # a (nearly) constant image: map its value to 0
        high = low + 1.0
    return IntensityScaling("percentile", low, high)


def training_statistics(
    items: Iterable[Mapping[str, Any] | str | os.PathLike],
    intensity_max: float,
    max_images: int = MAX_STATISTICS_IMAGES,
) -> dict[str, Any] | None:
    """The intensity statistics of a model's training images, recorded in its ``model_info`` (``train.json``'s
    ``intensity_statistics``) for the ``"auto"`` rule's ``"matched"`` scaling.

    Each image is read as stored (:func:`scripts.data.read_image`) and scaled as training scales it (divided by
    ``intensity_max``, clipped to 0..1); the statistics are the medians over the images of their own 0.5 and 99.5
    percentiles (a typical training image's, robust to an odd one), and the pixel types seen.

    Args:
        items: the training list (``{"image": path, ...}`` items or paths); a path listed twice counts once, and at
            most ``max_images`` evenly spread images are read (a large set costs no more than that).
        intensity_max: the training scaling (``intensity_max`` in the configs).
        max_images: see ``items``.

    Returns:
        ``{"percentiles": [0.5, 99.5], "range": [low, high], "dtypes": ["uint8", ...], "images": n}``: plain values
        (a ``model.pt`` is read with ``weights_only=True``); ``range`` is on the network's 0..1 input scale.
        ``None`` when the images are (nearly) constant (no range: the model then records no statistics).

    Raises:
        ValueError: no image listed, or one cannot be read (the message names it).
    """
    from .io import read_image

    paths = list(dict.fromkeys(str(i["image"] if isinstance(i, Mapping) else i) for i in items))
    if not paths:
        raise ValueError("no training image to take the intensity statistics from; list at least one image.")
    if len(paths) > max_images:
        paths = [paths[round(k * (len(paths) - 1) / (max_images - 1))] for k in range(max_images)]
    lows, highs, dtypes = [], [], set()
    for path in paths:
        image = read_image(path)
        dtypes.add(str(image.dtype))
        scaled = np.clip(image.astype(np.float64) / float(intensity_max), 0.0, 1.0)
        low, high = np.percentile(scaled, list(PERCENTILES))
        lows.append(float(low))
        highs.append(float(high))
    low, high = float(np.median(lows)), float(np.median(highs))
    if not low < high:  # (nearly) constant images: no range to match onto, "auto" keeps the rule of v0.8.0
        return None
    return {"percentiles": list(PERCENTILES), "range": [low, high], "dtypes": sorted(dtypes), "images": len(paths)}


def _check_statistics(statistics: Mapping[str, Any]) -> tuple[list[float], float, float, set[str]]:
    """``(percentiles, low, high, dtypes)`` of recorded statistics, or a ``ValueError`` naming what is wrong."""
    try:
        percentiles = [float(p) for p in statistics.get("percentiles", PERCENTILES)]
        low, high = (float(v) for v in statistics["range"])
        dtypes = {str(d) for d in statistics.get("dtypes", [])}
    except (KeyError, TypeError, ValueError, AttributeError):
        percentiles, low, high, dtypes = [], 0.0, 0.0, set()
    if len(percentiles) != 2 or not percentiles[0] < percentiles[1] or not 0.0 <= low < high <= 1.0:
        raise ValueError(
            f"the model's {STATISTICS_KEY} {dict(statistics)!r} are not two percentiles and a range 0 <= low < high "
            "<= 1 (the file was edited or damaged); train the model again, or use --intensity_rule model or "
            "percentile."
        )
    return percentiles, low, high, dtypes


def _matched(image: np.ndarray, statistics: Mapping[str, Any]) -> IntensityScaling:
    """The range whose map to 0..1 puts the image's percentiles onto the training images' (``"matched"``)."""
    percentiles, target_low, target_high, _ = _check_statistics(statistics)
    own = _percentiles(image, percentiles)
    width = (own.high - own.low) / (target_high - target_low)  # image values per unit of the network's input
    low = own.low - target_low * width
    return IntensityScaling("matched", low, low + width)


def header_suffices(
    dtype: np.dtype | str, rule: str, intensity_max: float, statistics: Mapping[str, Any] | None = None
) -> bool:
    """Whether :func:`intensity_scaling` decides an image of this stored type without its pixels (8-bit under
    ``"model"``, and under ``"auto"`` when the model was trained on 8-bit images or records no statistics; integers
    under ``"dtype"``)."""
    dt = np.dtype(dtype)
    if rule in ("auto", "model"):
        trained = rule == "model" or statistics is None or str(dt) in _check_statistics(statistics)[3]
        return dt == np.bool_ or (dt == np.uint8 and intensity_max >= 255 and trained)
    if rule == "dtype":
        return dt == np.bool_ or np.issubdtype(dt, np.integer)
    return False


def intensity_scaling(
    image: np.ndarray | None,
    rule: str,
    intensity_max: float,
    dtype: np.dtype | str | None = None,
    statistics: Mapping[str, Any] | None = None,
) -> IntensityScaling:
    """The scaling ``rule`` gives an image (see the module docstring).

    Args:
        image: the pixel values (any shape); may be ``None`` when the decision needs only the dtype
            (:func:`header_suffices`).
        rule: one of :data:`INTENSITY_RULES`.
        intensity_max: the model's training scaling (``intensity_max`` in the configs).
        dtype: the image's stored type (``image.dtype`` when not given); needed by ``"dtype"`` and by ``"auto"`` with
            ``statistics``.
        statistics: the model's training statistics (:func:`training_statistics`; ``None``: a model that records
            none, ``"auto"`` then keeps the rule of v0.8.0).

    Returns:
        An :class:`IntensityScaling`; ``rule`` is the rule actually applied (``"model"``, ``"matched"`` or
        ``"percentile"`` for ``"auto"``).

    Raises:
        ValueError: the image is refused under ``rule`` (values outside the range the rule allows); the message
            gives the fix. Also when ``image`` is needed but ``None``, and for malformed ``statistics``.
    """
    check_intensity_rule(rule)
    dtype = np.dtype(dtype) if dtype is not None else (image.dtype if image is not None else None)

    def need_image() -> np.ndarray:
        if image is None:
            raise ValueError(f"intensity rule {rule!r} needs the pixel values of a {dtype} image.")
        return image

    if rule == "percentile":
        return _percentiles(need_image())
    if rule == "dtype":
        if dtype is not None and dtype == np.bool_:
            return IntensityScaling("dtype", 0.0, 1.0)
        if dtype is not None and np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            return IntensityScaling("dtype", float(min(info.min, 0)), float(info.max))
        values = need_image()
        low, high = float(np.min(values)), float(np.max(values))
        if low >= 0.0 and high <= 1.0:
            return IntensityScaling("dtype", 0.0, 1.0)
        raise ValueError(
            f"a {dtype} image with values {low:g}..{high:g} has no type range (float images must lie in 0..1 for "
            "intensity_rule 'dtype'); use --intensity_rule auto or percentile."
        )
    # "model" and "auto": the training range, when the values fit in it (under "auto" with statistics: and the
    # image is of a pixel type the model was trained on)
    model = IntensityScaling("model", 0.0, float(intensity_max))
    if dtype is not None and header_suffices(dtype, rule, intensity_max, statistics):
        return model
    values = need_image()
    if rule == "auto" and statistics is not None and str(dtype) not in _check_statistics(statistics)[3]:
        return _matched(values, statistics)
    low, high = float(np.min(values)), float(np.max(values))
    if low >= 0.0 and high <= intensity_max:
        return model
    if rule == "auto":
        return _matched(values, statistics) if statistics is not None else _percentiles(values)
    raise ValueError(
        f"pixel values {low:g}..{high:g} ({dtype}) lie outside the model's range 0..{intensity_max:g} "
        f"(intensity_max) and would be clipped; use --intensity_rule auto (matched to the training images for such "
        f"images), dtype (0..{np.iinfo(dtype).max if dtype is not None and np.issubdtype(dtype, np.integer) else 1}) "
        "or percentile, or --intensity_max if the model was trained on this range."
    )
