"""Write per-class probability maps as one multi-channel TIFF per image (opens as a stack in Fiji/napari), and read
them back.

Storage (``dtype``): ``"uint8"`` (default) stores ``round(p * 255)``, ``"uint16"`` ``round(p * 65535)``, ``"float32"``
the probabilities as they are; every page is zlib (deflate) compressed, which Fiji/ImageJ, napari and tifffile read.
A 3000 x 2500 image with 5 classes takes at most 37.5 MB as uint8 before compression (150 MB as float32). A section of
a stack (:class:`scripts.transforms.LoadSectiond`) goes into one ImageJ hyperstack ``(Z, C, H, W)`` per stack, with the
input's calibration, written section by section (:mod:`scripts.data.stack_writers`).
:func:`read_probability_map` returns float32 probabilities whatever the storage; the scale is also written in the
ImageJ ``Info`` field (``probability = value / 255``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import tifffile
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from scripts.atomic import atomic_path
from scripts.data.io import file_stem
from scripts.data.stack_writers import write_section
from scripts.data.stacks import section_of
from scripts.workflows.output_names import OUTPUT_NAME_KEY

__all__ = ["PROBABILITY_DTYPES", "SaveProbabilityMaps", "SaveProbabilityMapsd", "read_probability_map"]

#: storage type -> the value that stands for probability 1 (``None``: stored as is).
PROBABILITY_DTYPES: dict[str, int | None] = {"uint8": 255, "uint16": 65535, "float32": None}


def read_probability_map(path: str | Path) -> np.ndarray:
    """Read a probability map written by :class:`SaveProbabilityMaps`: float32 ``(C, H, W)`` probabilities
    (``(Z, C, H, W)`` for a stack).

    Args:
        path: the ``_prob.tif`` file.

    Returns:
        The per-class probabilities in the image file's orientation (quantised maps divided by 255 or 65535).
    """
    arr = tifffile.imread(path)
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(arr.dtype)
    arr = arr.astype(np.float32)
    return arr / scale if scale else arr


class SaveProbabilityMaps(Transform):
    """Saves a (C, *spatial) probability tensor as ``<output_dir>/<name><postfix>.tif`` (C pages, ``dtype`` storage,
    zlib compressed; see the module docstring), under a temporary name renamed into place (:mod:`scripts.atomic`).
    ``<name>`` is the image's ``output_name`` metadata (the inference pre-flight's unique name) when present, else the
    input file's stem.

    MONAI's readers return 2D images transposed with respect to the file ((W, H), ``reverse_indexing``); the same
    convention is undone here so that page ``c`` lines up pixel for pixel with the input image file. The class names
    are written into the TIFF's ImageJ labels so the stack shows them.

    Args:
        output_dir: folder for the TIFF files (created).
        class_names: name of each channel, in order (optional).
        postfix: appended to the input file's stem.
        transposed: whether the tensor follows MONAI's reader convention (W, H); ``False`` for arrays already in
            file order (H, W).
        dtype: storage, ``"uint8"`` (default), ``"uint16"`` or ``"float32"``.

    Raises:
        ValueError: when the tensor is not (C, H, W), the number of class names differs from C, or ``dtype`` is not
            one of the above.
    """

    def __init__(
        self,
        output_dir: str,
        class_names: Sequence[str] | None = None,
        postfix: str = "_prob",
        transposed: bool = True,
        dtype: str = "uint8",
    ) -> None:
        if dtype not in PROBABILITY_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(PROBABILITY_DTYPES)}, got {dtype!r}.")
        self.output_dir = Path(output_dir)
        self.dtype = dtype
        self.class_names = list(class_names) if class_names is not None else None
        self.postfix = postfix
        self.transposed = transposed

    def __call__(
        self, prob: torch.Tensor | np.ndarray, filename: str | None = None, name: str | None = None
    ) -> torch.Tensor | np.ndarray:
        """Write ``prob``; the file is named after ``name`` if given, else after ``filename``'s stem (default: the
        tensor's ``output_name`` / ``filename_or_obj`` metadata). Returns ``prob``."""
        arr = prob.detach().cpu().numpy() if isinstance(prob, torch.Tensor) else np.asarray(prob)
        if arr.ndim != 3:
            raise ValueError(f"expected a (C, H, W) probability map, got shape {arr.shape}.")
        if self.class_names is not None and len(self.class_names) != arr.shape[0]:
            raise ValueError(f"{len(self.class_names)} class names for {arr.shape[0]} probability channels.")
        meta = getattr(prob, "meta", {}) or {}
        if name is None and filename is None:
            name = meta.get(OUTPUT_NAME_KEY)
        if filename is None:
            filename = str(meta.get("filename_or_obj", "image"))
        if self.transposed:
            arr = arr.transpose(0, 2, 1)
        stem = name or file_stem(filename)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        metadata: dict = {"axes": "CYX"}
        if self.class_names is not None:
            metadata["Labels"] = self.class_names
        one = PROBABILITY_DTYPES[self.dtype]
        if one is None:
            arr = arr.astype(np.float32)
        else:
            arr = np.rint(np.clip(arr, 0.0, 1.0) * one).astype(self.dtype)
            metadata["Info"] = f"probability = value / {one}"
        target = self.output_dir / f"{stem}{self.postfix}.tif"
        section = section_of(meta)
        if section is not None:  # a section of a stack: into the stack's hyperstack
            write_section(target, filename, section, arr, labels=self.class_names, info=metadata.get("Info"))
            return prob
        with atomic_path(target) as tmp:  # never a partial map (a killed run)
            tifffile.imwrite(tmp, arr, imagej=True, metadata=metadata, compression="zlib")
        return prob


class SaveProbabilityMapsd(MapTransform):
    """Dictionary wrapper of :class:`SaveProbabilityMaps`; the file name comes from ``data[name_key].meta``
    (``output_name``, else ``filename_or_obj``'s stem)."""

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str,
        class_names: Sequence[str] | None = None,
        postfix: str = "_prob",
        name_key: str = "image",
        transposed: bool = True,
        dtype: str = "uint8",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.saver = SaveProbabilityMaps(output_dir, class_names, postfix, transposed, dtype)
        self.name_key = name_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        src = d.get(self.name_key)
        meta = (getattr(src, "meta", {}) or {}) if src is not None else {}
        filename, name = meta.get("filename_or_obj"), meta.get(OUTPUT_NAME_KEY)
        for key in self.key_iterator(d):
            self.saver(d[key], filename=filename, name=name)
        return d
