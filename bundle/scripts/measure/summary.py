"""The summary of a folder's measurements: per image and class, and over all images, the object count, the area
fraction, and the areas and the density per µm² when the pixel size is known.

Columns (:data:`SUMMARY_COLUMNS`): ``image`` (the output name; :data:`ALL_IMAGES` for the totals), ``class``,
``count`` (objects), ``area_px`` (their pixels), ``area_fraction`` (``area_px`` / ``image_area_px``),
``image_area_px``, ``area_um2``, ``image_area_um2``, ``count_per_um2`` (``count`` / ``image_area_um2``),
``mean_confidence`` (over the objects' pixels), ``pixel_size_nm`` (``4.6``, or ``4.6 x 5`` for height x width). A
total's µm columns are empty unless every image's pixel size is known.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ALL_IMAGES", "SUMMARY_COLUMNS", "summary_rows"]

#: Columns of the summary CSV, in order.
SUMMARY_COLUMNS = (
    "image",
    "class",
    "count",
    "area_px",
    "area_fraction",
    "image_area_px",
    "area_um2",
    "image_area_um2",
    "count_per_um2",
    "mean_confidence",
    "pixel_size_nm",
)

#: The ``image`` of the rows that add up all images.
ALL_IMAGES = "(all)"


def _row(
    image: str,
    name: str,
    count: int,
    area: int,
    image_area: int,
    area_um2: float | None,
    image_um2: float | None,
    confidence_sum: float | None,
    pixel_size: str | None,
) -> dict:
    return {
        "image": image,
        "class": name,
        "count": count,
        "area_px": area,
        "area_fraction": area / image_area if image_area else None,
        "image_area_px": image_area,
        "area_um2": area_um2,
        "image_area_um2": image_um2,
        "count_per_um2": count / image_um2 if image_um2 else None,
        "mean_confidence": confidence_sum / area if confidence_sum is not None and area else None,
        "pixel_size_nm": pixel_size,
    }


def _um2(pixels: int, pixel_size_nm: Sequence[float] | None) -> float | None:
    return pixels * pixel_size_nm[0] * pixel_size_nm[1] * 1e-6 if pixel_size_nm else None


def _pixel_size_text(pixel_size_nm: Sequence[float] | None) -> str | None:
    if not pixel_size_nm:
        return None
    y, x = pixel_size_nm
    return f"{y:.6g}" if y == x else f"{y:.6g} x {x:.6g}"


def summary_rows(records: Sequence[dict], classes: Sequence[str]) -> list[dict]:
    """The summary's rows: per record (image) and class, then one :data:`ALL_IMAGES` row per class.

    Args:
        records: measured images, each with ``output_name``, ``image_area_px``, ``pixel_size_nm`` (``[y, x]`` or
            ``None``) and ``per_class`` (class name -> ``count``, ``area_px``, ``confidence_sum``), as
            :class:`scripts.measure.ObjectTable` gives them.
        classes: the measured class names, in order.

    Returns:
        Dicts with the keys :data:`SUMMARY_COLUMNS`.
    """
    rows = []
    for r in records:
        size = r.get("pixel_size_nm")
        for name in classes:
            c = r["per_class"].get(name, {"count": 0, "area_px": 0, "confidence_sum": None})
            rows.append(
                _row(
                    r["output_name"],
                    name,
                    c["count"],
                    c["area_px"],
                    r["image_area_px"],
                    _um2(c["area_px"], size),
                    _um2(r["image_area_px"], size),
                    c.get("confidence_sum"),
                    _pixel_size_text(size),
                )
            )
    if records:
        known = all(r.get("pixel_size_nm") for r in records)
        sizes = {_pixel_size_text(r.get("pixel_size_nm")) for r in records}
        size_text = next(iter(sizes)) if len(sizes) == 1 else None
        for name in classes:
            per = [(r["per_class"].get(name, {}), r.get("pixel_size_nm")) for r in records]
            conf = [c.get("confidence_sum") for c, _ in per]
            rows.append(
                _row(
                    ALL_IMAGES,
                    name,
                    sum(c.get("count", 0) for c, _ in per),
                    sum(c.get("area_px", 0) for c, _ in per),
                    sum(r["image_area_px"] for r in records),
                    sum(_um2(c.get("area_px", 0), s) for c, s in per) if known else None,
                    sum(_um2(r["image_area_px"], r["pixel_size_nm"]) for r in records) if known else None,
                    sum(conf) if all(v is not None for v in conf) else None,
                    size_text,
                )
            )
    return rows
