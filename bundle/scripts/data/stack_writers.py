"""Stacks written section by section, crash-safely: label stacks and probability stacks of the inference.

A :class:`StackWriter` receives the sections of one output in order (:meth:`~StackWriter.write`), streams each to
a hidden temporary file beside its target (:mod:`scripts.atomic`), and renames it into place when the last one is
written (:meth:`~StackWriter.commit`); a killed run leaves no partial stack under the final name, and only one
section is held in memory. The layout follows the input (:class:`scripts.data.stacks.StackSource`):

- TIFF input: a multi-page TIFF, one zlib-compressed page per section (per section and class for probabilities),
  with an ImageJ hyperstack description (``ZYX``/``ZCYX``; the ImageJ ``spacing`` and ``unit``) or, for an OME-TIFF
  input, OME-XML (``PhysicalSizeX/Y/Z`` and their units); every page keeps the input's X/Y resolution tags;
- NIfTI input: a NIfTI file of the input's header (affine, ``pixdim``, units), ``(x, y, z)`` of the written dtype;
- probabilities: always a TIFF ImageJ hyperstack ``(Z, C, Y, X)`` with the calibration the input gives.

:func:`write_section` is what the inference's savers call for a section (``scripts.transforms.AtomicSaveImaged``,
``SaveProbabilityMaps``): it opens the writer of a target at section 0 and commits it at the last section;
:func:`abort_sections` drops the open writers of an input that failed (their temporary files are removed).
"""

from __future__ import annotations

import gzip
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scripts.atomic import temporary_path

from .stacks import StackSource, open_stack

__all__ = ["NiftiStackWriter", "StackWriter", "TiffStackWriter", "abort_sections", "open_writers", "write_section"]

logger = logging.getLogger(__name__)

_PLACEHOLDER = "stack being written"


class StackWriter:
    """Writes ``sections`` sections of ``shape`` (``(H, W)``, or ``(C, H, W)`` for per-class maps) and ``dtype`` into
    ``target``, through a temporary file (see the module docstring). ``source`` is the input file it follows."""

    def __init__(
        self, target: str | os.PathLike, source: str | os.PathLike, sections: int, shape: Sequence[int], dtype: Any
    ) -> None:
        self.target, self.source = Path(target), str(source)
        self.sections, self.shape, self.dtype = int(sections), tuple(int(n) for n in shape), np.dtype(dtype)
        self.written = 0
        self.tmp = temporary_path(self.target)
        self.target.parent.mkdir(parents=True, exist_ok=True)

    def write(self, section: np.ndarray) -> None:
        """Append the next section."""
        section = np.asarray(section)
        if section.shape != self.shape:
            raise ValueError(
                f"{self.target}: section {self.written} has shape {list(section.shape)}, the stack "
                f"{list(self.shape)}."
            )
        if self.written >= self.sections:
            raise ValueError(f"{self.target}: all {self.sections} sections are written already.")
        self._write(np.ascontiguousarray(section.astype(self.dtype, copy=False)))
        self.written += 1

    def commit(self) -> Path:
        """Close the temporary file and rename it to the target (all sections must be written)."""
        if self.written != self.sections:
            raise ValueError(f"{self.target}: {self.written} of {self.sections} sections written.")
        self._close()
        os.replace(self.tmp, self.target)
        return self.target

    def abort(self) -> None:
        """Close and remove the temporary file."""
        try:
            self._close()
        except Exception:  # noqa: BLE001 - the file is removed anyway
            logger.debug("closing %s", self.tmp, exc_info=True)
        self.tmp.unlink(missing_ok=True)

    def _write(self, section: np.ndarray) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError


