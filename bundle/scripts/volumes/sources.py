"""Volumes read lazily, a block of sections at a time: OME-Zarr (NGFF 0.4 and 0.5), plain zarr arrays, HDF5, and
the stacks of :mod:`scripts.data.stacks` (multi-page TIFF, ImageJ hyperstack, OME-TIFF, 3-D NIfTI).

:func:`open_volume` looks at a volume's metadata only (shape, pixel type, chunks, pixel size); the pixels are read by
:meth:`VolumeSource.read`, which asks the store for the chunks that hold the requested sections and nothing else
(zarr and h5py both read a slice chunk by chunk), so a volume larger than memory is never loaded whole. A source is
cheap to pickle (its path and key): each Dask worker opens the store itself on its first read.

Layouts: an OME-Zarr image ``(t, c, z, y, x)`` with any of ``t`` (size 1) and ``c`` (the model's channels) and its
full-resolution level (``datasets[0]``, or ``key`` naming a level); a zarr array or HDF5 dataset ``(z, y, x)``
(``key``: the array's path inside a zarr group or HDF5 file; default: the only 3-D one); a stack file's sections
(page by page: :class:`scripts.data.stacks.StackSource`, the same reader as the single-process route), its pixel size
and section spacing from the file's metadata. Sections are the ``z`` axis.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scripts.data.stacks import STACK_EXTENSIONS
from scripts.errors import UserError

__all__ = ["HDF5_EXTENSIONS", "STACK_KINDS", "VolumeError", "VolumeSource", "is_zarr", "ngff_attrs", "open_volume"]

#: File name endings read as HDF5.
HDF5_EXTENSIONS: tuple[str, ...] = (".h5", ".hdf5", ".hdf", ".he5")
#: The kinds of a stack file's source (:attr:`scripts.data.stacks.StackSource.format`).
STACK_KINDS: tuple[str, ...] = ("tiff", "imagej", "ome", "nifti")


class VolumeError(UserError, ValueError):
    """A volume (input or output) that cannot be used as asked: one line naming the path and the fix."""


def is_zarr(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zarr group or array (v2 ``.zgroup``/``.zarray`` or v3 ``zarr.json``)."""
    p = Path(path)
    return p.is_dir() and any((p / name).is_file() for name in ("zarr.json", ".zgroup", ".zarray"))


def ngff_attrs(attrs: Mapping[str, Any]) -> tuple[dict, str | None]:
    """The OME-NGFF attributes of a zarr node and their version: NGFF 0.5 keeps them under ``"ome"``
    (``{"ome": {"version": "0.5", ...}}``), 0.4 and older at the top (the version inside ``multiscales``)."""
    if isinstance(attrs.get("ome"), Mapping):
        ome = dict(attrs["ome"])
        return ome, str(ome.get("version")) if ome.get("version") else None
    ome = dict(attrs)
    multiscales = ome.get("multiscales") or [{}]
    version = multiscales[0].get("version") if isinstance(multiscales[0], Mapping) else None
    return ome, str(version) if version else None


