"""Stacks of sections (multi-page TIFF, ImageJ hyperstack, OME-TIFF, 3-D NIfTI), read one section at a time.

A :class:`StackSource` is what the bundle knows of an image file beyond one 2D picture: how many **sections** it
holds (1 for a 2D image), their size, their **channels** and pixel type, and its **calibration** (pixel size, section
spacing, as written in the file). :meth:`StackSource.section` reads one section, ``(H, W)`` grey or ``(H, W, C)``,
in the file's row/column orientation (as :func:`scripts.data.read_image` returns 2D images); nothing else is read, so
a stack of any length never loads whole. (:mod:`scripts.volumes`, the Dask route of ``configs/volume.json``, reads
OME-Zarr, zarr and HDF5 volumes in blocks of sections, and these stacks through this class.)

Sections and channels are told apart by the file's structure, never by the array's shape alone:

- TIFF: tifffile's series axes (from the ImageJ or OME metadata, or tifffile's own) and each page's samples per
  pixel. A page axis ``Z`` (depth), ``T`` (time), ``I`` (a plain page sequence) or ``Q`` (unknown) indexes sections;
  ``C`` (channel pages) and ``S`` (samples of each pixel: RGB, RGBA) are channels. A 4-page grey stack is a stack of 4
  sections; an RGBA image (one page, 4 samples) is one image of 4 channels.
- NIfTI: the array is ``(x, y, z)``: dimensions 1-3 are space, as the format defines; a third dimension > 1 makes a
  volume of ``z`` sections. Time points or vector components (dimensions 4, 5) are refused.

A file that cannot be read as one stack of 2D sections raises :class:`StackError`, one line naming the file, what
it holds and the fix (two section axes, a metadata that contradicts the pages, an unknown axis). Where the structure
is legal but often not what was meant -- one TIFF page of 3 or 4 *planar* samples, which is how ``tifffile.imwrite``
stores a ``(3|4, H, W)`` array, or ImageJ/OME channel pages -- :attr:`StackSource.hint` says how to re-save it as
sections, and the inference pre-flight adds it to its channel message.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
from scripts.errors import UserError

from .io import image_extension

__all__ = [
    "SECTION_AXES",
    "SECTION_KEY",
    "SECTIONS_KEY",
    "STACK_SUFFIX",
    "STACK_EXTENSIONS",
    "NiftiStack",
    "OpenStacks",
    "TiffStack",
    "StackError",
    "StackSource",
    "open_stack",
    "section_name",
    "section_of",
    "sample_pixels",
    "stack_extension",
]

logger = logging.getLogger(__name__)

#: Item and metadata key of a section's index in its stack.
SECTION_KEY = "section"
#: Metadata key of the number of sections of the stack.
SECTIONS_KEY = "sections"
#: Suffix of the item key that holds the stack of ``key`` (``image_stack`` for ``image``).
STACK_SUFFIX = "_stack"


def section_name(name: str, section: int, sections: int) -> str:
    """The name of section ``section`` of the stack named ``name`` of ``sections`` sections: ``name_z07`` (zero-padded
    to the stack's length), for its picture folder and its 2D files in a prepared dataset."""
    return f"{name}_z{section:0{len(str(max(sections - 1, 0)))}d}"


def section_of(meta: Any) -> int | None:
    """The section index recorded in a tensor's metadata (``None``: not a section of a stack)."""
    value = (meta or {}).get(SECTION_KEY)
    if value is None:
        return None
    return int(value.item() if hasattr(value, "item") else value)


#: tifffile axis codes of a page axis that indexes sections: depth, time, a plain page sequence, unknown.
SECTION_AXES = "ZTIQ"

#: File endings :func:`open_stack` reads (TIFF and NIfTI; PNG/JPEG hold one 2D image).
STACK_EXTENSIONS = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".nii", ".nii.gz")

_NIFTI_UNITS = {"meter": "m", "mm": "mm", "micron": "micron"}  # NIfTI xyzt spatial units -> ImageJ unit names


class StackError(UserError, ValueError):
    """A TIFF/NIfTI file that is not one stack of 2D sections; the message names the file and the fix."""


def stack_extension(path: str | os.PathLike) -> str:
    """The extension of the label stack written for the stack ``path``: ``.ome.tif`` for an OME-TIFF name,
    ``.tif`` for other TIFFs, the input's own for NIfTI (``.nii``, ``.nii.gz``)."""
    ext = image_extension(path) or ""
    return ".ome.tif" if ext.startswith(".ome.") else ".tif" if ext in (".tif", ".tiff") else ext


