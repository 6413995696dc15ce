"""MONAI's ``SaveImaged`` writing every file crash-safely: under a temporary name beside it, then renamed into place
(:mod:`scripts.atomic`), so that a killed run never leaves a truncated label map under its final name. A section of a
stack (:class:`scripts.transforms.LoadSectiond`) goes into the output stack instead, written section by section and
renamed into place after the last one (:func:`scripts.data.stack_writers.write_section`)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from monai.data.image_writer import ImageWriter
from monai.transforms import SaveImaged
from scripts.atomic import atomic_path
from scripts.data.io import file_stem
from scripts.data.stack_writers import write_section
from scripts.data.stacks import section_of, stack_extension
from scripts.workflows.output_names import OUTPUT_NAME_KEY

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
    ``output_ext``, or ``writer`` -- write each file under a temporary name and rename it into place.

    A tensor whose metadata marks a section of a stack (``section``) is written into
    ``<output_dir>/<name>_<output_postfix><ext>`` instead, ``<ext>`` following the input stack
    (:func:`scripts.data.stacks.stack_extension`: ``.tif``, ``.ome.tif``, ``.nii.gz``, whatever ``output_ext``),
    as ``output_dtype``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.saver.writers = tuple(atomic_writer(w) for w in self.saver.writers)

    def __call__(self, data):
        d = dict(data)
        for key, meta_key, meta_key_postfix in self.key_iterator(d, self.meta_keys, self.meta_key_postfix):
            meta = getattr(d[key], "meta", None)
            section = section_of(meta)
            if section is None:
                if meta_key is None and meta_key_postfix is not None:
                    meta_key = f"{key}_{meta_key_postfix}"
                self.saver(img=d[key], meta_data=d.get(meta_key) if meta_key is not None else None)
                continue
            source = str(meta["filename_or_obj"])
            name = meta.get(OUTPUT_NAME_KEY) or file_stem(source)
            layout = self.saver.folder_layout
            postfix = f"_{layout.postfix}" if layout.postfix else ""
            target = Path(layout.output_dir) / f"{name}{postfix}{stack_extension(source)}"
            array = d[key].detach().cpu().numpy() if hasattr(d[key], "detach") else np.asarray(d[key])
            if array.ndim == 3 and array.shape[0] == 1:
                array = array[0]
            dtype = self.saver.init_kwargs.get("output_dtype") or np.uint8
            write_section(target, source, section, np.swapaxes(array, 0, 1), dtype=dtype)
        return d
