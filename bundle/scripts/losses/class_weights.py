"""Class-balancing weights from the label histogram of a data set."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import LoadImage
from monai.utils import convert_to_numpy
from scripts.checks import check_option, check_positive_int

__all__ = ["compute_class_weights", "CLASS_WEIGHT_MODES"]

CLASS_WEIGHT_MODES = ("inverse", "median", "none")


def _load(item: Any, index: int, loader: LoadImage) -> tuple[np.ndarray, str]:
    """Return the label array of one ``labels`` item and a name for it in error messages."""
    if isinstance(item, dict):
        if "label" not in item:
            raise ValueError(f"labels[{index}] is a dict without a 'label' key (keys: {sorted(item)}).")
        item = item["label"]
    if isinstance(item, (str, os.PathLike)):
        return convert_to_numpy(loader(item)), str(item)
    if isinstance(item, (np.ndarray, torch.Tensor)):
        return convert_to_numpy(item), f"labels[{index}]"
    raise TypeError(
        f"labels[{index}] must be a label file path, a dict with a 'label' key, or an array, got {type(item).__name__}."
    )


def compute_class_weights(
    labels: Sequence[Any] | str | os.PathLike | np.ndarray | torch.Tensor,
    num_classes: int,
    mode: str = "inverse",
    absent_weight: float | None = None,
) -> list[float]:
    """Class weights from the pixel-class histogram of label maps, for a class-weighted loss.

    With ``n_c`` the number of pixels of class ``c`` over all labels, ``N = Σ_c n_c`` and ``C = num_classes``:

    - ``"inverse"``: ``w_c = N / (C · n_c)``: every class then carries the same total weight ``N / C``, a
      perfectly balanced histogram gives all 1, and the pixel-average weight is 1 when every class occurs;
    - ``"median"``: median frequency balancing (Eigen & Fergus, ICCV 2015): ``f_c = n_c / N_c``, where
      ``N_c`` is the pixel count of the label maps in which class ``c`` occurs, and
      ``w_c = median_c(f_c) / f_c`` (median over the classes that occur);
    - ``"none"``: all weights 1 (``absent_weight`` is not used).

    A class that occurs in no label map gets ``absent_weight``; by default (``None``) the largest weight of the
    classes that occur, i.e. it is treated as the rarest class (it never weighs a training pixel of this data,
    but keeps a finite, sensible weight for a region loss or other data).

    Args:
        labels: label maps holding class indices ``0 .. num_classes-1``: a list of label file paths (read with
            MONAI ``LoadImage(image_only=True)``), of datalist dicts with a ``"label"`` key (a path or an array),
            or of arrays/tensors; a single path or array is accepted too.
        num_classes: number of classes ``C``.
        mode: ``"inverse"``, ``"median"`` or ``"none"``.
        absent_weight: the weight of classes absent from all labels, a finite number no less than 0; ``None``:
            the largest weight of the present classes.

    Returns:
        ``num_classes`` floats, a plain list so that configs can pass it as a loss ``weight``, e.g.
        ``"$scripts.losses.compute_class_weights(@train_datalist, @num_classes)"``.

    Raises:
        ValueError: when ``num_classes < 1``, ``mode`` is unknown, ``absent_weight`` is negative or not finite,
            ``labels`` is empty or holds no pixel, or a label holds a value outside ``[0, num_classes)`` or a
            non-integer value (the message names the file).
        TypeError: when an item of ``labels`` is neither a path, a dict nor an array.
    """
    check_positive_int("num_classes", num_classes)
    check_option("mode", mode, CLASS_WEIGHT_MODES)
    if absent_weight is not None and (not np.isfinite(absent_weight) or absent_weight < 0):
        raise ValueError(f"`absent_weight` must be None or a finite number no less than 0, got {absent_weight!r}.")
    if isinstance(labels, (str, os.PathLike, np.ndarray, torch.Tensor, dict)):
        labels = [labels]
    if len(labels) == 0:
        raise ValueError("`labels` is empty: give at least one label map (path, datalist dict or array).")

    loader = LoadImage(image_only=True)
    counts = np.zeros(num_classes, dtype=np.float64)
    present_pixels = np.zeros(num_classes, dtype=np.float64)  # N_c of median frequency balancing
    for i, item in enumerate(labels):
        arr, name = _load(item, i, loader)
        flat = arr.ravel()
        if flat.size == 0:
            continue
        if not np.issubdtype(flat.dtype, np.integer):
            if not np.all(np.isfinite(flat)) or np.any(flat != np.round(flat)):
                raise ValueError(f"{name}: label values must be whole class indices, found non-integer values.")
        lo, hi = flat.min(), flat.max()
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{name}: label values must lie in [0, {num_classes}) but range over [{lo}, {hi}]. "
                "Convert grey-coded labels to class indices first (see scripts.data) or check num_classes."
            )
        image_counts = np.bincount(flat.astype(np.int64), minlength=num_classes)
        counts += image_counts
        present_pixels[image_counts > 0] += flat.size
    if counts.sum() == 0:
        raise ValueError("`labels` hold no pixel; cannot compute class frequencies.")

    present = counts > 0
    weights = np.ones(num_classes, dtype=np.float64)
    if mode == "inverse":
        weights[present] = counts.sum() / (num_classes * counts[present])
    elif mode == "median":
        freq = counts[present] / present_pixels[present]
        weights[present] = np.median(freq) / freq
    if mode != "none" and not present.all():
        weights[~present] = weights[present].max() if absent_weight is None else absent_weight
    return [float(w) for w in weights]
