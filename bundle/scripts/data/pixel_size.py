"""The physical size of an image's pixels, from its file's metadata, for measurements in µm
(:class:`scripts.workflows.FolderMeasurement`).

Read without the pixels: TIFF (OME-XML ``PhysicalSizeX/Y`` with their units, else the ImageJ ``unit`` of the
description with the X/Y resolution tags, else the resolution tags in centimetres or inches), PNG (the ``pHYs``
chunk, pixels per metre), JPEG (the JFIF density) and NIfTI (``pixdim`` with spatial units). A file without a
physical unit (TIFF ``ResolutionUnit`` none, NIfTI units unknown, no ``pHYs``) has no pixel size. A pixel size above
:data:`MAX_PIXEL_SIZE_NM` (10 µm) is a screen or print setting that many programs write by default (72 dpi =
353 µm), not the microscope's, and is ignored: give ``--pixel_size_nm`` for such files.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from .io import image_extension

__all__ = ["MAX_PIXEL_SIZE_NM", "PixelSize", "read_pixel_size", "unit_nm"]

logger = logging.getLogger(__name__)

#: Metadata pixel sizes above this (nm) are print/screen resolutions (2540 dpi and less), ignored.
MAX_PIXEL_SIZE_NM = 10_000.0

#: Length unit -> nanometres (OME, ImageJ and NIfTI spellings, lower case).
_NM_PER_UNIT = {
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometre": 1.0,
    "µm": 1e3,
    "μm": 1e3,
    "um": 1e3,
    "micron": 1e3,
    "microns": 1e3,
    "micrometer": 1e3,
    "micrometre": 1e3,
    "\\u00b5m": 1e3,
    "mm": 1e6,
    "millimeter": 1e6,
    "cm": 1e7,
    "centimeter": 1e7,
    "m": 1e9,
    "meter": 1e9,
    "inch": 2.54e7,
    "in": 2.54e7,
    "å": 0.1,
    "angstrom": 0.1,
}


@dataclass(frozen=True)
class PixelSize:
    """A pixel's height and width in nanometres and where they come from (``"--pixel_size_nm"``,
    ``"OME-TIFF"``, ``"ImageJ TIFF"``, ``"TIFF resolution"``, ``"PNG pHYs"``, ``"JPEG density"``, ``"NIfTI"``)."""

    y_nm: float
    x_nm: float
    source: str

    @property
    def isotropic(self) -> bool:
        """Square pixels (within 0.1%): perimeters convert to µm only then."""
        return math.isclose(self.y_nm, self.x_nm, rel_tol=1e-3)

    @property
    def area_um2(self) -> float:
        """One pixel's area in µm²."""
        return self.y_nm * self.x_nm * 1e-6

    def as_setting(self) -> list[float]:
        """``[y_nm, x_nm]``, as recorded in the measurement report."""
        return [self.y_nm, self.x_nm]


def unit_nm(length: float, unit: str) -> float | None:
    """``length`` in ``unit`` (OME, ImageJ or NIfTI spelling) as nanometres; ``None`` for an unknown unit or a
    length that is not a positive number (a section spacing of the metadata)."""
    scale = _NM_PER_UNIT.get(unit.strip().lower())
    if scale is None or not math.isfinite(length) or length <= 0:
        return None
    return scale * length


def _nm(per_unit: float, unit: str) -> float | None:
    """Pixel size in nm from a resolution in pixels per ``unit`` (``None`` for an unknown unit or a bad value)."""
    scale = _NM_PER_UNIT.get(unit.strip().lower())
    if scale is None or not per_unit or not math.isfinite(per_unit) or per_unit <= 0:
        return None
    return scale / per_unit


