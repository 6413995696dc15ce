"""Preparation of a user's own ``images/`` + ``labels/`` folders into the bundle's layout.

Pairs images and labels by file stem (``a.tif`` with ``a.png``, ``b.nii.gz`` with ``b.nii.gz``), maps label
values to class indices through a class map, splits by source image (seeded), optionally cuts crops, and writes
the same layout as the Drosophila preparation::

    sections/images/<stem>.png, sections/labels/<stem>.png   whole images (uint8 grey/RGB) and class-index labels
    crops/images/<stem>_rR_cC.png, crops/labels/...          when crop > 0
    datalist.json                                            training / validation / testing (+ *_sections)
    classes.json
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from .datalist import write_json
from .drosophila import crop_grid, map_label_values
from .io import file_stem, image_extension, read_image, to_uint8, write_png

__all__ = ["parse_class_map", "pair_files", "prepare_folders"]

logger = logging.getLogger(__name__)


def parse_class_map(class_map: str | dict) -> dict[int, int]:
    """Parse a class map ``"0:0,128:1,255:2"`` (label value -> class index) or validate a dict.

    Raises:
        ValueError: for a malformed entry, a value given twice, a class index outside 0..255, or class indices
            with a gap (each of 0..max must be used).
    """
    if isinstance(class_map, dict):
        entries = list(class_map.items())
    elif isinstance(class_map, str):
        entries = []
        for part in class_map.replace(" ", "").split(","):
            if not part:
                continue
            if part.count(":") != 1:
                raise ValueError(f"class map entry {part!r} must look like 'value:index' (e.g. '0:0,128:1,255:2').")
            entries.append(tuple(part.split(":")))
    else:
        raise ValueError(f"class map must be a string like '0:0,128:1,255:2' or a dict, got {class_map!r}.")
    result: dict[int, int] = {}
    for value, index in entries:
        try:
            value, index = int(value), int(index)
        except (TypeError, ValueError):
            raise ValueError(
                f"class map entry {value}:{index} must hold two integers (label value:class index)."
            ) from None
        if value in result:
            raise ValueError(f"class map gives label value {value} twice.")
        if not 0 <= index <= 255:
            raise ValueError(f"class map entry {value}:{index}: class index must be in 0..255.")
        result[value] = index
    if not result:
        raise ValueError("class map is empty; give it as 'value:index,...', e.g. '0:0,128:1,255:2'.")
    missing = sorted(set(range(max(result.values()) + 1)) - set(result.values()))
    if missing:
        used = sorted(set(result.values()))
        renumbered = ",".join(f"{v}:{used.index(i)}" for v, i in sorted(result.items()))
        raise ValueError(
            f"class map {class_map_text(result)} leaves class index(es) {', '.join(map(str, missing))} without a label "
            f"value: classes must be numbered 0..{len(used) - 1} without gaps (an empty class cannot be learned and "
            f'distorts the mean IoU). Renumber, e.g. --class-map "{renumbered}".'
        )
    return result


def class_map_text(class_map: dict[int, int]) -> str:
    """``{0: 0, 128: 1}`` as ``"0:0,128:1"``."""
    return ",".join(f"{v}:{i}" for v, i in sorted(class_map.items()))


def _list(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder not found.")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith(".") and image_extension(p):
            stem = file_stem(p)
            if stem in found:
                raise ValueError(f"{folder}: {found[stem].name} and {p.name} have the same stem; keep one of them.")
            found[stem] = p
    if not found:
        raise ValueError(f"{folder}: no .png/.jpg/.tif/.tiff/.nii/.nii.gz files found.")
    return found


def pair_files(images_dir: str | os.PathLike, labels_dir: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """Pair image and label files by stem.

    Returns:
        Sorted ``(stem, image_path, label_path)`` triples.

    Raises:
        FileNotFoundError: when a folder is missing.
        ValueError: when a folder holds no image, two files share a stem, or some files have no partner
            (all of them are listed).
    """
    images, labels = _list(Path(images_dir)), _list(Path(labels_dir))
    no_label = sorted(set(images) - set(labels))
    no_image = sorted(set(labels) - set(images))
    if no_label or no_image:
        lines = []
        if no_label:
            lines.append(f"images without a label in {labels_dir}: {', '.join(images[s].name for s in no_label)}")
        if no_image:
            lines.append(f"labels without an image in {images_dir}: {', '.join(labels[s].name for s in no_image)}")
        raise ValueError(
            "unpaired files (images and labels are paired by file name without extension):\n  " + "\n  ".join(lines)
        )
    return [(s, images[s], labels[s]) for s in sorted(images)]


def _split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {f}.")
    n_val = max(int(round(n * val_fraction)), 1 if val_fraction > 0 else 0)
    n_test = max(int(round(n * test_fraction)), 1 if test_fraction > 0 else 0)
    if n - n_val - n_test < 1:
        raise ValueError(
            f"{n} image(s) cannot be split into training/validation/testing with val_fraction={val_fraction} and "
            f"test_fraction={test_fraction}; add images or lower the fractions."
        )
    return n_val, n_test


def _label_2d(label: np.ndarray, path: Path) -> np.ndarray:
    if label.ndim == 3:
        if np.all(label == label[..., :1]):
            return label[..., 0]
        raise ValueError(
            f"{path}: colour-coded (RGB) label; save labels as single-channel images of grey values or class "
            "indices, then map them with --class-map."
        )
    return label


def prepare_folders(
    images: str | os.PathLike,
    labels: str | os.PathLike,
    out: str | os.PathLike,
    class_map: str | dict,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    crop: int = 0,
    class_names: list[str] | None = None,
) -> Path:
    """Prepare a user's image/label folders (see the module docstring for the layout).

    Images are converted to ``uint8`` (see :func:`scripts.data.io.to_uint8`), grey or RGB kept as is. The split
    is by source image, drawn with ``seed`` (same inputs and seed, same split); all crops of an image go to the
    same split, and ``training_sections``, ``validation_sections`` and ``testing_sections`` list the whole images of
    each split (random patches are drawn from them with ``experiments/recipe/section_patches.json``).

    Args:
        images: folder of 2D images (PNG, JPEG, TIFF, NIfTI; grey or RGB).
        labels: folder of 2D label images with the same stems.
        out: output folder.
        class_map: label value -> class index, ``"0:0,128:1,255:2"`` or a dict.
        val_fraction: fraction of images for validation (at least one image when > 0).
        test_fraction: fraction of images for testing (at least one image when > 0).
        seed: split seed.
        crop: side of square non-overlapping crops (a last tile flush with the border covers the remainder);
            0 keeps whole images. Images smaller than ``crop`` are kept whole.
        class_names: optional names for ``classes.json`` (default ``class_<index>``).

    Returns:
        Path of ``out/datalist.json``.

    Raises:
        FileNotFoundError: for a missing folder.
        ValueError: for unpaired files, unreadable files, image/label size mismatches, label values outside the
            class map (file and values named), a bad class map, bad fractions or too few images.
    """
    if not isinstance(crop, int) or crop < 0:
        raise ValueError(f"crop must be an int >= 0 (0 keeps whole images), got {crop!r}.")
    value_map = parse_class_map(class_map)
    num_classes = max(value_map.values()) + 1
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} names but the class map uses {num_classes} classes.")
    pairs = pair_files(images, labels)
    n_val, n_test = _split_counts(len(pairs), val_fraction, test_fraction)
    order = np.random.default_rng(seed).permutation(len(pairs))
    split_of = {}
    for rank, i in enumerate(order):
        split_of[pairs[i][0]] = "testing" if rank < n_test else "validation" if rank < n_test + n_val else "training"

    out = Path(out)
    datalist: dict = {
        "name": f"prepared from {Path(images).name}/ and {Path(labels).name}/",
        "description": f"split by image with seed {seed}; crop {crop or 'none'}",
        "training": [],
        "validation": [],
        "testing": [],
        "training_sections": [],
        "validation_sections": [],
        "testing_sections": [],
    }
    for stem, image_path, label_path in pairs:
        image = to_uint8(read_image(image_path))
        label = map_label_values(_label_2d(read_image(label_path), label_path), value_map, label_path)
        if image.shape[:2] != label.shape:
            raise ValueError(
                f"{label_path}: label size {list(label.shape)} differs from its image {image_path.name} "
                f"{list(image.shape[:2])}."
            )
        section = {"image": f"sections/images/{stem}.png", "label": f"sections/labels/{stem}.png"}
        write_png(out / section["image"], image)
        write_png(out / section["label"], label)
        split = split_of[stem]
        datalist[f"{split}_sections"].append(section)
        tiles = crop_grid(*label.shape, crop) if crop else []
        if crop and not tiles:
            logger.warning("%s: %s is smaller than crop=%d; kept whole", image_path, list(label.shape), crop)
        if not tiles:
            datalist[split].append(section)
            continue
        for r, c, y, x in tiles:
            name = f"{stem}_r{r}_c{c}.png"
            write_png(out / "crops" / "images" / name, image[y : y + crop, x : x + crop])
            write_png(out / "crops" / "labels" / name, label[y : y + crop, x : x + crop])
            datalist[split].append({"image": f"crops/images/{name}", "label": f"crops/labels/{name}"})

    write_json(
        out / "classes.json",
        {
            "classes": [
                {
                    "index": i,
                    "name": class_names[i] if class_names else f"class_{i}",
                    "source_values": sorted(v for v, j in value_map.items() if j == i),
                }
                for i in range(num_classes)
            ]
        },
    )
    path = write_json(out / "datalist.json", datalist)
    logger.info(
        "prepared %d images (%d/%d/%d items) in %s",
        len(pairs),
        *(len(datalist[k]) for k in ("training", "validation", "testing")),
        out,
    )
    return path
