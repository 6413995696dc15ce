"""Preparation of the Drosophila ssTEM dataset (Gerhard et al. 2013) into the bundle's layout.

Source layout (the folder ``drosophila-vnc`` or a download of the public repository
``unidesigner/groundtruth-drosophila-vnc``, same folder names)::

    stack1/raw/NN.tif                     20 labelled 1024x1024 uint8 sections
    stack1/labels/labelsNNNNNNNN.png      grey-coded labels (see scripts.data.classes.DROSOPHILA_VALUE_MAP)
    stack2/raw/NN.tif                     20 unlabelled sections (the challenge's test stack)

Output layout (``out``)::

    sections/images/sec_XX.png, sections/labels/sec_XX.png    full sections, labels as class indices
    crops/images/sec_XX_rR_cC.png, crops/labels/...           non-overlapping crop_size tiles (R, C: tile row, col)
    unlabelled/stack2_XX.png                                  stack2 raw sections
    datalist_fold{k}.json                                     k = 0..num_folds-1
    classes.json, README.txt
    manifest.json                                             parameters, sources, split and checksums

``manifest.json`` records the parameters (``crop_size``, ``num_folds``), every source file (``path``, ``sha256``),
the fold assignment by section index (``folds``: per fold its ``training``/``validation``/``testing`` sections) and
the sha256 of every output file (``outputs``: relative path -> sha256). It is written last, so its presence means
the preparation completed; ``sha256sum``-style checks: ``scripts.data.drosophila.verify_manifest(out)``.

Folds split by source section (serial sections are correlated): the sorted sections form ``num_folds`` groups
of consecutive sections; fold ``k`` tests on group ``k``, validates on group ``(k + 1) % num_folds`` and trains
on the rest. With 20 sections, 5 folds and 256 px crops: 12/4/4 sections = 192/64/64 crops per fold.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

import numpy as np

from .classes import CLASS_NAMES, DROSOPHILA_VALUE_MAP
from .datalist import write_json
from .io import read_image, write_png

__all__ = [
    "find_drosophila_sections",
    "map_label_values",
    "prepare_drosophila",
    "section_folds",
    "crop_grid",
    "sha256_file",
    "verify_manifest",
]

logger = logging.getLogger(__name__)

LICENCE = "CC BY-NC-SA 3.0 (https://creativecommons.org/licenses/by-nc-sa/3.0/)"
REFERENCE = (
    "Stephan Gerhard, Jan Funke, Julien Martel, Albert Cardona, Richard Fetter. Segmented anisotropic ssTEM "
    "dataset of neural tissue. figshare, 2013. doi:10.6084/m9.figshare.856713"
)
_VERSION = (
    3  # 2: sources with sha256, the fold assignment and the outputs' sha256 in manifest.json; 3: *_sections lists
)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_manifest(out: str | os.PathLike) -> list[str]:
    """Output files of a prepared folder that are missing or whose sha256 differs from ``manifest.json``.

    Args:
        out: the prepared folder.

    Returns:
        the relative paths that do not match (empty when everything matches).

    Raises:
        FileNotFoundError: when ``out/manifest.json`` is missing (the preparation did not complete).
        ValueError: when the manifest has no ``outputs`` (written by an older version: prepare again).
    """
    out = Path(out)
    manifest_path = out / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: not found; run `python -m scripts.data.prepare drosophila` first.")
    outputs = json.loads(manifest_path.read_text()).get("outputs")
    if not isinstance(outputs, dict):
        raise ValueError(f"{manifest_path}: no output checksums (an older preparation); prepare the dataset again.")
    return [rel for rel, digest in outputs.items() if not (out / rel).is_file() or sha256_file(out / rel) != digest]


def find_drosophila_sections(src: str | os.PathLike) -> tuple[list[tuple[int, Path, Path]], list[tuple[int, Path]]]:
    """Locate the labelled (stack1) and unlabelled (stack2) sections of the dataset.

    Args:
        src: the dataset folder (holding ``stack1/`` and optionally ``stack2/``).

    Returns:
        ``(labelled, unlabelled)``: sorted lists of ``(index, raw_path, label_path)`` and ``(index, raw_path)``.

    Raises:
        FileNotFoundError: when ``stack1/raw`` or ``stack1/labels`` is missing.
        ValueError: when a raw section has no label file or vice versa (the files are named).
    """
    src = Path(src)
    raw_dir, lab_dir = src / "stack1" / "raw", src / "stack1" / "labels"
    for d in (raw_dir, lab_dir):
        if not d.is_dir():
            raise FileNotFoundError(
                f"{d}: folder not found; --src must be the Drosophila ssTEM dataset folder holding stack1/raw and "
                "stack1/labels (e.g. a clone of github.com/unidesigner/groundtruth-drosophila-vnc)."
            )

    def indexed(folder: Path, pattern: str) -> dict[int, Path]:
        found = {}
        for p in folder.iterdir():
            m = re.fullmatch(pattern, p.name)
            if m:
                found[int(m.group(1))] = p
        return found

    raws = indexed(raw_dir, r"(\d+)\.tiff?")
    labs = indexed(lab_dir, r"labels(\d+)\.png")
    if not raws:
        raise ValueError(f"{raw_dir}: no NN.tif sections found.")
    unpaired = [str(raws[i]) for i in sorted(set(raws) - set(labs))] + [
        str(labs[i]) for i in sorted(set(labs) - set(raws))
    ]
    if unpaired:
        raise ValueError(f"{src}: sections without a raw/label partner: {', '.join(unpaired)}.")
    labelled = [(i, raws[i], labs[i]) for i in sorted(raws)]
    stack2 = src / "stack2" / "raw"
    unlabelled = sorted(indexed(stack2, r"(\d+)\.tiff?").items()) if stack2.is_dir() else []
    return labelled, unlabelled


def map_label_values(label: np.ndarray, value_map: dict[int, int], name: str | os.PathLike = "label") -> np.ndarray:
    """Map raw label values to class indices through ``value_map``.

    Args:
        label: integer label array.
        value_map: raw value -> class index.
        name: file name for the error message.

    Returns:
        ``uint8`` class-index array of ``label``'s shape.

    Raises:
        ValueError: when ``label`` holds values not in ``value_map`` (the message names ``name`` and the values).
    """
    label = np.asarray(label)
    small = label.dtype in (np.uint8, np.uint16)  # fast path: a lookup table over all possible values
    values = np.flatnonzero(np.bincount(label.ravel())) if small else np.unique(label)
    missing = [v for v in values.tolist() if v not in value_map]
    if missing:
        shown = ", ".join(str(v) for v in missing[:20]) + (", ..." if len(missing) > 20 else "")
        raise ValueError(
            f"{name}: label values [{shown}] are not in the class map {dict(sorted(value_map.items()))}; "
            "add them to the class map or fix the label file."
        )
    if small:
        lut = np.zeros(int(values.max()) + 1, np.uint8)
        lut[values] = [value_map[v] for v in values.tolist()]
        return lut[label]
    mapped = np.asarray([value_map[v] for v in values.tolist()], np.uint8)
    return mapped[np.searchsorted(values, label)]


def crop_grid(height: int, width: int, crop: int) -> list[tuple[int, int, int, int]]:
    """Non-overlapping ``crop`` x ``crop`` tiles covering an image, as ``(row, col, y0, x0)``.

    When a side is not a multiple of ``crop``, one more tile flush with that border is added (it overlaps its
    neighbour), so no labelled pixel is dropped. A side shorter than ``crop`` gives no tile.
    """

    def starts(n: int) -> list[int]:
        s = list(range(0, n - crop + 1, crop))
        if s and s[-1] + crop < n:
            s.append(n - crop)
        return s

    return [(r, c, y, x) for r, y in enumerate(starts(height)) for c, x in enumerate(starts(width))]


def section_folds(sections: list[int], num_folds: int = 5) -> list[dict[str, list[int]]]:
    """Split sorted section indices into ``num_folds`` groups of consecutive sections and build the folds.

    Fold ``k``: ``test`` = group ``k``, ``validation`` = group ``(k + 1) % num_folds``, ``training`` = the rest.

    Raises:
        ValueError: when there are fewer than 3 folds or fewer sections than folds.
    """
    if num_folds < 3:
        raise ValueError(f"num_folds must be at least 3 (train/validation/test groups), got {num_folds}.")
    if len(sections) < num_folds:
        raise ValueError(f"{len(sections)} sections cannot be split into {num_folds} folds.")
    groups = [g.tolist() for g in np.array_split(np.asarray(sorted(sections)), num_folds)]
    folds = []
    for k in range(num_folds):
        val = (k + 1) % num_folds
        train = [s for g, grp in enumerate(groups) if g not in (k, val) for s in grp]
        folds.append({"training": train, "validation": groups[val], "testing": groups[k]})
    return folds


def prepare_drosophila(
    src: str | os.PathLike, out: str | os.PathLike, crop_size: int = 256, num_folds: int = 5
) -> list[Path]:
    """Prepare the Drosophila ssTEM dataset (see the module docstring for the layouts).

    Idempotent: when ``out/manifest.json`` records the same parameters, source files (paths and sha256) and split,
    and every output file it lists exists with its recorded sha256, nothing is rewritten; otherwise every output is
    (re)written with the same deterministic content.

    Args:
        src: dataset folder (``stack1/``, ``stack2/``).
        out: output folder.
        crop_size: side of the square training crops.
        num_folds: number of cross-validation folds.

    Returns:
        The fold datalist paths ``[out/datalist_fold0.json, ...]``.

    Raises:
        FileNotFoundError: when the source layout is missing.
        ValueError: for unpaired sections, label grey values outside ``DROSOPHILA_VALUE_MAP`` (file and value
            named), images of different sizes, or bad ``crop_size``/``num_folds``.
    """
    if not isinstance(crop_size, int) or crop_size < 8:
        raise ValueError(f"crop_size must be an int >= 8, got {crop_size!r}.")
    src, out = Path(src), Path(out)
    labelled, unlabelled = find_drosophila_sections(src)
    folds = section_folds([i for i, _, _ in labelled], num_folds)
    datalist_paths = [out / f"datalist_fold{k}.json" for k in range(num_folds)]
    manifest = {
        "dataset": "drosophila-vnc",
        "version": _VERSION,
        "crop_size": crop_size,
        "num_folds": num_folds,
        "sources": [
            {"path": str(path.resolve()), "sha256": sha256_file(path)}
            for path in [p for _, r, lab in labelled for p in (r, lab)] + [r for _, r in unlabelled]
        ],
        "folds": [{"fold": k, **fold} for k, fold in enumerate(folds)],
    }
    manifest_path = out / "manifest.json"
    if _up_to_date(out, manifest_path, manifest):
        logger.info("%s is up to date", out)
        return datalist_paths
    if manifest_path.exists():  # written again last, once everything else is complete
        manifest_path.unlink()

    crops: dict[int, list[dict]] = {}
    sections: dict[int, dict] = {}
    shape = None
    for i, raw_path, lab_path in labelled:
        image = read_image(raw_path)
        label = read_image(lab_path)
        if image.ndim != 2 or image.dtype != np.uint8:
            raise ValueError(f"{raw_path}: expected an 8-bit grey section, got {image.dtype} of shape {image.shape}.")
        if label.shape != image.shape:
            raise ValueError(
                f"{lab_path}: label shape {label.shape} differs from its section {raw_path.name} {image.shape}."
            )
        if shape is not None and image.shape != shape:
            raise ValueError(f"{raw_path}: section shape {image.shape} differs from the others {shape}.")
        shape = image.shape
        label = map_label_values(label, DROSOPHILA_VALUE_MAP, lab_path)
        name = f"sec_{i:02d}"
        write_png(out / "sections" / "images" / f"{name}.png", image)
        write_png(out / "sections" / "labels" / f"{name}.png", label)
        sections[i] = {"image": f"sections/images/{name}.png", "label": f"sections/labels/{name}.png"}
        crops[i] = []
        for r, c, y, x in crop_grid(*image.shape, crop_size):
            crop_name = f"{name}_r{r}_c{c}.png"
            write_png(out / "crops" / "images" / crop_name, image[y : y + crop_size, x : x + crop_size])
            write_png(out / "crops" / "labels" / crop_name, label[y : y + crop_size, x : x + crop_size])
            crops[i].append({"image": f"crops/images/{crop_name}", "label": f"crops/labels/{crop_name}"})
        if not crops[i]:
            raise ValueError(f"{raw_path}: section {image.shape} is smaller than crop_size={crop_size}.")
    unlabelled_items = []
    for i, raw_path in unlabelled:
        image = read_image(raw_path)
        write_png(out / "unlabelled" / f"stack2_{i:02d}.png", image)
        unlabelled_items.append({"image": f"unlabelled/stack2_{i:02d}.png"})

    for k, fold in enumerate(folds):
        write_json(
            datalist_paths[k],
            {
                "name": "Drosophila ssTEM (stack1) crops",
                "description": f"fold {k} of {num_folds}, split by section: "
                + ", ".join(f"{key} sections {fold[key]}" for key in ("training", "validation", "testing")),
                "reference": REFERENCE,
                "licence": LICENCE,
                "fold": k,
                "training": [item for s in fold["training"] for item in crops[s]],
                "validation": [item for s in fold["validation"] for item in crops[s]],
                "testing": [item for s in fold["testing"] for item in crops[s]],
                "training_sections": [sections[s] for s in fold["training"]],
                "validation_sections": [sections[s] for s in fold["validation"]],
                "testing_sections": [sections[s] for s in fold["testing"]],
                "unlabelled": unlabelled_items,
            },
        )
    sources: dict[int, list[int]] = {}
    for value, index in DROSOPHILA_VALUE_MAP.items():
        sources.setdefault(index, []).append(value)
    write_json(
        out / "classes.json",
        {
            "classes": [
                {"index": idx, "name": name, "source_grey_values": sorted(sources.get(idx, []))}
                for idx, name in enumerate(CLASS_NAMES)
            ]
        },
    )
    (out / "README.txt").write_text(
        "Drosophila ssTEM (ventral nerve cord) dataset, prepared by `python -m scripts.data.prepare drosophila`.\n\n"
        f"Licence: {LICENCE}. Non-commercial use only; derived data must be shared under the same licence.\n"
        f"If you publish results obtained with it, cite:\n  {REFERENCE}\n\n"
        "Labels are class indices 0..4 (see classes.json); crops are non-overlapping "
        f"{crop_size}x{crop_size} tiles; folds are split by section (datalist_fold*.json).\n"
    )
    written = [item[key] for items in crops.values() for item in items for key in ("image", "label")]
    written += [sections[i][key] for i in sorted(sections) for key in ("image", "label")]
    written += [item["image"] for item in unlabelled_items]
    written += [p.name for p in datalist_paths] + ["classes.json", "README.txt"]
    manifest["outputs"] = {rel: sha256_file(out / rel) for rel in written}
    write_json(manifest_path, manifest)
    logger.info(
        "prepared %d sections (%d crops) and %d unlabelled sections in %s",
        len(labelled),
        sum(len(v) for v in crops.values()),
        len(unlabelled),
        out,
    )
    return datalist_paths


def _up_to_date(out: Path, manifest_path: Path, manifest: dict) -> bool:
    """Same parameters, sources and split as recorded, and every recorded output file intact."""
    try:
        recorded = json.loads(manifest_path.read_text())
        if {k: v for k, v in recorded.items() if k != "outputs"} != manifest or not recorded.get("outputs"):
            return False
        return not verify_manifest(out)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