def _size(y_nm: float | None, x_nm: float | None, source: str, path: Path) -> PixelSize | None:
    if y_nm is None or x_nm is None or not all(math.isfinite(v) and v > 0 for v in (y_nm, x_nm)):
        return None
    if max(y_nm, x_nm) > MAX_PIXEL_SIZE_NM:
        logger.debug("%s: %s pixel size %.4g x %.4g nm is a print/screen setting; ignored", path, source, y_nm, x_nm)
        return None
    return PixelSize(float(f"{y_nm:.6g}"), float(f"{x_nm:.6g}"), source)  # TIFF rationals: 4.6 not 4.6000001


def _rational(tag) -> float | None:
    value = getattr(tag, "value", None)
    if isinstance(value, tuple) and len(value) == 2:
        return value[0] / value[1] if value[1] else None
    return float(value) if isinstance(value, (int, float)) else None


def _ome(xml: str, path: Path) -> PixelSize | None:
    root = ElementTree.fromstring(xml)
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None

    def one(axis: str) -> float | None:
        value = pixels.get(f"PhysicalSize{axis}")
        if value is None:
            return None
        return _nm(1.0 / float(value), pixels.get(f"PhysicalSize{axis}Unit", "µm"))

    return _size(one("Y"), one("X"), "OME-TIFF", path)


def _tiff(path: Path) -> PixelSize | None:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if tif.ome_metadata:
            size = _ome(tif.ome_metadata, path)
            if size is not None:
                return size
        tags = tif.pages[0].tags
        xres, yres = _rational(tags.get("XResolution")), _rational(tags.get("YResolution"))
        unit_tag = tags.get("ResolutionUnit")
        resolution_unit = int(unit_tag.value) if unit_tag is not None else 2  # TIFF's default: inch
        imagej = tif.imagej_metadata or {}
    if xres is None or yres is None:
        return None
    if imagej.get("unit"):  # ImageJ: resolution in pixels per its calibration unit
        unit = re.sub(r"\s+", "", str(imagej["unit"]))
        return _size(_nm(yres, unit), _nm(xres, unit), "ImageJ TIFF", path)
    unit = {2: "inch", 3: "cm"}.get(resolution_unit)
    return _size(_nm(yres, unit), _nm(xres, unit), "TIFF resolution", path) if unit else None


def _pil(path: Path, source: str) -> PixelSize | None:
    from PIL import Image

    with Image.open(path) as img:
        dpi = img.info.get("dpi")  # PIL converts PNG pHYs (pixels per metre) and JFIF density to dots per inch
    if not dpi or len(dpi) != 2:
        return None
    return _size(_nm(float(dpi[1]), "inch"), _nm(float(dpi[0]), "inch"), source, path)


def _nifti(path: Path) -> PixelSize | None:
    import nibabel as nib

    header = nib.load(str(path)).header
    unit = header.get_xyzt_units()[0]
    zooms = header.get_zooms()
    if unit == "unknown" or len(zooms) < 2:
        return None
    # stored (x, y); scripts.data.read_image transposes to (H, W) = (y, x)
    return _size(_nm(1.0 / zooms[1], unit), _nm(1.0 / zooms[0], unit), "NIfTI", path)


def read_pixel_size(path: str | os.PathLike) -> PixelSize | None:
    """The pixel size the file's metadata records (rules in the module docstring), or ``None``.

    Args:
        path: an image file (PNG, JPEG, TIFF, NIfTI).

    Returns:
        A :class:`PixelSize` in the image's (H, W) orientation, or ``None`` when the file records none (or a print
        resolution), is missing or cannot be read.
    """
    path = Path(path)
    ext = image_extension(path)
    try:
        if ext in (".tif", ".tiff", ".ome.tif", ".ome.tiff"):
            return _tiff(path)
        if ext == ".png":
            return _pil(path, "PNG pHYs")
        if ext in (".jpg", ".jpeg"):
            return _pil(path, "JPEG density")
        if ext in (".nii", ".nii.gz"):
            return _nifti(path)
    except Exception as e:  # noqa: BLE001 - unreadable metadata: no pixel size, said at debug level
        logger.debug("%s: cannot read the pixel size (%s)", path, e)
    return None