@dataclass
class VolumeSource:
    """A volume's metadata and a lazy reader of its sections (see the module docstring).

    Attributes:
        path, key: where it is (``key``: the array inside the zarr group or HDF5 file).
        kind: ``"ome-zarr"``, ``"zarr"``, ``"hdf5"``, or a stack file's format (:data:`STACK_KINDS`).
        shape: ``(z, y, x)``; channels: the ``c`` axis's size (1 without one).
        dtype: the stored pixel type (the intensity rule's input, as for a 2-D file).
        chunk_sections: the store's chunk size along ``z`` (1 for a contiguous HDF5 dataset).
        scale, translation, units: the pixel size and the origin ``(z, y, x)`` (OME-Zarr coordinate
            transformations; an HDF5 file's ``element_size_um``), and each axis's unit (``None`` when unknown).
        ngff_version: the OME-Zarr version (``None`` for other kinds).
        index: how a section ``z`` is taken from the stored array: the stored axes' names (e.g. ``"tczyx"``).
    """

    path: str
    key: str | None
    kind: str
    shape: tuple[int, int, int]
    channels: int
    dtype: str
    chunk_sections: int
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    units: tuple[str | None, str | None, str | None] = (None, None, None)
    ngff_version: str | None = None
    axes: str = "zyx"
    _array: Any = field(default=None, repr=False, compare=False)
    _file: Any = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_array"] = state["_file"] = None  # each process opens the store itself
        return state

    @property
    def array(self) -> Any:
        """The stored array (a zarr array, an h5py dataset, or a stack file's :class:`StackSource`), opened
        read-only on first use in this process."""
        if self._array is None:
            if self.kind in STACK_KINDS:
                from scripts.data.stacks import open_stack

                self._array = self._file = open_stack(self.path)
            elif self.kind == "hdf5":
                import h5py

                self._file = h5py.File(self.path, "r")
                self._array = self._file[self.key]
            else:
                import zarr

                self._array = zarr.open_array(store=_array_path(self.path, self.key), mode="r")
        return self._array

    def read(self, start: int, stop: int) -> np.ndarray:
        """Sections ``start..stop-1`` as ``(n, y, x)`` or, with a ``c`` axis, ``(n, c, y, x)``, in the stored pixel
        type; only the chunks (a stack file: the pages) holding them are read."""
        if self.kind in STACK_KINDS:
            block = np.stack([self.array.section(k) for k in range(start, stop)])
            return np.moveaxis(block, -1, 1) if block.ndim == 4 else block  # (n, y, x, c) -> (n, c, y, x)
        index = tuple(slice(start, stop) if a == "z" else (0 if a == "t" else slice(None)) for a in self.axes)
        block = np.asarray(self.array[index])
        if "c" in self.axes:  # stored (c, z, y, x) after dropping t: sections first
            block = np.moveaxis(block, 0, 1)
        return block

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._array = self._file = None

    def describe(self) -> str:
        size = " x ".join(str(s) for s in self.shape)
        channels = f", {self.channels} channels" if self.channels != 1 else ""
        where = f"{self.path}" + (f" [{self.key}]" if self.key else "")
        version = f" {self.ngff_version}" if self.ngff_version else ""
        return f"{where}: {self.kind}{version}, {size} (z, y, x){channels}, {self.dtype}"


def _array_path(path: str, key: str | None) -> str:
    return str(Path(path) / key) if key else str(path)


def open_volume(path: str | os.PathLike, key: str | None = None, in_channels: int = 1) -> VolumeSource:
    """Look at a volume's metadata (see the module docstring); nothing is read of its pixels.

    Args:
        path: an OME-Zarr image, a zarr array (or group with ``key``), an HDF5 file, or a stack file.
        key: the array inside (zarr group path, HDF5 dataset, or an OME-Zarr level such as ``"1"``); default: the
            OME-Zarr's full resolution, the only 3-D array of a group or file.
        in_channels: the model's channels, which an OME-Zarr ``c`` axis must match.

    Raises:
        VolumeError: the path is missing or no volume, the layout is not ``(z, y, x)`` (+ ``c``, ``t`` of size 1),
            or the channels differ from the model's; the message names the path and the fix.
    """
    path = str(path)
    key = None if key is None else str(key)  # a level given on the command line as a number
    if Path(path).name.lower().endswith(STACK_EXTENSIONS) and not Path(path).is_dir():
        return _open_stack_file(path, in_channels)
    if Path(path).name.lower().endswith(HDF5_EXTENSIONS):
        if not Path(path).is_file():
            raise VolumeError(f"{path}: no such HDF5 file; give --input an existing .h5 file (or an OME-Zarr folder).")
        return _open_hdf5(path, key)
    if not is_zarr(path):
        hint = (
            "a 2-D image or a folder of them: use the normal inference (run inference)"
            if Path(path).exists()
            else "no such file or folder"
        )
        raise VolumeError(
            f"{path}: not a volume ({hint}); --input takes an OME-Zarr image (.zarr folder), a zarr array, an HDF5 "
            f"file ({', '.join(HDF5_EXTENSIONS)}) with --volume_key naming its dataset, or a stack file "
            f"({', '.join(STACK_EXTENSIONS)})."
        )
    return _open_zarr(path, key, in_channels)


