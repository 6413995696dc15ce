"""Dataset integrity check, run before any training so that bad data fails early with a useful message.

``check_datalist`` reads every listed file once and collects *all* problems (up to a cap) into one
:class:`DatasetError`, each line naming the file and the fix, instead of failing on the first bad file halfway
through an epoch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scripts.checks import check_positive_int
from scripts.errors import UserError

from .io import has_alpha, read_image

__all__ = ["DatasetError", "check_datalist"]


class DatasetError(UserError, ValueError):
    """One or more problems in a dataset; ``problems`` holds one message per problem."""

    def __init__(self, problems: Sequence[str], source: str = "dataset", max_listed: int = 20):
        problems = list(problems)
        super().__init__(problems, source, max_listed)  # its own arguments: pickle (worker processes) rebuilds it
        self.problems = problems
        listed = self.problems[:max_listed]
        more = len(self.problems) - len(listed)
        lines = [f"{source}: {len(self.problems)} problem(s) found:"] + [f"  - {p}" for p in listed]
        if more > 0:
            lines.append(f"  ... and {more} more problem(s).")
        self.message = "\n".join(lines)

    def __str__(self) -> str:
        return self.message


def _load(datalist: Any, keys: Sequence[str], base_dir) -> tuple[str, dict[str, Any], Path]:
    """Return (description, {key: items or None}, base folder)."""
    if isinstance(datalist, (str, os.PathLike)):
        path = Path(datalist)
        if not path.is_file():
            raise DatasetError([f"{path}: datalist file not found; check the datalist_file setting."], str(path))
        try:
            content = json.loads(path.read_text())
        except ValueError as e:  # UnicodeDecodeError included
            raise DatasetError([f"{path}: not valid JSON ({e})."], str(path)) from e
        if not isinstance(content, dict):
            raise DatasetError([f"{path}: a datalist must be a JSON object with lists under its keys."], str(path))
        return str(path), {k: content.get(k) for k in keys}, Path(base_dir) if base_dir else path.parent
    base = Path(base_dir) if base_dir else Path.cwd()
    if isinstance(datalist, dict):
        return "datalist", {k: datalist.get(k) for k in keys}, base
    if isinstance(datalist, (list, tuple)):
        return "datalist", {"items": list(datalist)}, base
    raise TypeError(f"datalist must be a path, a dict or a list of items, got {type(datalist).__name__}.")


def _read(path: Path) -> tuple[np.ndarray | None, str | None]:
    try:
        return read_image(path), None
    except FileNotFoundError:
        return None, f"{path}: file not found; fix the path in the datalist or restore the file."
    except ValueError as e:
        return None, f"{e} Replace or re-export the file, or remove it from the datalist."


def check_datalist(
    datalist,
    num_classes: int,
    in_channels: int | None = None,
    keys: Sequence[str] = ("training", "validation"),
    require_labels: bool = True,
    base_dir: str | os.PathLike | None = None,
    max_listed: int = 20,
    batch_sizes: Mapping[str, int] | None = None,
    intensity_max: float | None = None,
    transform: Callable | Sequence[Callable] | None = None,
) -> dict:
    """Check a segmentation datalist before training.

    Checks that there is at least one training item and every requested list is non-empty; every listed
    image/label exists and is readable; each label has the spatial size of its image, one channel, and integer
    values in ``[0, num_classes)``; each image's channel count (grey 1, RGB 3) equals ``in_channels`` when given,
    and no PNG image has an alpha channel (the loader would read it as an extra channel); optionally, image values do
    not exceed ``intensity_max`` and batched lists hold images of one size.

    Args:
        datalist: a datalist JSON path (relative item paths resolve against its folder), a datalist dict
            (relative paths resolve against ``base_dir`` or the working directory), or a list of items (e.g.
            the output of ``monai.data.load_decathlon_datalist``; ``keys`` is then ignored).
        num_classes: number of classes; label values must lie in ``[0, num_classes)``.
        in_channels: expected image channels (1 grey, 3 RGB); ``None`` skips that check.
        keys: datalist lists to check.
        require_labels: whether every item must have a ``"label"``.
        base_dir: folder to resolve relative paths against (default: the JSON file's folder / the working dir).
        max_listed: at most this many problems are spelled out in the error message.
        batch_sizes: batch size per key of a loader that stacks whole images (e.g. ``{"validation": 4}``); a key
            batched by more than one whose images differ in size is a problem (they cannot be stacked).
        intensity_max: the intensity the input scaling maps to 1 and clips at (``intensity_max`` in the configs);
            an image with larger values (e.g. 16-bit) is a problem. ``None`` skips that check.
        transform: the training loader's deterministic transforms (a callable or a list of them, e.g.
            ``@train#deterministic_transforms``: ``LoadImaged``, ``EnsureChannelFirstd``, ...). Every item is also read
            through them, *as training will read it*: an item they fail on, an image they do not load as
            ``(channels, H, W)`` with the channels and size seen above (e.g. a planar ``(3, H, W)`` RGB TIFF or an
            ImageJ TIFF, which MONAI's reader sees differently), or a label not loaded as ``(1, H, W)`` of its image's
            size is a problem (such items could not be stacked into a batch). ``None`` skips this pass.

    Returns:
        A summary dict: ``counts`` (items per key), ``image_channels`` (sorted distinct channel counts),
        ``min_size``/``max_size`` (smallest/largest image ``[H, W]``), ``class_pixels`` (pixels per class over
        the distinct label files, a list of ``num_classes`` ints, usable for class weights).

    Raises:
        DatasetError: listing every problem found, each naming the file and the fix.
        TypeError: when ``datalist`` is of an unsupported type.
        ValueError: for a bad ``num_classes`` or ``in_channels``.
    """
    check_positive_int("num_classes", num_classes)
    check_positive_int("in_channels", in_channels, allow_none=True)
    if isinstance(keys, str):
        keys = (keys,)
    source, lists, base = _load(datalist, keys, base_dir)

    problems: list[str] = []
    counts: dict[str, int] = {}
    images: dict[Path, tuple[tuple[int, int] | None, str | None]] = {}  # path -> (size, error), read once
    image_channels: dict[Path, int] = {}
    pairs: dict[tuple[Path, Path | None], None] = {}  # (image, label) read by the reader without error
    labels: dict[Path, tuple[tuple[int, int] | None, str | None]] = {}
    channels: set[int] = set()
    sizes: list[tuple[int, int]] = []
    class_pixels = np.zeros(num_classes, np.int64)

    def resolve(p: str) -> Path:
        p = Path(p)
        return p if p.is_absolute() else base / p

    key_sizes: dict[str, dict[tuple[int, int], Path]] = {}  # key -> image size -> first image of that size
    for key, items in lists.items():
        if items is None:
            hint = " (there must be at least one training item)" if key == "training" else ""
            problems.append(f"{source}: no {key!r} list{hint}; add it, or check only the keys you use (keys=...).")
            continue
        if not isinstance(items, list):
            problems.append(f"{source}: {key!r} must be a list of {{'image': ..., 'label': ...}} items.")
            continue
        counts[key] = len(items)
        if not items:
            what = "no training items" if key in ("training", "items") else f"the {key!r} list is empty"
            problems.append(f"{source}: {what}; add at least one item (prepare the data with scripts.data.prepare).")
        for n, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("image"), (str, os.PathLike)):
                problems.append(f"{source}: {key}[{n}] is not an item with an 'image' path: {item!r}.")
                continue
            image_path = resolve(item["image"])
            if image_path not in images:
                image, err = _read(image_path)
                if err:
                    problems.append(err)
                    images[image_path] = (None, err)
                else:
                    c = 1 if image.ndim == 2 else image.shape[-1]
                    channels.add(c)
                    image_channels[image_path] = c
                    if has_alpha(image_path):
                        problems.append(
                            f"{image_path}: image has an alpha (transparency) channel, which the training loader "
                            "reads as an extra image channel; save it without alpha (grey or RGB), e.g. with "
                            "`python -m scripts.data.prepare folders ...`, which writes grey/RGB PNGs."
                        )
                    peak = float(image.max()) if intensity_max is not None and image.size else 0.0
                    if intensity_max is not None and peak > intensity_max:
                        problems.append(
                            f"{image_path}: pixel values up to {peak:g} exceed intensity_max={intensity_max:g} (the "
                            f"input scaling clips there, so the image would look saturated); set --intensity_max to "
                            f"the data's range (e.g. {65535 if peak > 4095 else 4095} for {image.dtype} images), or "
                            "convert the images to 8 bits (`python -m scripts.data.prepare folders ...` does)."
                        )
                    sizes.append(image.shape[:2])
                    images[image_path] = (image.shape[:2], None)
                    if in_channels is not None and c != in_channels:
                        problems.append(
                            f"{image_path}: image has {c} channel(s) but in_channels={in_channels}; set in_channels "
                            f"to {c} in the config, or convert the image to {'grey' if in_channels == 1 else 'RGB'}."
                        )
            image_size = images[image_path][0]
            if image_size is not None:
                key_sizes.setdefault(key, {}).setdefault(tuple(image_size), image_path)
            if "label" not in item or item["label"] is None:
                if require_labels:
                    problems.append(f"{source}: {key}[{n}] ({image_path.name}) has no 'label'; add the label path.")
                continue
            label_path = resolve(item["label"])
            if label_path not in labels:
                label, err = _read(label_path)
                if err:
                    problems.append(err)
                    labels[label_path] = (None, err)
                    continue
                labels[label_path] = (label.shape[:2], None)
                if label.ndim != 2:
                    problems.append(
                        f"{label_path}: label has {label.shape[-1]} channels; labels must be single-channel "
                        "class-index maps (re-export it as a grey PNG holding values 0..num_classes-1)."
                    )
                    continue
                if not np.issubdtype(label.dtype, np.integer):
                    if not np.all(np.isfinite(label)) or np.any(label != np.round(label)):
                        problems.append(f"{label_path}: label holds non-integer values; store class indices.")
                        continue
                    label = label.astype(np.int64)
                values = np.unique(label)
                bad = values[(values < 0) | (values >= num_classes)]
                if bad.size:
                    shown = ", ".join(str(int(v)) for v in bad[:10]) + (", ..." if bad.size > 10 else "")
                    problems.append(
                        f"{label_path}: label values [{shown}] outside 0..{num_classes - 1} (num_classes="
                        f"{num_classes}); fix the class map used to prepare the labels (e.g. `python -m "
                        "scripts.data.prepare folders --class-map ...`) or set num_classes."
                    )
                else:
                    class_pixels += np.bincount(label.ravel().astype(np.int64), minlength=num_classes)
            label_size = labels[label_path][0]
            if image_size is not None and label_size is not None and image_size == label_size:
                pairs[(image_path, label_path)] = None
            if image_size is not None and label_size is not None and image_size != label_size:
                problems.append(
                    f"{label_path}: label size {list(label_size)} differs from its image {image_path.name} "
                    f"{list(image_size)}; labels must have the image's height and width."
                )
    if transform is not None:
        problems += _check_loader(pairs, images, image_channels, transform)
    for key, batch in (batch_sizes or {}).items():
        found = key_sizes.get(key, {})
        if batch > 1 and len(found) > 1:
            shown = ", ".join(f"{p.name} {h}x{w}" for (h, w), p in list(found.items())[:3])
            problems.append(
                f"{source}: the {key!r} images differ in size ({shown}{', ...' if len(found) > 3 else ''}) but are "
                f"batched {batch} at a time, and images of different sizes cannot be stacked; set that batch size "
                "to 1 (e.g. --val_batch_size 1), or crop the images to one size (scripts.data.prepare ... --crop)."
            )
    if problems:
        raise DatasetError(problems, source, max_listed)
    return {
        "counts": counts,
        "image_channels": sorted(channels),
        "min_size": [int(min(s[0] for s in sizes)), int(min(s[1] for s in sizes))] if sizes else None,
        "max_size": [int(max(s[0] for s in sizes)), int(max(s[1] for s in sizes))] if sizes else None,
        "class_pixels": [int(v) for v in class_pixels],
    }


def _check_loader(pairs, images, image_channels, transform) -> list[str]:
    """Read each (image, label) pair through the training loader's transforms; see ``check_datalist(transform=)``."""
    from monai.transforms import Compose

    if not callable(transform):
        transform = Compose(list(transform))
    problems = []
    for image_path, label_path in pairs:
        item = {"image": str(image_path), "label": str(label_path)}
        try:
            data = transform(item)
        except Exception as e:  # noqa: BLE001 - whatever the loader fails on is the problem to report
            while e.__cause__ is not None:
                e = e.__cause__
            problems.append(
                f"{image_path}: the training loader (MONAI LoadImaged and the configured transforms) fails on this item "
                f"({type(e).__name__}: {e}); re-save the image as a grey or RGB PNG, or remove it from the datalist."
            )
            continue
        size, c = images[image_path][0], image_channels[image_path]
        shape = tuple(getattr(data["image"], "shape", ()))
        label_shape = tuple(getattr(data["label"], "shape", ()))
        spatial = {tuple(size), tuple(size[::-1])}  # PNG readers may index (W, H); the same for image and label
        if len(shape) != 3 or shape[0] != c or shape[1:] not in spatial:
            problems.append(
                f"{image_path}: the training loader reads this image as shape {list(shape)} (channels first), but it is "
                f"a {c}-channel {size[0]}x{size[1]} image: probably stored channel-first (planar RGB) or as an "
                "ImageJ/multi-page TIFF, which MONAI's reader sees differently, so it cannot be batched with the others. "
                "Re-save it as a grey (H, W) or RGB (H, W, 3) PNG (`python -m scripts.data.prepare folders ...` does)."
            )
        elif len(label_shape) != 3 or label_shape[0] != 1 or label_shape[1:] != shape[1:]:
            problems.append(
                f"{label_path}: the training loader reads this label as shape {list(label_shape)}, not [1, "
                f"{', '.join(map(str, shape[1:]))}] like its image {image_path.name}; re-save it as a grey (H, W) PNG."
            )
    return problems
