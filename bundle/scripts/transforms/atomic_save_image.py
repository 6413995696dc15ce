"""MONAI's ``SaveImaged`` writing every file crash-safely: under a temporary name beside it, then renamed into place
(:mod:`scripts.atomic`), so that a killed run never leaves a truncated label map under its final name."""

from __future__ import annotations

import functools

from monai.data.image_writer import ImageWriter
from monai.transforms import SaveImaged
from scripts.atomic import atomic_path

__all__ = ["AtomicSaveImaged", "atomic_writer"]


class _AtomicWrite:
    """Mixin for a MONAI ``ImageWriter``: ``write(filename)`` writes a temporary file and renames it to ``filename``."""

    def write(self, filename, *args, **kwargs):
        with atomic_path(filename) as tmp:
            super().write(str(tmp), *args, **kwargs)


@functools.cache
def atomic_writer(writer: type[ImageWriter]) -> type[ImageWriter]:
    """The crash-safe subclass of a MONAI ``ImageWriter`` class (``PILWriter`` -> ``AtomicPILWriter``)."""
    return type(f"Atomic{writer.__name__}", (_AtomicWrite, writer), {"__module__": __name__})


class AtomicSaveImaged(SaveImaged):
    """``monai.transforms.SaveImaged`` (same arguments, same files) whose writers -- those MONAI picks for
    ``output_ext``, or ``writer`` -- write each file under a temporary name and rename it into place."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.saver.writers = tuple(atomic_writer(w) for w in self.saver.writers)