def _open_zarr(path: str, key: str | None, in_channels: int) -> VolumeSource:
    import zarr

    node = zarr.open(store=path, mode="r")
    ome, version = ngff_attrs(dict(node.attrs)) if isinstance(node, zarr.Group) else ({}, None)
    if isinstance(node, zarr.Group) and ome.get("multiscales"):
        return _open_ome_zarr(path, node, ome, version, key, in_channels)
    if isinstance(node, zarr.Group):
        if key is None:
            arrays = [name for name, a in node.arrays() if a.ndim == 3]
            if len(arrays) != 1:
                found = ", ".join(arrays) or "none"
                raise VolumeError(
                    f"{path}: a zarr group without OME-Zarr metadata and {len(arrays)} 3-D arrays ({found}); name "
                    "the volume with --volume_key <array>."
                )
            key = arrays[0]
        if key not in node:
            raise VolumeError(
                f"{path}: no array {key!r} in the group; --volume_key names one of: {', '.join(node.array_keys())}."
            )
        array = node[key]
    else:
        array = node
    _check_3d(path, key, array.shape)
    return VolumeSource(
        path=path,
        key=key,
        kind="zarr",
        shape=tuple(int(s) for s in array.shape),
        channels=1,
        dtype=str(array.dtype),
        chunk_sections=int(array.chunks[0]),
    )


def _open_ome_zarr(path, group, ome, version, key, in_channels) -> VolumeSource:
    multiscale = ome["multiscales"][0]
    axes = [a["name"] if isinstance(a, Mapping) else str(a) for a in multiscale.get("axes") or []]
    units = {a["name"]: a.get("unit") for a in multiscale.get("axes", []) if isinstance(a, Mapping)}
    datasets = multiscale.get("datasets") or []
    paths = [d["path"] for d in datasets]
    level = key if key is not None else (paths[0] if paths else None)
    if level not in paths and level is not None and level.isdigit() and int(level) < len(paths):
        level = paths[int(level)]  # "1": the second level, whatever its path ("s1" in ome-zarr-py's files)
    if level is None or level not in group:
        raise VolumeError(f"{path}: OME-Zarr level {level!r} not found; --volume_key takes one of {paths}.")
    array = group[level]
    if not axes or len(axes) != array.ndim:
        axes = ["t", "c", "z", "y", "x"][-array.ndim :]
    shape = dict(zip(axes, array.shape))
    if axes[-3:] != ["z", "y", "x"] or any(a not in "tc" for a in axes[:-3]) or shape.get("t", 1) != 1:
        layout = ", ".join(f"{a}={s}" for a, s in shape.items())
        raise VolumeError(
            f"{path}: an OME-Zarr image with axes ({layout}); the volume inference takes (z, y, x) sections, with "
            "optional c (the model's channels) and t of size 1. A 2-D image: use the normal inference (run inference)."
        )
    channels = int(shape.get("c", 1))
    if channels != in_channels:
        raise VolumeError(
            f"{path}: {channels} channel(s) (c axis) but the model takes {in_channels}; give a volume with "
            f"{in_channels} channel(s), or a model trained with in_channels={channels}."
        )
    scale, translation = [1.0] * len(axes), [0.0] * len(axes)
    for source in (
        _dataset(datasets, level).get("coordinateTransformations") or [],
        multiscale.get("coordinateTransformations") or [],
    ):  # the level's first, then the image's
        for t in source:
            if t.get("type") == "scale" and len(t.get("scale", [])) == len(axes):
                scale = [a * float(b) for a, b in zip(scale, t["scale"])]
                translation = [a * float(b) for a, b in zip(translation, t["scale"])]
            elif t.get("type") == "translation" and len(t.get("translation", [])) == len(axes):
                translation = [a + float(b) for a, b in zip(translation, t["translation"])]
    stored_axes = "".join(a for a in axes if a in "tczyx")
    return VolumeSource(
        path=path,
        key=level,
        kind="ome-zarr",
        shape=(shape["z"], shape["y"], shape["x"]),
        channels=channels,
        dtype=str(array.dtype),
        chunk_sections=int(array.chunks[axes.index("z")]),
        scale=tuple(scale[-3:]),
        translation=tuple(translation[-3:]),
        units=tuple(units.get(a) for a in ("z", "y", "x")),
        ngff_version=version or "0.4",
        axes=stored_axes,
    )


def _dataset(datasets: Sequence[Mapping], level: str) -> Mapping:
    return next((d for d in datasets if d.get("path") == level), {})


def _check_3d(path: str, key: str | None, shape: Sequence[int]) -> None:
    if len(shape) != 3 or min(shape) < 1:
        where = f"{path}" + (f" [{key}]" if key else "")
        raise VolumeError(
            f"{where}: an array of shape {list(shape)}; the volume inference takes a (z, y, x) array (a volume with "
            "channels: an OME-Zarr image with a c axis)."
        )