class StackSource:
    """A stack of 2D sections read one at a time (see the module docstring); a context manager that closes the file.

    Attributes:
        path: the file.
        format: ``"tiff"``, ``"imagej"``, ``"ome"`` or ``"nifti"``.
        sections: number of sections (1: a 2D image).
        size: ``(H, W)`` of a section.
        channels: channels of a section (1 grey, 3 RGB, ...).
        dtype: pixel type, e.g. ``"uint8"``.
        axes: the axes as read, e.g. ``"ZYX"``, ``"QYX"``, ``"YXS"``, ``"xyz"`` for NIfTI.
        section_axis: the axis that indexes sections (``"Z"``, ``"T"``, ...; ``""`` for a 2D image).
        hint: how to re-save the file when its channels may be sections (``None`` otherwise).
    """

    format = ""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.sections, self.size, self.channels, self.dtype = 1, (0, 0), 1, ""
        self.axes, self.section_axis, self.hint = "", "", None
        self._lock = threading.Lock()  # one section read at a time (a prefetching thread and the pre-flight)

    def __len__(self) -> int:
        return self.sections

    def __iter__(self) -> Iterator[np.ndarray]:
        for k in range(self.sections):
            yield self.section(k)

    def __enter__(self) -> StackSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the file."""

    def _index(self, index: int) -> int:
        if not isinstance(index, (int, np.integer)) or not -self.sections <= index < self.sections:
            raise IndexError(f"{self.path}: section {index} out of range (it holds {self.sections} section(s)).")
        return int(index) % self.sections

    def section(self, index: int) -> np.ndarray:
        """Section ``index`` (negative: from the end) as ``(H, W)`` or ``(H, W, C)``, in its stored dtype."""
        raise NotImplementedError

    def calibration(self) -> dict[str, Any]:
        """What the file says of its geometry, as carried over to the outputs: ``resolution`` (TIFF X/Y resolution,
        pixels per unit, as stored), ``resolutionunit`` (the TIFF tag's value), ``unit`` (ImageJ's length unit),
        ``spacing`` (section spacing, in ``unit``), ``ome`` (the OME ``Pixels`` attributes ``PhysicalSize*`` and
        ``TimeIncrement*``); a key is absent when the file does not say. NIfTI: ``nifti_header`` as well."""
        return {}


def _kept(shape, axes) -> tuple[tuple[int, ...], str]:
    kept = [(int(n), a) for n, a in zip(shape, axes) if n > 1 or a in "YX"]
    return tuple(n for n, _ in kept), "".join(a for _, a in kept)


def _tiff_problem(path: Path, what: str, fix: str) -> StackError:
    return StackError(f"{path}: {what}; {fix}.")


class TiffStack(StackSource):
    """A TIFF (plain multi-page, ImageJ hyperstack, OME-TIFF) read page by page with tifffile (first series)."""

    def __init__(self, path: str | os.PathLike) -> None:
        import tifffile

        super().__init__(path)
        self._tif = tifffile.TiffFile(self.path)
        try:
            self._layout()
        except BaseException:
            self._tif.close()
            raise

    def _layout(self) -> None:
        tif, path = self._tif, self.path
        self.format = "ome" if tif.is_ome else "imagej" if tif.is_imagej else "tiff"
        series = tif.series[0]
        page = series.keyframe
        # singleton axes aside (Y and X always kept): e.g. tifffile's "TZYXS" of (2, 3, H, W, 1) is "TZYX"
        shape, axes = _kept(series.shape, series.axes)
        page_shape, page_axes = _kept(page.shape, page.axes)
        self.dtype = str(series.dtype)
        self.axes = axes
        n = len(page_axes)
        if axes[-n:] != page_axes or shape[-n:] != page_shape:
            raise _tiff_problem(
                path,
                f"its metadata gives the axes {axes} {list(shape)}, but each page holds {page_axes} "
                f"{list(page_shape)} ({page.samplesperpixel} samples per pixel)",
                "re-save it with one grey page per section, e.g. tifffile.imwrite(path, stack, "
                "photometric='minisblack')",
            )
        index = [(a, s) for a, s in zip(axes[:-n], shape[:-n])]
        self._index_shape = tuple(s for _, s in index) or (1,)
        self._index_axes = "".join(a for a, _ in index)
        big = [(a, s) for a, s in index if s > 1]
        sections = [(a, s) for a, s in big if a in SECTION_AXES]
        channels = [(a, s) for a, s in big if a == "C"]
        other = [(a, s) for a, s in big if a not in SECTION_AXES + "C"]
        samples = page.samplesperpixel if "S" in page_axes else 1
        where = f"axes {axes} {list(shape)}"
        if other:
            a, s = other[0]
            raise _tiff_problem(
                path,
                f"holds {s} planes along axis {a!r} ({where}), neither sections (Z, T) nor " f"channels (C)",
                "save each of them as its own stack or image",
            )
        if len(sections) > 1:
            named = " x ".join(f"{s} {a}" for a, s in sections)
            raise _tiff_problem(
                path,
                f"holds {named} planes ({where}): two axes of sections, e.g. a time series of " "volumes",
                "save each time point as its own stack, e.g. tifffile.imwrite(f't{t}.tif', " "array[t])",
            )
        if channels and samples > 1:
            raise _tiff_problem(
                path,
                f"holds {channels[0][1]} channel pages of {samples} samples each ({where})",
                "save one grey or RGB page per section",
            )
        if "Y" not in page_axes or "X" not in page_axes or page_axes.replace("S", "") != "YX":
            raise _tiff_problem(path, f"pages of axes {page_axes} ({where}) are not 2D images", "re-export it")
        self._section_axis = sections[0][0] if sections else ""
        self.section_axis = {"I": "Z", "Q": "Z"}.get(self._section_axis, self._section_axis)
        self.sections = sections[0][1] if sections else 1
        self.channels = channels[0][1] if channels else samples
        self._planar = page_axes.startswith("S")
        self.size = tuple(s for a, s in zip(page_axes, page_shape) if a in "YX")
        if self._planar and samples in (3, 4) and not channels:
            self.hint = (
                f"if these are {samples} sections, not {'RGB' if samples == 3 else 'RGB + alpha'} planes (as "
                f"tifffile.imwrite stores a ({samples}, H, W) array), save one page per section: "
                "tifffile.imwrite(path, stack, photometric='minisblack')"
            )
        elif channels and not sections:
            kind = {"ome": "OME", "imagej": "ImageJ"}.get(self.format, "TIFF")
            self.hint = (
                f"if these {self.channels} {kind} channel pages are sections, mark them as slices (Fiji: "
                f"Image > Properties, Slices {self.channels}, Channels 1) or save them with "
                "tifffile.imwrite(path, stack, imagej=True, metadata={'axes': 'ZYX'})"
            )

    def close(self) -> None:
        self._tif.close()

    def _page(self, section: int, channel: int) -> int:
        index = [section if a == self._section_axis else channel if a == "C" else 0 for a in self._index_axes]
        return int(np.ravel_multi_index(index, self._index_shape)) if index else 0

    def section(self, index: int) -> np.ndarray:
        k = self._index(index)
        with self._lock:
            if "C" in self._index_axes and self.channels > 1:
                arr = np.stack([self._tif.asarray(key=self._page(k, c), series=0) for c in range(self.channels)], -1)
            else:
                arr = self._tif.asarray(key=self._page(k, 0), series=0)
                if self._planar:
                    arr = np.moveaxis(arr, 0, -1)
        arr = np.asarray(arr)
        return arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr

    def calibration(self) -> dict[str, Any]:
        tags = self._tif.pages[0].tags
        out: dict[str, Any] = {}
        xres, yres, unit = tags.get("XResolution"), tags.get("YResolution"), tags.get("ResolutionUnit")
        if xres is not None and yres is not None:
            out["resolution"] = (tuple(xres.value), tuple(yres.value))
            out["resolutionunit"] = int(unit.value) if unit is not None else 2  # TIFF's default: inch
        imagej = self._tif.imagej_metadata or {}
        if imagej.get("unit"):
            out["unit"] = str(imagej["unit"])
        if imagej.get("spacing"):
            out["spacing"] = float(imagej["spacing"])
        if self._tif.is_ome and self._tif.ome_metadata:
            pixels = next(
                (
                    e
                    for e in ElementTree.fromstring(self._tif.ome_metadata).iter()
                    if e.tag.rsplit("}", 1)[-1] == "Pixels"
                ),
                None,
            )
            if pixels is not None:
                out["ome"] = {k: v for k, v in pixels.attrib.items() if k.startswith(("PhysicalSize", "TimeIncrement"))}
        return out


class NiftiStack(StackSource):
    """A NIfTI file: ``(x, y)`` a 2D image, ``(x, y, z)`` a volume of ``z`` sections; section ``k`` is
    ``data[:, :, k]`` transposed to ``(H, W) = (y, x)``, read through nibabel's array proxy (one section)."""

    format = "nifti"

    def __init__(self, path: str | os.PathLike) -> None:
        import nibabel as nib

        super().__init__(path)
        self._img = nib.load(str(self.path))
        shape = tuple(int(n) for n in self._img.header.get_data_shape())
        self.dtype = str(self._img.header.get_data_dtype())
        self.axes = "xyztu"[: len(shape)]
        if any(n > 1 for n in shape[3:]):
            raise StackError(
                f"{self.path}: holds a {len(shape)}-D NIfTI array {list(shape)}: time points or components beyond "
                "(x, y, z); save each of them as its own 3D file."
            )
        xyz = (shape + (1, 1, 1))[:3]
        if all(n > 1 for n in xyz):
            self._volume, self.sections, self.section_axis = True, xyz[2], "Z"
            self.size = (xyz[1], xyz[0])
        else:
            kept = [n for n in xyz if n > 1]
            if len(kept) < 2:
                raise StackError(f"{self.path}: holds a NIfTI array {list(shape)}, not an image; re-export it.")
            self._volume, self.size = False, (kept[1], kept[0])

    def section(self, index: int) -> np.ndarray:
        k = self._index(index)
        with self._lock:
            if self._volume:
                arr = np.asarray(self._img.dataobj[:, :, k, ...]).reshape(self.size[::-1])
            else:
                arr = np.squeeze(np.asarray(self._img.dataobj))
        return np.swapaxes(arr, 0, 1)

    def calibration(self) -> dict[str, Any]:
        header = self._img.header
        zooms = [float(z) for z in header.get_zooms()[:3]] + [1.0, 1.0, 1.0]
        unit = _NIFTI_UNITS.get(header.get_xyzt_units()[0])
        out: dict[str, Any] = {"nifti_header": header}
        if unit and zooms[0] > 0 and zooms[1] > 0:
            out.update(resolution=(1.0 / zooms[0], 1.0 / zooms[1]), unit=unit)
            if self._volume and zooms[2] > 0:
                out["spacing"] = zooms[2]
        return out


