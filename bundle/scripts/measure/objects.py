"""The objects of a label map: the connected regions of each chosen class, measured with scikit-image
(``skimage.measure.label`` and ``regionprops_table``), as a table and an instance label map.

Per object: ``id`` (its value in the instance map; unique over the chosen classes, numbered class by class in the
order they were chosen, then in raster order), ``class``, ``class_index``, ``area_px``, ``area_um2``,
``perimeter_px`` (scikit-image's ``perimeter``: the length of the line through the centres of the border pixels,
4-connected, e.g. 36 for a 10 x 10 square, about 2 pi r for a disc), ``perimeter_um`` (square pixels only),
``centroid_y``/``centroid_x`` (row and column, pixels, in the image file's orientation) and ``mean_confidence``
(the mean over its pixels of the maximum softmax probability, as :func:`scripts.transforms.confidence_map`). The µm
columns are empty when the pixel size is unknown, ``mean_confidence`` without a probability map. Objects smaller
than ``min_area_px`` (prediction speckle) are left out.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scripts.atomic import atomic_path
from scripts.data.pixel_size import PixelSize
from skimage.measure import label, regionprops_table

__all__ = ["OBJECT_COLUMNS", "ObjectTable", "measure_objects", "write_csv", "write_instance_map"]

#: Columns of the per-image object table, in order.
OBJECT_COLUMNS = (
    "id",
    "class",
    "class_index",
    "area_px",
    "area_um2",
    "perimeter_px",
    "perimeter_um",
    "centroid_y",
    "centroid_x",
    "mean_confidence",
)


@dataclass
class ObjectTable:
    """The objects of one label map (:func:`measure_objects`).

    Attributes:
        instances: ``(H, W)`` uint32 instance map: 0 outside the chosen classes' objects, else the object's ``id``.
        rows: one dict per object (keys :data:`OBJECT_COLUMNS`; ``None`` where unknown).
        classes: the measured classes, index -> name, in the order chosen.
        image_area_px: the image's pixel count.
        pixel_size: the pixel size used for the µm columns (``None``: unknown).
        per_class: class name -> ``count``, ``area_px``, ``confidence_sum`` (sum of the confidence over the
            class's object pixels; ``None`` without confidence): what the folder summary adds up.
    """

    instances: np.ndarray
    rows: list[dict]
    classes: dict[int, str]
    image_area_px: int
    pixel_size: PixelSize | None = None
    per_class: dict[str, dict] = field(default_factory=dict)


def measure_objects(
    labels: np.ndarray,
    classes: Mapping[int, str],
    confidence: np.ndarray | None = None,
    pixel_size: PixelSize | None = None,
    connectivity: int = 8,
    min_area_px: int = 0,
) -> ObjectTable:
    """Find and measure the connected objects of each class of ``classes`` in ``labels``.

    Args:
        labels: ``(H, W)`` class-index map (a ``_seg`` label map).
        classes: class index -> name, of the classes to measure, in the order their objects are numbered.
        confidence: ``(H, W)`` maximum softmax probability per pixel (``None``: no ``mean_confidence``).
        pixel_size: for the µm columns (``None``: left empty).
        connectivity: 4 or 8: which neighbours join pixels of one class into one object.
        min_area_px: objects of fewer pixels are left out (of the rows, the instance map and the counts).

    Returns:
        An :class:`ObjectTable`.

    Raises:
        ValueError: ``labels`` is not 2D, ``confidence`` has another shape, or a bad ``connectivity``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected a 2D label map (H, W), got shape {labels.shape}.")
    if confidence is not None:
        confidence = np.asarray(confidence, dtype=np.float32)
        if confidence.shape != labels.shape:
            raise ValueError(f"the confidence map has shape {confidence.shape}, the label map {labels.shape}.")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}.")
    if min_area_px < 0:
        raise ValueError(f"min_area_px must be >= 0, got {min_area_px}.")
    properties = ["label", "area", "perimeter", "centroid"] + (["intensity_mean"] if confidence is not None else [])
    px_um2 = pixel_size.area_um2 if pixel_size else None
    px_um = pixel_size.x_nm * 1e-3 if pixel_size and pixel_size.isotropic else None
    instances = np.zeros(labels.shape, np.uint32)
    rows: list[dict] = []
    per_class: dict[str, dict] = {}
    for index, name in classes.items():
        objects, n = label(labels == index, connectivity=1 if connectivity == 4 else 2, return_num=True)
        area_sum, conf_sum = 0, None if confidence is None else 0.0
        if n and min_area_px > 1:  # renumber the kept objects 1..n
            kept = np.flatnonzero(np.bincount(objects.ravel(), minlength=n + 1)[1:] >= min_area_px) + 1
            lut = np.zeros(n + 1, objects.dtype)
            lut[kept] = np.arange(1, kept.size + 1)
            objects, n = lut[objects], int(kept.size)
        if n:
            props = regionprops_table(objects, intensity_image=confidence, properties=properties)
            first = len(rows)
            inside = objects > 0
            instances[inside] = objects[inside] + first
            for k in range(n):
                area = int(props["area"][k])
                mean_conf = float(props["intensity_mean"][k]) if confidence is not None else None
                perimeter = float(props["perimeter"][k])
                rows.append(
                    {
                        "id": first + int(props["label"][k]),
                        "class": name,
                        "class_index": int(index),
                        "area_px": area,
                        "area_um2": area * px_um2 if px_um2 else None,
                        "perimeter_px": perimeter,
                        "perimeter_um": perimeter * px_um if px_um else None,
                        "centroid_y": float(props["centroid-0"][k]),
                        "centroid_x": float(props["centroid-1"][k]),
                        "mean_confidence": mean_conf,
                    }
                )
                area_sum += area
                if conf_sum is not None:
                    conf_sum += mean_conf * area
        per_class[name] = {"count": int(n), "area_px": int(area_sum), "confidence_sum": conf_sum}
    return ObjectTable(instances, rows, dict(classes), int(labels.size), pixel_size, per_class)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_csv(path: str | os.PathLike, columns: Sequence[str], rows: Sequence[Mapping]) -> Path:
    """Write ``rows`` (dicts with ``columns``) as a CSV file, atomically (:mod:`scripts.atomic`): floats with 6
    significant digits, ``None`` as an empty cell."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows([_cell(row.get(c)) for c in columns] for row in rows)
    return path


def write_instance_map(path: str | os.PathLike, instances: np.ndarray, pixel_size: PixelSize | None = None) -> Path:
    """Write an instance map as a zlib-compressed TIFF, atomically: uint16 when the ids fit, else uint32; the pixel
    size (when known) as the TIFF resolution in pixels per centimetre, which Fiji and
    :func:`scripts.data.read_pixel_size` read back."""
    import tifffile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = instances.astype(np.uint16 if instances.max(initial=0) <= np.iinfo(np.uint16).max else np.uint32)
    extra = {}
    if pixel_size is not None:
        extra = {"resolution": (1e7 / pixel_size.x_nm, 1e7 / pixel_size.y_nm), "resolutionunit": "CENTIMETER"}
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, arr, compression="zlib", **extra)
    return path
