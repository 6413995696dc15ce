"""Preparation of a user's own ``images/`` + ``labels/`` folders (or one image stack and its label stack) into the
bundle's layout.

Pairs images and labels by file stem (``a.tif`` with ``a.png``, ``b.nii.gz`` with ``b.nii.gz``; two files given
are one pair: ``train-volume.tif`` with ``train-labels.tif``), maps label values to class indices through a class
map, splits, optionally cuts crops, and writes the same layout as the Drosophila preparation::

    sections/images/<stem>.png, sections/labels/<stem>.png   whole images (uint8 grey/RGB) and class-index labels
    crops/images/<stem>_rR_cC.png, crops/labels/...          when crop > 0
    datalist.json                                            training / validation / testing (+ *_sections)
    classes.json

2D images are split by image, drawn with the seed. A **stack** (multi-page TIFF, OME-TIFF, 3-D NIfTI:
:mod:`scripts.data.stacks`) with a label stack of as many sections is split **by section** into consecutive
blocks, as the Drosophila folds are (serial sections look alike, so neighbours must not straddle training and
testing): its first sections test, the next validate, the rest train; each section becomes ``<stem>_z<k>.png``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from .datalist import write_json
from .drosophila import crop_grid, map_label_values
from .header import read_header
from .io import file_stem, image_extension, read_image, to_uint8, write_png
from .stacks import open_stack, section_name

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

    Args:
        images_dir, labels_dir: two folders, or two files (one pair, named after the image).

    Returns:
        Sorted ``(stem, image_path, label_path)`` triples.

    Raises:
        FileNotFoundError: when a folder is missing.
        ValueError: when a folder holds no image, two files share a stem, or some files have no partner
            (all of them are listed).
    """
    if Path(images_dir).is_file() or Path(labels_dir).is_file():
        for given in (images_dir, labels_dir):
            if not Path(given).is_file() or not image_extension(given):
                raise ValueError(f"{given}: give two image files (a stack and its label stack) or two folders.")
        return [(file_stem(images_dir), Path(images_dir), Path(labels_dir))]
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


