"""2D image reading and writing for the bundle's data layout.

The bundle stores every image and label as a 2D PNG: images ``uint8`` grey ``(H, W)`` or RGB ``(H, W, 3)``,
labels ``uint8`` class-index maps ``(H, W)``. :func:`read_image` also reads the formats a user brings
(PNG, JPEG, TIFF, NIfTI) and returns them in the same ``(H, W)`` / ``(H, W, 3)`` row-major orientation, so a
NIfTI file and the PNG written from it look the same in an image viewer and load the same way in MONAI.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

__all__ = ["SUPPORTED_EXTENSIONS", "has_alpha", "image_extension", "read_image", "write_png", "to_uint8", "file_stem"]

logger = logging.getLogger(__name__)

#: File name endings :func:`read_image` understands (lower case).
SUPPORTED_EXTENSIONS: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".ome.tif",
    ".ome.tiff",
    ".nii",
    ".nii.gz",
)


def image_extension(path: str | os.PathLike) -> str | None:
    """Return the supported extension of ``path`` (lower case, ``".nii.gz"`` and ``".ome.tif"`` as one), or ``None``."""
    name = Path(path).name.lower()
    for ext in sorted(SUPPORTED_EXTENSIONS, key=len, reverse=True):
        if name.endswith(ext):
            return ext
    return None


def file_stem(path: str | os.PathLike) -> str:
    """File name without its image extension (``"a.nii.gz"`` -> ``"a"``, ``"b.png"`` -> ``"b"``)."""
    name = Path(path).name
    ext = image_extension(path)
    return name[: -len(ext)] if ext else Path(path).stem


def _to_2d(arr: np.ndarray, path: Path) -> np.ndarray:
    """Squeeze singleton axes and return ``(H, W)`` or ``(H, W, 3)`` (alpha dropped); raise for other channels."""
    arr = np.squeeze(arr)
    if arr.ndim == 3 and arr.shape[-1] == 4:
        logger.debug("%s: dropping the alpha channel", path)
        arr = arr[..., :3]
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3):
        return arr
    raise ValueError(
        f"{path}: expected a 2D image, grey (H, W) or RGB (H, W, 3), but it holds an array of shape "
        f"{tuple(arr.shape)} (a multi-channel image); save it as grey or RGB."
    )


def _one_section(path: Path) -> np.ndarray:
    """The one 2D image of a TIFF/NIfTI file (:mod:`scripts.data.stacks`: pages and axes tell sections from
    channels); a stack of sections raises, naming the route for stacks."""
    from .stacks import open_stack

    with open_stack(path) as volume:
        if volume.sections > 1:
            raise ValueError(
                f"{path}: a stack of {volume.sections} sections (axes {volume.axes}), not one 2D image; inference "
                "takes the stack as it is, and `python -m scripts.data.prepare folders --images <stack> --labels "
                "<label stack>` splits it into 2D sections for training."
            )
        return volume.section(0)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read one 2D image.

    Args:
        path: a ``.png``, ``.jpg``/``.jpeg``, ``.tif``/``.tiff``, ``.nii`` or ``.nii.gz`` file holding one 2D image.

    Returns:
        The pixel array in its stored dtype: grey ``(H, W)`` or RGB ``(H, W, 3)`` (an alpha channel is dropped,
        singleton axes are squeezed). Palette PNGs return their palette indices (the usual encoding of label maps),
        1-bit PNGs return 0/255. NIfTI arrays, stored ``(x, y)``, are transposed to ``(y, x) = (H, W)``.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: for an unsupported extension, an unreadable/corrupt file, or an array that is not 2D
            (a 3D volume, a multi-section stack). The message names the file.
    """
    path = Path(path)
    ext = image_extension(path)
    if ext is None:
        raise ValueError(f"{path}: unsupported image file extension; use one of {', '.join(SUPPORTED_EXTENSIONS)}.")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found.")
    try:
        if ext in (".png", ".jpg", ".jpeg"):
            from PIL import Image

            with Image.open(path) as img:
                img.load()
                if img.mode == "1":
                    img = img.convert("L")
                elif img.mode in ("LA", "La"):
                    img = img.convert("L")
                elif img.mode in ("RGBA", "RGBa", "CMYK", "YCbCr", "LAB", "HSV"):
                    img = img.convert("RGB")
                arr = np.asarray(img)
        else:
            arr = _one_section(path)
    except ValueError as e:
        if str(e).startswith(str(path)):  # a message about this file already (a stack, an ambiguous layout)
            raise
        raise ValueError(f"{path}: cannot read this {ext} file (corrupt, truncated or not a {ext} image): {e}") from e
    except Exception as e:  # any decoder failure means the file cannot be used; say which file
        raise ValueError(f"{path}: cannot read this {ext} file (corrupt, truncated or not a {ext} image): {e}") from e
    arr = np.asarray(arr)
    if arr.size == 0:
        raise ValueError(f"{path}: cannot read this {ext} file: it holds no pixel data (corrupt or truncated).")
    return _to_2d(arr, path)


