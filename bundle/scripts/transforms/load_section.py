"""Load one section of a stack (multi-page TIFF, OME-TIFF, 3-D NIfTI) as MONAI loads a 2D image.

The inference plans a stack as one item per section (:class:`scripts.workflows.InferencePlan`):
``{"image_stack": path, "section": k, ...}`` (and ``"label_stack"`` when a label stack is given). Placed right after
the preprocessing's ``LoadImaged`` (which, with ``allow_missing_keys``, passes such items by), :class:`LoadSectiond`
reads section ``k`` through a :class:`SectionReader` -- a MONAI ``ImageReader`` over
:class:`scripts.data.stacks.StackSource` -- with MONAI's own ``LoadImage``: the same ``MetaTensor``, dtype and
metadata as a 2D file, in the same orientation (``(W, H)``, as MONAI's PIL/ITK readers give 2D images), so a section
is predicted exactly as the same section saved as a 2D file. Its metadata adds ``section`` (the index) and
``sections`` (how many), which the savers use to write the section into the output stack. Items without
``section`` pass unchanged.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.data import ImageReader
from monai.transforms import LoadImage, MapTransform
from monai.utils import ensure_tuple
from scripts.data.io import image_extension
from scripts.data.stacks import SECTION_KEY, SECTIONS_KEY, STACK_EXTENSIONS, STACK_SUFFIX, OpenStacks

__all__ = ["LoadSectiond", "SectionReader"]


class SectionReader(ImageReader):
    """MONAI ``ImageReader`` of one section of a stack (:mod:`scripts.data.stacks`).

    Args:
        section: the section read.
        stacks: open files shared across calls (default: a new :class:`scripts.data.stacks.OpenStacks`).
    """

    def __init__(self, section: int = 0, stacks: OpenStacks | None = None) -> None:
        super().__init__()
        self.section = int(section)
        self.stacks = stacks if stacks is not None else OpenStacks()

    def verify_suffix(self, filename: Sequence[str] | str) -> bool:
        return all(image_extension(f) in STACK_EXTENSIONS for f in ensure_tuple(filename))

    def read(self, data: Sequence[str] | str, **kwargs) -> Any:
        files = ensure_tuple(data)
        if len(files) != 1:
            raise ValueError(f"SectionReader reads one stack at a time, got {list(files)}.")
        return self.stacks.get(files[0])

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        array = np.swapaxes(img.section(self.section), 0, 1)  # (H, W[, C]) -> MONAI's 2D layout (W, H[, C])
        meta = {
            "spatial_shape": np.asarray(array.shape[:2]),
            "original_channel_dim": -1 if array.ndim == 3 else float("nan"),
            "affine": np.eye(3),
            SECTION_KEY: self.section,
            SECTIONS_KEY: img.sections,
        }
        return array, meta


class LoadSectiond(MapTransform):
    """Load section ``data["section"]`` of the stacks ``data[key + "_stack"]`` into ``data[key]`` (module docstring).

    Args:
        keys: the keys to fill (e.g. ``["image", "label"]``).
        dtype: the loaded dtype, as ``LoadImaged``'s (default float32).
        section_key: the item key of the section index.
        allow_missing_keys: skip keys whose stack is not in the item (e.g. an item without a label stack).
    """

    def __init__(
        self,
        keys: KeysCollection,
        dtype: Any = np.float32,
        section_key: str = SECTION_KEY,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.section_key = section_key
        self.loader = LoadImage(image_only=True, dtype=dtype)
        self.stacks = OpenStacks()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if d.get(self.section_key) is None:
            return d
        reader = SectionReader(d[self.section_key], self.stacks)
        for key in self.keys:
            stack = d.get(f"{key}{STACK_SUFFIX}")
            if stack is None:
                if not self.allow_missing_keys:
                    raise KeyError(f"section item without {key}{STACK_SUFFIX!r}: {sorted(map(str, d))}.")
                continue
            d[key] = self.loader(stack, reader=reader)
        return d