def open_stack(path: str | os.PathLike) -> StackSource:
    """Open a TIFF or NIfTI file as a :class:`StackSource` (1 section for a 2D image).

    Raises:
        StackError: the file is not one stack of 2D sections (the message names the file and the fix), or not a
            TIFF/NIfTI file.
        FileNotFoundError: the file does not exist.
        Exception: tifffile's and nibabel's errors for an unreadable file.
    """
    path = Path(path)
    ext = image_extension(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found.")
    if ext in (".nii", ".nii.gz"):
        return NiftiStack(path)
    if ext in (".tif", ".tiff", ".ome.tif", ".ome.tiff"):
        return TiffStack(path)
    raise StackError(
        f"{path}: not a TIFF or NIfTI file; stacks of sections are read from {', '.join(STACK_EXTENSIONS)}."
    )


def sample_pixels(path: str | os.PathLike, max_sections: int = 8) -> np.ndarray:
    """Pixels of up to ``max_sections`` evenly spaced sections of a stack, stacked (for intensity statistics that
    need the pixels: one scaling for the whole stack, without reading it all)."""
    with open_stack(path) as volume:
        picks = np.unique(np.linspace(0, volume.sections - 1, min(max_sections, volume.sections)).round().astype(int))
        return np.stack([volume.section(int(k)) for k in picks])


class OpenStacks:
    """A few open :class:`StackSource` files, reused across the sections of a run (opening a long multi-page TIFF
    reads its page index), closed least recently used first. Pickles empty (for data loader worker processes)."""

    def __init__(self, max_open: int = 4) -> None:
        self.max_open = max_open
        self._open: OrderedDict[str, StackSource] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str | os.PathLike) -> StackSource:
        """The open volume of ``path`` (opened now if needed)."""
        key = str(path)
        with self._lock:
            volume = self._open.pop(key, None) or open_stack(key)
            self._open[key] = volume
            while len(self._open) > self.max_open:
                self._open.popitem(last=False)[1].close()
            return volume

    def close(self) -> None:
        """Close every open file."""
        with self._lock:
            while self._open:
                self._open.popitem()[1].close()

    def __getstate__(self) -> dict:
        return {"max_open": self.max_open}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_open"])
