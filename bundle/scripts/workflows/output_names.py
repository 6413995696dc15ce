"""Unique output names for inference: one name per input file, so no result overwrites another.

An input's outputs are ``<name>_seg<ext>``, ``<name>_prob.tif``, ``<name>_refined<ext>`` and ``pictures/<folder>/``
(``<folder>``: ``<name>`` percent-encoded where it is not a plain file name, :func:`scripts.workflows.picture_folder`).
The name is the file name without its image extension (``a.nii.gz`` -> ``a``), unless several inputs share it
(case-insensitively, as on macOS/Windows disks): then each of them gets its extension appended, dots as
underscores (``x.png`` -> ``x_png``, ``x.tif`` -> ``x_tif``, ``x.nii.gz`` -> ``x_nii_gz``), and a name that is
still taken (the same file name in two folders of a datalist) gets ``__2``, ``__3``, ... in input order. The same
input list always gives the same names, so a restarted run finds its earlier outputs.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

from scripts.data.io import file_stem, image_extension

__all__ = ["OUTPUT_NAME_KEY", "PICTURE_KEY", "output_name_formatter", "unique_output_names"]

#: Key of the output name in a dataset item and in the loaded image's metadata.
OUTPUT_NAME_KEY = "output_name"
#: Key of the picture folder's name in a section's item (empty: no pictures of that section).
PICTURE_KEY = "picture_name"


def unique_output_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """One distinct output name per input path, in order (rules in the module docstring).

    Args:
        paths: input image files.

    Returns:
        The names, ``len(paths)`` of them, distinct even case-insensitively.
    """
    stems = [file_stem(p) for p in paths]
    shared = Counter(s.casefold() for s in stems)
    names: list[str] = []
    taken: set[str] = set()
    for path, stem in zip(paths, stems):
        name = stem
        if shared[stem.casefold()] > 1:
            ext = image_extension(path) or os.path.splitext(str(path))[1] or ".img"
            name = f"{stem}_{ext.lstrip('.').replace('.', '_').lower()}"
        candidate, k = name, 2
        while candidate.casefold() in taken:
            candidate, k = f"{name}__{k}", k + 1
        taken.add(candidate.casefold())
        names.append(candidate)
    return names


def output_name_formatter(metadict: dict[str, Any] | None, saver: Any = None) -> dict[str, Any]:
    """``output_name_formatter`` for MONAI's ``SaveImage(d)``: the file is named after ``metadict["output_name"]``
    (set by :class:`scripts.workflows.FaultTolerantDataset` from the pre-flight's names) instead of the input's stem.

    Without that key (e.g. MONAI Label, which builds its own items) it behaves like MONAI's default formatter.

    Args:
        metadict: the image's metadata.
        saver: the ``SaveImage`` transform (unused; MONAI's signature).

    Returns:
        Keyword arguments for ``FolderLayout.filename``.
    """
    from monai.data.folder_layout import default_name_formatter

    if metadict and metadict.get(OUTPUT_NAME_KEY):
        # a dummy extension: FolderLayout strips one, and names may contain dots ("sec.01")
        return {"subject": f"{metadict[OUTPUT_NAME_KEY]}.png", "idx": metadict.get("patch_index")}
    return default_name_formatter(metadict or {}, saver)
