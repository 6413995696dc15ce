"""A small synthetic OME-Zarr volume (volume.json's default input), and OME-Zarr writing of any (z, y, x) array."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scripts.atomic import atomic_folder

from .ome_zarr import NGFF_VERSIONS, _create_array, _multiscales, _ngff
from .sources import is_zarr

__all__ = ["ensure_synthetic_volume", "write_ome_zarr"]


def write_ome_zarr(
    path: str | os.PathLike,
    volume: np.ndarray,
    chunks: Sequence[int] | None = None,
    scale: Sequence[float] = (1.0, 1.0, 1.0),
    units: Sequence[str | None] = (None, None, None),
    version: str = "0.4",
) -> Path:
    """Write a ``(z, y, x)`` array as a one-level OME-Zarr image (renamed into place whole); returns ``path``.

    Args:
        chunks: the chunk shape; default: one section, at most 1024 x 1024.
        scale, units: the pixel size and the axes' units (e.g. ``"micrometer"``).
        version: ``"0.4"`` (zarr v2) or ``"0.5"`` (zarr v3).
    """
    import zarr

    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"write_ome_zarr takes a (z, y, x) array, got shape {volume.shape}.")
    zarr_format = NGFF_VERSIONS[version]
    chunks = tuple(chunks) if chunks else (1, min(1024, volume.shape[1]), min(1024, volume.shape[2]))
    path = Path(path)
    with atomic_folder(path) as tmp:
        group = zarr.open_group(store=str(tmp), mode="w", zarr_format=zarr_format)
        array = _create_array(group, "0", volume.shape, chunks, str(volume.dtype), zarr_format, "zyx")
        array[...] = volume
        group.attrs.update(_ngff(version, _multiscales(version, path.name, "zyx", scale, units)))
    return path


def ensure_synthetic_volume(folder: str | os.PathLike, sections: int = 8, size: int = 256, seed: int = 0) -> str:
    """``<folder>/volume.zarr``: ``sections`` synthetic EM-like sections (:func:`scripts.data.synthetic.make_sample`,
    seeds ``seed + i``) as an OME-Zarr 0.4 image, one chunk per section; written only when missing."""
    from scripts.data.synthetic import make_sample

    path = Path(folder) / "volume.zarr"
    if not is_zarr(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        volume = np.stack([make_sample(size, seed + i)[0] for i in range(sections)])
        write_ome_zarr(path, volume, scale=(0.05, 0.0046, 0.0046), units=("micrometer",) * 3)
    return str(path)