def has_alpha(path: str | os.PathLike) -> bool:
    """Whether a PNG stores an alpha (transparency) channel (RGBA or grey + alpha), read from its header.

    :func:`read_image` drops alpha, but MONAI's ``LoadImage`` (the training loader) keeps a PNG's alpha as an extra
    image channel, so the integrity check reports such files. (For an RGBA TIFF it returns 3 channels; JPEG and NIfTI
    have no alpha.) A file that cannot be opened gives ``False``: reading it reports the error.

    Args:
        path: an image file.

    Returns:
        ``True`` for an RGBA/LA PNG, ``False`` otherwise.
    """
    if image_extension(path) != ".png":
        return False
    try:
        from PIL import Image

        with Image.open(path) as img:
            return img.mode in ("RGBA", "RGBa", "LA", "La")
    except Exception:  # noqa: BLE001 - a file that cannot be opened is reported by read_image
        return False


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Convert an image to ``uint8`` for the bundle's PNG layout.

    ``uint8`` passes through unchanged; ``bool`` becomes 0/255; any other integer image whose values already
    lie in 0..255 is cast; otherwise (16-bit, float) the image is rescaled linearly from its own min..max to
    0..255 (a constant image becomes 0).

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` array.

    Returns:
        ``uint8`` array of the same shape.
    """
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    if np.issubdtype(image.dtype, np.integer) and image.size and image.min() >= 0 and image.max() <= 255:
        return image.astype(np.uint8)
    image = image.astype(np.float64)
    if not np.all(np.isfinite(image)):
        raise ValueError("image holds NaN or infinite values; clean it before converting to uint8.")
    lo, hi = float(image.min()), float(image.max())
    if hi <= lo:
        return np.zeros(image.shape, np.uint8)
    return np.round((image - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def write_png(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a 2D grey ``(H, W)`` or RGB ``(H, W, 3)`` array as a PNG (parent folders are created).

    Args:
        path: output file; must end with ``.png``.
        array: ``uint8`` (or ``bool``, or an integer array with values in 0..255; ``uint16`` grey is written as
            a 16-bit PNG).

    Returns:
        ``Path(path)``.

    Raises:
        ValueError: for a non-``.png`` path, a shape that is not 2D grey/RGB, or values that do not fit.
    """
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: write_png writes .png files only.")
    array = np.asarray(array)
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)):
        raise ValueError(f"{path}: expected a (H, W) or (H, W, 3) array, got shape {tuple(array.shape)}.")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype == np.uint16 and array.ndim == 2:
        img = Image.fromarray(array)
    elif array.dtype == np.uint8:
        img = Image.fromarray(array)
    elif np.issubdtype(array.dtype, np.integer) and array.size and array.min() >= 0 and array.max() <= 255:
        img = Image.fromarray(array.astype(np.uint8))
    else:
        raise ValueError(
            f"{path}: cannot store a {array.dtype} array with values outside 0..255 as an 8-bit PNG; "
            "convert it first (e.g. scripts.data.to_uint8)."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
