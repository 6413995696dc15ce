"""How an image's pixel values are scaled to the network's 0..1 input range: the inference ``intensity_rule``.

The bundle's models are trained on images divided by ``intensity_max`` (255 for 8-bit data) and clipped at 1.
Inference applies one of these rules per image, and says which it used (log and ``inference_report.json``):

- ``"auto"`` (default): the model's range ``0..intensity_max`` when the image's values fit in it (every 8-bit image
  with ``intensity_max=255``: exactly the training scaling), otherwise the image's own 0.5 and 99.5 percentiles
  (``"percentile"``), with a warning naming the file. Nothing is clipped silently.
- ``"model"``: always ``0..intensity_max``; an image with values outside it is refused (reported, not predicted).
- ``"dtype"``: ``0..`` the largest value of the image's integer type (``65535`` for ``uint16``, ``255`` for
  ``uint8``); float images must lie in ``0..1`` (that range is used), otherwise they are refused.
- ``"percentile"``: every image from its own 0.5 and 99.5 percentiles to 0..1 (robust to any bit depth and
  exposure, but 8-bit images then differ from the training scaling).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["INTENSITY_RULES", "PERCENTILES", "IntensityScaling", "check_intensity_rule", "intensity_scaling"]

#: The accepted values of ``intensity_rule``.
INTENSITY_RULES: tuple[str, ...] = ("auto", "model", "dtype", "percentile")
#: Lower and upper percentile of the ``"percentile"`` rule.
PERCENTILES: tuple[float, float] = (0.5, 99.5)


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


def _percentiles(image: np.ndarray) -> IntensityScaling:
    low, high = (float(v) for v in np.percentile(image, PERCENTILES))
    if high <= low:  # a (nearly) constant image: map its value to 0
        high = low + 1.0
    return IntensityScaling("percentile", low, high)


def intensity_scaling(
    image: np.ndarray | None, rule: str, intensity_max: float, dtype: np.dtype | str | None = None
) -> IntensityScaling:
    """The scaling ``rule`` gives an image (see the module docstring).

    Args:
        image: the pixel values (any shape); may be ``None`` when the decision needs only the dtype (an 8-bit image
            under ``"auto"``/``"model"`` with ``intensity_max >= 255``, an integer image under ``"dtype"``).
        rule: one of :data:`INTENSITY_RULES`.
        intensity_max: the model's training scaling (``intensity_max`` in the configs).
        dtype: the image's stored type (``image.dtype`` when not given); needed by ``"dtype"``.

    Returns:
        An :class:`IntensityScaling`; ``rule`` is the rule actually applied (``"model"`` or ``"percentile"`` for
        ``"auto"``).

    Raises:
        ValueError: the image is refused under ``rule`` (values outside the range the rule allows); the message
            gives the fix. Also when ``image`` is needed but ``None``.
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
    # "model" and "auto": the training range, when the values fit in it
    model = IntensityScaling("model", 0.0, float(intensity_max))
    if dtype is not None and (dtype == np.bool_ or (dtype == np.uint8 and intensity_max >= 255)):
        return model
    values = need_image()
    low, high = float(np.min(values)), float(np.max(values))
    if low >= 0.0 and high <= intensity_max:
        return model
    if rule == "auto":
        return _percentiles(values)
    raise ValueError(
        f"pixel values {low:g}..{high:g} ({dtype}) lie outside the model's range 0..{intensity_max:g} "
        f"(intensity_max) and would be clipped; use --intensity_rule auto (percentiles for such images), dtype "
        f"(0..{np.iinfo(dtype).max if dtype is not None and np.issubdtype(dtype, np.integer) else 1}) or "
        "percentile, or --intensity_max if the model was trained on this range."
    )
