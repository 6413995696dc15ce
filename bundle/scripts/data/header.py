"""A cheap look at an image file: its header (size, channels, pixel type) as MONAI's loader will see it, or why it
cannot be used (missing, unreadable, unsupported, not one 2D image); the inference pre-flight reads it for every input
before the model loads (:meth:`scripts.workflows.InferencePlan.prepare`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .io import image_extension

__all__ = ["ImageHeader", "read_header"]

_PIL_MODES = {  # PIL mode -> (channels as MONAI's loader returns them, pixel type)
    "1": (1, "bool"),
    "L": (1, "uint8"),
    "P": (1, "uint8"),
    "LA": (2, "uint8"),
    "La": (2, "uint8"),
    "RGB": (3, "uint8"),
    "YCbCr": (3, "uint8"),
    "LAB": (3, "uint8"),
    "HSV": (3, "uint8"),
    "RGBA": (4, "uint8"),
    "RGBa": (4, "uint8"),
    "CMYK": (4, "uint8"),
    "I;16": (1, "uint16"),
    "I;16B": (1, "uint16"),
    "I;16L": (1, "uint16"),
    "I;16N": (1, "uint16"),
    "I": (1, "int32"),
    "F": (1, "float32"),
}


@dataclass(frozen=True)
class ImageHeader:
    """What a cheap look at an image file tells: ``size`` (H, W), ``channels``, ``dtype``; ``problem`` is set (and the
    rest may be empty) when the file is not one readable 2D image."""

    size: tuple[int, ...] = ()
    channels: int = 0
    dtype: str = ""
    problem: str | None = None


def _not_2d(path: Path, shape) -> str:
    return (
        f"{path}: holds an array of shape {list(shape)} (a stack of sections, a 3D volume or a multi-channel image), "
        "not one 2D image; save each section as its own 2D file (grey or RGB)."
    )


def read_header(path: str | os.PathLike) -> ImageHeader:
    """Read an image's header only (PNG/JPEG via PIL, TIFF via tifffile, NIfTI via nibabel): size, channels and pixel
    type as MONAI's ``LoadImage`` will see them, or the problem (missing, unreadable, unsupported, not 2D).

    Args:
        path: the image file.

    Returns:
        An :class:`ImageHeader`.
    """
    path = Path(path)
    ext = image_extension(path)
    if ext is None:
        return ImageHeader(problem=f"{path}: unsupported file type; use PNG, JPEG, TIFF or NIfTI.")
    if not path.is_file():
        return ImageHeader(problem=f"{path}: file not found.")
    try:
        if ext in (".png", ".jpg", ".jpeg"):
            from PIL import Image

            with Image.open(path) as img:
                if getattr(img, "n_frames", 1) > 1:
                    return ImageHeader(problem=_not_2d(path, [img.n_frames, img.size[1], img.size[0]]))
                if img.mode not in _PIL_MODES:
                    return ImageHeader(problem=f"{path}: unsupported pixel mode {img.mode!r}; save it as grey or RGB.")
                channels, dtype = _PIL_MODES[img.mode]
                return ImageHeader((img.size[1], img.size[0]), channels, dtype)
        if ext in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                shape, axes, dtype = tuple(series.shape), series.axes, str(series.dtype)
            kept = [(n, a) for n, a in zip(shape, axes) if n > 1 or a in "YX"]
            spatial = [n for n, a in kept if a in "YX"]
            other = [(n, a) for n, a in kept if a not in "YX"]
            if len(spatial) != 2 or len(other) > 1 or (other and (other[0][1] not in "SC" or other[0][0] > 4)):
                return ImageHeader(problem=_not_2d(path, shape))
            return ImageHeader(tuple(spatial), other[0][0] if other else 1, dtype)
        import nibabel as nib

        header = nib.load(str(path)).header
        shape = [n for n in header.get_data_shape() if n > 1]
        if len(shape) == 2 or (len(shape) == 3 and shape[-1] in (3, 4)):
            return ImageHeader((shape[1], shape[0]), shape[2] if len(shape) == 3 else 1, str(header.get_data_dtype()))
        return ImageHeader(problem=_not_2d(path, header.get_data_shape()))
    except Exception as e:  # noqa: BLE001 - any decoder failure: the file cannot be used
        return ImageHeader(
            problem=f"{path}: cannot read this {ext} file (corrupt, truncated or not a {ext} image): {e}."
        )