class TiffStackWriter(StackWriter):
    """A multi-page TIFF, one page per section (per section and channel for ``(C, H, W)`` sections), zlib
    compressed; the ImageJ description (or the OME-XML, ``ome=True``) describing the whole stack is written into
    the first page when the stack is committed (``tifffile.tiffcomment``).

    Args:
        target, source, sections, shape, dtype: see :class:`StackWriter`.
        calibration: :meth:`scripts.data.stacks.StackSource.calibration` of the input.
        section_axis: ``"Z"`` or ``"T"``.
        ome: write OME-XML instead of an ImageJ description.
        labels: ImageJ labels of the channels (class names), repeated for every section.
        info: the ImageJ ``Info`` text (e.g. how probabilities are stored).
    """

    def __init__(
        self,
        target,
        source,
        sections,
        shape,
        dtype,
        calibration: dict | None = None,
        section_axis: str = "Z",
        ome: bool = False,
        labels: Sequence[str] | None = None,
        info: str | None = None,
    ) -> None:
        import tifffile

        super().__init__(target, source, sections, shape, dtype)
        self.calibration, self.ome, self.section_axis = dict(calibration or {}), ome, section_axis
        self.labels, self.info = labels, info
        size = self.sections * int(np.prod(self.shape)) * self.dtype.itemsize
        self._tif = tifffile.TiffWriter(self.tmp, bigtiff=size > 2**32 - 2**25)
        self._first = True

    def _page_kwargs(self) -> dict:
        import tifffile

        kwargs: dict = {"compression": "zlib", "metadata": None, "software": False}
        if "resolution" in self.calibration:
            kwargs.update(
                resolution=self.calibration["resolution"], resolutionunit=self.calibration.get("resolutionunit", 1)
            )
        if self._first:
            kwargs["description"] = _PLACEHOLDER
            if not self.ome and (self.labels or self.info):
                meta: dict = {}
                if self.labels:
                    meta["Labels"] = [str(n) for n in self.labels] * self.sections
                if self.info:
                    meta["Info"] = self.info
                kwargs["extratags"] = tifffile.imagej_metadata_tag(meta, "<")
        return kwargs

    def _write(self, section: np.ndarray) -> None:
        for plane in section if section.ndim == 3 else section[None]:
            self._tif.write(plane, **self._page_kwargs())
            self._first = False

    def description(self) -> bytes:
        """The ImageJ description or OME-XML (UTF-8: units such as µm) of the whole stack."""
        import tifffile

        channels = self.shape[0] if len(self.shape) == 3 else 1
        shape = (self.sections, channels, *self.shape[-2:]) if channels > 1 else (self.sections, *self.shape[-2:])
        axes = f"{self.section_axis}CYX" if channels > 1 else f"{self.section_axis}YX"
        cal = self.calibration
        if self.ome:
            ome = tifffile.OmeXml()
            ome.addimage(
                self.dtype,
                shape,
                (self.sections * channels, 1, 1, *self.shape[-2:], 1),
                axes=axes,
                **cal.get("ome", {}),
            )
            return ome.tostring().encode("utf-8")
        meta = {k: cal[k] for k in ("spacing", "unit") if k in cal}
        if self.section_axis == "T" and "spacing" in meta:
            meta["finterval"] = meta.pop("spacing")
        return tifffile.imagej_description(shape, axes, **meta).encode("ascii", "backslashreplace")

    def _close(self) -> None:
        import tifffile

        if self._tif is None:
            return
        self._tif.close()
        self._tif = None
        if self.written == self.sections:
            tifffile.tiffcomment(self.tmp, self.description())