def _open_stack_file(path: str, in_channels: int) -> VolumeSource:
    """A multi-page TIFF / OME-TIFF / 3-D NIfTI: its layout from :func:`scripts.data.stacks.open_stack` (pages, not
    the pixels), its pixel size from :func:`scripts.data.pixel_size.read_pixel_size` and its section spacing from
    the ImageJ ``spacing`` or the OME ``PhysicalSizeZ``, in micrometres."""
    from scripts.data.pixel_size import read_pixel_size, unit_nm
    from scripts.data.stacks import StackError, open_stack

    if not Path(path).is_file():
        raise VolumeError(f"{path}: no such stack file; give --input an existing file (or an OME-Zarr folder).")
    try:
        with open_stack(path) as stack:
            shape, channels, dtype, kind = (stack.sections, *stack.size), stack.channels, stack.dtype, stack.format
            calibration, depth, hint = stack.calibration(), stack.section_axis == "Z", stack.hint
    except StackError as e:
        raise VolumeError(str(e)) from None
    except Exception as e:  # tifffile's / nibabel's own errors for a damaged file
        raise VolumeError(
            f"{path}: cannot be read as a stack ({type(e).__name__}: {e}); copy it again, or re-save it as a TIFF or "
            "OME-Zarr."
        ) from None
    if channels != in_channels:
        raise VolumeError(
            f"{path}: {channels} channel(s) per section but the model takes {in_channels}; "
            + (f"{hint}; else " if hint else "")
            + f"give a stack with {in_channels} channel(s), or a model trained with in_channels={channels}."
        )
    scale, units = [1.0, 1.0, 1.0], [None, None, None]
    pixel = read_pixel_size(path)
    if pixel is not None:
        scale[1:], units[1:] = [pixel.y_nm / 1e3, pixel.x_nm / 1e3], ["micrometer", "micrometer"]
    ome = calibration.get("ome") or {}
    spacing_nm = None
    try:  # a spacing only for sections along depth (not time points)
        if depth and ome.get("PhysicalSizeZ"):
            spacing_nm = unit_nm(float(ome["PhysicalSizeZ"]), ome.get("PhysicalSizeZUnit", "µm"))
        elif depth and calibration.get("spacing") and calibration.get("unit"):
            spacing_nm = unit_nm(float(calibration["spacing"]), str(calibration["unit"]))
    except ValueError:  # a malformed value: no spacing, as when none is written
        spacing_nm = None
    if spacing_nm is not None:
        scale[0], units[0] = spacing_nm / 1e3, "micrometer"
    return VolumeSource(
        path=path,
        key=None,
        kind=kind,
        shape=tuple(int(s) for s in shape),
        channels=int(channels),
        dtype=str(dtype),
        chunk_sections=1,
        scale=tuple(scale),
        units=tuple(units),
        axes="zyx" if channels == 1 else "zcyx",
    )


def _open_hdf5(path: str, key: str | None) -> VolumeSource:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise VolumeError(f"{path}: cannot be read as HDF5 ({e}); copy it again or convert it to OME-Zarr.") from None
    with f:
        if key is None:
            found: list[str] = []
            f.visititems(
                lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) and obj.ndim == 3 else None
            )
            if len(found) != 1:
                raise VolumeError(
                    f"{path}: {len(found)} 3-D datasets ({', '.join(found) or 'none'}); name the volume with "
                    "--volume_key <dataset>."
                )
            key = found[0]
        if key not in f or not isinstance(f[key], h5py.Dataset):
            raise VolumeError(f"{path}: no dataset {key!r}; --volume_key names a 3-D dataset of the file.")
        ds = f[key]
        _check_3d(path, key, ds.shape)
        size = ds.attrs.get("element_size_um")  # the (z, y, x) pixel size Fiji and ilastik write
        scale = tuple(float(s) for s in size) if size is not None and len(size) == 3 else (1.0, 1.0, 1.0)
        units = ("micrometer",) * 3 if size is not None and len(size) == 3 else (None, None, None)
        return VolumeSource(
            path=path,
            key=key,
            kind="hdf5",
            shape=tuple(int(s) for s in ds.shape),
            channels=1,
            dtype=str(ds.dtype),
            chunk_sections=int(ds.chunks[0]) if ds.chunks else 1,
            scale=scale,
            units=units,
        )
