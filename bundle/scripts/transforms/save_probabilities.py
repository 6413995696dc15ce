"""Write per-class probability maps as one float32 multi-channel TIFF per image (opens as a stack in Fiji/napari)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import tifffile
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from scripts.data.io import file_stem

__all__ = ["SaveProbabilityMaps", "SaveProbabilityMapsd"]


class SaveProbabilityMaps(Transform):
    """Saves a (C, *spatial) probability tensor as ``<output_dir>/<stem><postfix>.tif`` (float32, C pages).

    MONAI's readers return 2D images transposed with respect to the file ((W, H), ``reverse_indexing``); the same
    convention is undone here so that page ``c`` lines up pixel for pixel with the input image file. The class names
    are written into the TIFF's ImageJ labels so the stack shows them.

    Args:
        output_dir: folder for the TIFF files (created).
        class_names: name of each channel, in order (optional).
        postfix: appended to the input file's stem.
        transposed: whether the tensor follows MONAI's reader convention (W, H); ``False`` for arrays already in
            file order (H, W).

    Raises:
        ValueError: when the tensor is not (C, H, W) or the number of class names differs from C.
    """

    def __init__(
        self,
        output_dir: str,
        class_names: Sequence[str] | None = None,
        postfix: str = "_prob",
        transposed: bool = True,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names) if class_names is not None else None
        self.postfix = postfix
        self.transposed = transposed

    def __call__(self, prob: torch.Tensor | np.ndarray, filename: str | None = None) -> torch.Tensor | np.ndarray:
        arr = prob.detach().cpu().numpy() if isinstance(prob, torch.Tensor) else np.asarray(prob)
        if arr.ndim != 3:
            raise ValueError(f"expected a (C, H, W) probability map, got shape {arr.shape}.")
        if self.class_names is not None and len(self.class_names) != arr.shape[0]:
            raise ValueError(f"{len(self.class_names)} class names for {arr.shape[0]} probability channels.")
        if filename is None:
            filename = str(getattr(prob, "meta", {}).get("filename_or_obj", "image"))
        if self.transposed:
            arr = arr.transpose(0, 2, 1)
        stem = file_stem(filename)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        metadata = {"axes": "CYX"}
        if self.class_names is not None:
            metadata["Labels"] = self.class_names
        tifffile.imwrite(
            self.output_dir / f"{stem}{self.postfix}.tif", arr.astype(np.float32), imagej=True, metadata=metadata
        )
        return prob


class SaveProbabilityMapsd(MapTransform):
    """Dictionary wrapper of :class:`SaveProbabilityMaps`; the file name comes from ``data[name_key].meta``."""

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str,
        class_names: Sequence[str] | None = None,
        postfix: str = "_prob",
        name_key: str = "image",
        transposed: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.saver = SaveProbabilityMaps(output_dir, class_names, postfix, transposed)
        self.name_key = name_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        src = d.get(self.name_key)
        filename = getattr(src, "meta", {}).get("filename_or_obj") if src is not None else None
        for key in self.key_iterator(d):
            self.saver(d[key], filename=filename)
        return d