class NiftiStackWriter(StackWriter):
    """A NIfTI file with the input's header (affine, ``pixdim``, units; dtype, shape and scaling set to the stack's),
    its data streamed section by section: NIfTI stores ``(x, y, z)`` with ``x`` fastest, so section ``z`` (``(H, W)
    = (y, x)``, row-major) is the next block of the file. ``.nii.gz`` targets are gzip-compressed."""

    def __init__(self, target, source, sections, shape, dtype, header: Any = None) -> None:
        super().__init__(target, source, sections, shape, dtype)
        if len(self.shape) != 2:
            raise ValueError(f"{self.target}: a NIfTI stack holds (H, W) sections, got {list(self.shape)}.")
        hdr = header.copy()
        hdr.set_data_shape((self.shape[1], self.shape[0], self.sections))
        hdr.set_data_dtype(self.dtype)
        hdr.set_slope_inter(1.0, 0.0)
        hdr["vox_offset"] = 0  # set by write_to: after the header and its extensions
        hdr["cal_min"], hdr["cal_max"] = 0, 0
        self._order = ">" if hdr.endianness == ">" else "<"
        opener = gzip.open if self.target.name.lower().endswith(".gz") else open
        self._file = opener(self.tmp, "wb")
        hdr.write_to(self._file)
        self._file.write(b"\0" * (int(hdr.get_data_offset()) - self._file.tell()))

    def _write(self, section: np.ndarray) -> None:
        self._file.write(section.astype(self.dtype.newbyteorder(self._order), copy=False).tobytes())

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def writer_for(
    target: str | os.PathLike,
    source: StackSource,
    shape: Sequence[int],
    dtype: Any,
    labels: Sequence[str] | None = None,
    info: str | None = None,
) -> StackWriter:
    """The writer of ``target`` following the input ``source``: NIfTI for a ``.nii``/``.nii.gz`` target (from a
    NIfTI input), else a TIFF stack (OME for an OME input and a ``.ome.tif`` target, ImageJ otherwise)."""
    cal = source.calibration()
    name = Path(target).name.lower()
    if name.endswith((".nii", ".nii.gz")):
        if "nifti_header" not in cal:
            raise ValueError(f"{target}: a NIfTI stack needs a NIfTI input, got {source.path}.")
        return NiftiStackWriter(target, source.path, source.sections, shape, dtype, header=cal["nifti_header"])
    cal.pop("nifti_header", None)
    ome = source.format == "ome" and name.endswith((".ome.tif", ".ome.tiff"))
    return TiffStackWriter(
        target,
        source.path,
        source.sections,
        shape,
        dtype,
        calibration=cal,
        section_axis=source.section_axis or "Z",
        ome=ome,
        labels=labels,
        info=info,
    )


_OPEN: dict[str, StackWriter] = {}
_LOCK = threading.Lock()


def open_writers() -> list[StackWriter]:
    """The writers with sections still to come."""
    with _LOCK:
        return list(_OPEN.values())


def write_section(
    target: str | os.PathLike,
    source: str | os.PathLike,
    section: int,
    array: np.ndarray,
    dtype: Any = None,
    labels: Sequence[str] | None = None,
    info: str | None = None,
) -> Path | None:
    """Write section ``section`` of the stack ``target`` that follows the input stack ``source``.

    Section 0 opens the writer (replacing one left open for the same target); the others must come in order; the
    last commits the stack.

    Args:
        target: the output file (its extension picks the format, see :func:`writer_for`).
        source: the input stack.
        section: the section's index.
        array: ``(H, W)`` labels or ``(C, H, W)`` per-class maps, in the file's orientation.
        dtype: stored type (default: the array's).
        labels, info: ImageJ channel labels and ``Info`` of a TIFF stack.

    Returns:
        ``target`` once the stack is complete, else ``None``.

    Raises:
        ValueError: a section out of order (an earlier section of the stack failed), or of another shape.
    """
    key, array = str(target), np.asarray(array)
    with _LOCK:
        writer = _OPEN.pop(key, None)
    if section == 0:
        if writer is not None:
            writer.abort()
        with open_stack(source) as volume:
            writer = writer_for(target, volume, array.shape, dtype or array.dtype, labels=labels, info=info)
    elif writer is None or writer.written != section:
        if writer is not None:
            writer.abort()
        raise ValueError(
            f"{target}: section {section} of {source} comes before the sections ahead of it were "
            "written (an earlier section failed); the stack is predicted again by the next run."
        )
    try:
        writer.write(array)
        if writer.written == writer.sections:
            return writer.commit()
    except BaseException:
        writer.abort()
        raise
    with _LOCK:
        _OPEN[key] = writer
    return None


def abort_sections(source: str | os.PathLike | None = None) -> list[Path]:
    """Drop the open writers of the input ``source`` (all of them with ``None``), removing their temporary files;
    returns their targets."""
    with _LOCK:
        keys = [k for k, w in _OPEN.items() if source is None or w.source == str(source)]
        writers = [_OPEN.pop(k) for k in keys]
    for writer in writers:
        writer.abort()
    return [w.target for w in writers]
