"""A cheap look at an image file: its header (size, channels, pixel type, sections) as the inference will see it, or
why it cannot be used (missing, unreadable, unsupported, neither one 2D image nor one stack of 2D sections); the
inference pre-flight reads it for every input before the model loads (:meth:`scripts.workflows.InferencePlan.prepare`).
TIFF and NIfTI files are looked at through :mod:`scripts.data.stacks`, which tells sections from channels by the
file's structure (pages, axes, samples per pixel)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .io import image_extension
from .stacks import StackError, open_stack

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
    """What a cheap look at an image file tells: ``size`` (H, W) of a section, ``channels``, ``dtype``, ``sections``
    (1: a 2D image; more: a stack, :mod:`scripts.data.stacks`), ``axes`` as read (TIFF/NIfTI), ``hint`` (how to
    re-save a file whose channels may be sections); ``problem`` is set (and the rest may be empty) when the file
    cannot be used."""

    size: tuple[int, ...] = ()
    channels: int = 0
    dtype: str = ""
    problem: str | None = None
    sections: int = 1
    axes: str = ""
    hint: str | None = None


def _not_2d(path: Path, shape) -> str:
    return f"{path}: holds {shape[0]} frames of {list(shape[1:])}, not one 2D image; save them as a TIFF stack."


def read_header(path: str | os.PathLike) -> ImageHeader:
    """Read an image's header only (PNG/JPEG via PIL, TIFF via tifffile, NIfTI via nibabel): size, channels, pixel
    type and sections, or the problem (missing, unreadable, unsupported, not one 2D image or stack).

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
        with open_stack(path) as volume:
            return ImageHeader(
                tuple(volume.size),
                volume.channels,
                volume.dtype,
                sections=volume.sections,
                axes=volume.axes,
                hint=volume.hint,
            )
    except StackError as e:
        return ImageHeader(problem=str(e))
    except Exception as e:  # noqa: BLE001 - any decoder failure: the file cannot be used
        return ImageHeader(
            problem=f"{path}: cannot read this {ext} file (corrupt, truncated or not a {ext} image): {e}."
        )