def _split_counts(n: int, val_fraction: float, test_fraction: float, what: str = "image(s)") -> tuple[int, int]:
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {f}.")
    n_val = max(int(round(n * val_fraction)), 1 if val_fraction > 0 else 0)
    n_test = max(int(round(n * test_fraction)), 1 if test_fraction > 0 else 0)
    if n - n_val - n_test < 1:
        raise ValueError(
            f"{n} {what} cannot be split into training/validation/testing with val_fraction={val_fraction} and "
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


def _sections(path: Path) -> int:
    header = read_header(path)
    if header.problem:
        raise ValueError(header.problem)
    return header.sections


def _stack_sections(image_path: Path, label_path: Path):
    """``(image, label)`` of every section of a stack and its label stack, one at a time (images to uint8 with the
    stack's own min..max, the same for every section)."""
    with open_stack(image_path) as images, open_stack(label_path) as labels:
        low = high = None
        if images.dtype != "uint8":  # one range for the whole stack, so that sections keep their relative contrast
            ranges = [(float(np.min(s)), float(np.max(s))) for s in images]
            low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
        for k in range(images.sections):
            image = images.section(k)
            if low is not None:
                image = (
                    np.zeros(image.shape, np.uint8)
                    if high <= low
                    else np.round((image.astype(np.float64) - low) * (255.0 / (high - low))).astype(np.uint8)
                )
            yield image, labels.section(k)


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

    Images are converted to ``uint8`` (see :func:`scripts.data.io.to_uint8`; a stack by its own min..max), grey or
    RGB kept as is. 2D images are split by source image, drawn with ``seed`` (same inputs and seed, same split); a
    stack by section, in consecutive blocks (module docstring); all crops of an image go to the same split, and
    ``training_sections``, ``validation_sections`` and ``testing_sections`` list the whole images of each split
    (random patches are drawn from them with ``experiments/recipe/section_patches.json``).

    Args:
        images: folder of 2D images or stacks (PNG, JPEG, TIFF, NIfTI; grey or RGB), or one stack file.
        labels: folder of label images or stacks with the same stems, or the stack file's label stack.
        out: output folder.
        class_map: label value -> class index, ``"0:0,128:1,255:2"`` or a dict.
        val_fraction: fraction of images (of each stack's sections) for validation (at least one when > 0).
        test_fraction: fraction of images (of each stack's sections) for testing (at least one when > 0).
        seed: split seed.
        crop: side of square non-overlapping crops (a last tile flush with the border covers the remainder);
            0 keeps whole images. Images smaller than ``crop`` are kept whole.
        class_names: optional names for ``classes.json`` (default ``class_<index>``).

    Returns:
        Path of ``out/datalist.json``.

    Raises:
        FileNotFoundError: for a missing folder.
        ValueError: for unpaired files, unreadable files, image/label size or section count mismatches, label values
            outside the class map (file and values named), a bad class map, bad fractions or too few images.
    """
    if not isinstance(crop, int) or crop < 0:
        raise ValueError(f"crop must be an int >= 0 (0 keeps whole images), got {crop!r}.")
    value_map = parse_class_map(class_map)
    num_classes = max(value_map.values()) + 1
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} names but the class map uses {num_classes} classes.")
    pairs = pair_files(images, labels)
    sections = {stem: _sections(image_path) for stem, image_path, _ in pairs}
    for stem, image_path, label_path in pairs:
        if _sections(label_path) != sections[stem]:
            raise ValueError(
                f"{label_path}: holds {_sections(label_path)} section(s), its image {image_path.name} "
                f"{sections[stem]}; give a label stack of as many sections."
            )
    flat = [p for p in pairs if sections[p[0]] == 1]
    split_of = {}
    if flat:
        n_val, n_test = _split_counts(len(flat), val_fraction, test_fraction)
        order = np.random.default_rng(seed).permutation(len(flat))
        for rank, i in enumerate(order):
            split_of[flat[i][0]] = "testing" if rank < n_test else "validation" if rank < n_test + n_val else "training"

    out = Path(out)
    datalist: dict = {
        "name": f"prepared from {Path(images).name}/ and {Path(labels).name}/",
        "description": f"split by image with seed {seed}, stacks by section in consecutive blocks (testing first, then "
        f"validation); crop {crop or 'none'}",
        "training": [],
        "validation": [],
        "testing": [],
        "training_sections": [],
        "validation_sections": [],
        "testing_sections": [],
    }
    for stem, image_path, label_path in pairs:
        n = sections[stem]
        if n == 1:
            units = [(stem, split_of[stem], (to_uint8(read_image(image_path)), read_image(label_path)))]
        else:
            n_val, n_test = _split_counts(n, val_fraction, test_fraction, f"sections of {image_path.name}")
            splits = ["testing"] * n_test + ["validation"] * n_val + ["training"] * (n - n_test - n_val)
            units = (
                (section_name(stem, k, n), splits[k], pair)
                for k, pair in enumerate(_stack_sections(image_path, label_path))
            )
        for name, split, (image, label) in units:
            label = map_label_values(_label_2d(label, label_path), value_map, label_path)
            _write_unit(out, datalist, name, split, image, label, crop, image_path, label_path)

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
        "prepared %d image(s) or stack(s), %d section(s) (%d/%d/%d items) in %s",
        len(pairs),
        sum(sections.values()),
        *(len(datalist[k]) for k in ("training", "validation", "testing")),
        out,
    )
    return path


def _write_unit(
    out: Path,
    datalist: dict,
    stem: str,
    split: str,
    image: np.ndarray,
    label: np.ndarray,
    crop: int,
    image_path: Path,
    label_path: Path,
) -> None:
    """Write one whole image (a 2D file or a section of a stack) and its crops, and list them under ``split``."""
    if image.shape[:2] != label.shape:
        raise ValueError(
            f"{label_path}: label size {list(label.shape)} differs from its image {image_path.name} "
            f"{list(image.shape[:2])}."
        )
    section = {"image": f"sections/images/{stem}.png", "label": f"sections/labels/{stem}.png"}
    write_png(out / section["image"], image)
    write_png(out / section["label"], label)
    datalist[f"{split}_sections"].append(section)
    tiles = crop_grid(*label.shape, crop) if crop else []
    if crop and not tiles:
        logger.warning("%s: %s is smaller than crop=%d; kept whole", image_path, list(label.shape), crop)
    if not tiles:
        datalist[split].append(section)
        return
    for r, c, y, x in tiles:
        name = f"{stem}_r{r}_c{c}.png"
        write_png(out / "crops" / "images" / name, image[y : y + crop, x : x + crop])
        write_png(out / "crops" / "labels" / name, label[y : y + crop, x : x + crop])
        datalist[split].append({"image": f"crops/images/{name}", "label": f"crops/labels/{name}"})
