"""Inference pre-flight: look at every input once, before the model loads, and plan the run.

:func:`plan_inference` opens each input cheaply (the file header: size, channels, pages, pixel type; the pixels only
when the intensity rule needs them, e.g. for a 16-bit image), and checks that it is readable, one 2D image, has the
model's number of channels, and can be scaled as the model expects (:mod:`scripts.data.intensity`). It gives every
input a unique output name (:mod:`scripts.data.output_names`) and skips inputs whose outputs already exist (unless
``overwrite``). Problems do not stop the run: each refused file is listed, with its reason and the fix, in one log
message, and in ``inference_report.json``; only when no file at all can be predicted does it raise (one message
listing every problem). A file whose pixels turn out to be unreadable later (a truncated PNG passes the header check)
is isolated at run time (:class:`scripts.data.FaultTolerantDataset`, :class:`scripts.handlers.InferenceReport`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scripts.checks import check_positive_int

from .integrity import DatasetError
from .intensity import check_intensity_rule, intensity_scaling
from .io import image_extension, read_image
from .output_names import OUTPUT_NAME_KEY, unique_output_names

__all__ = ["ImageHeader", "InferencePlan", "plan_inference", "read_header", "REPORT_NAME", "picture_folder"]

logger = logging.getLogger(__name__)

#: File name of the machine-readable report in ``output_dir``.
REPORT_NAME = "inference_report.json"

_PIL_MODES = {  # PIL mode -> (channels as MONAI's loader returns them, pixel type)
    "1": (1, "bool"),
    "L": (1, "uint8"),
    "P": (1, "uint8"),
    "LA": (2, "uint8"),
    "La": (2, "uint8"),
    "RGB": (3, "uint8"),
    "YCbCr": (3, "uint8"),
    "LAB": (3, "uint8"),
    "HSV": (3, "uint8"),
    "RGBA": (4, "uint8"),
    "RGBa": (4, "uint8"),
    "CMYK": (4, "uint8"),
    "I;16": (1, "uint16"),
    "I;16B": (1, "uint16"),
    "I;16L": (1, "uint16"),
    "I;16N": (1, "uint16"),
    "I": (1, "int32"),
    "F": (1, "float32"),
}


@dataclass(frozen=True)
class ImageHeader:
    """What a cheap look at an image file tells: ``size`` (H, W), ``channels``, ``dtype``; ``problem`` is set (and the
    rest may be empty) when the file is not one readable 2D image."""

    size: tuple[int, ...] = ()
    channels: int = 0
    dtype: str = ""
    problem: str | None = None


def _not_2d(path: Path, shape) -> str:
    return (
        f"{path}: holds an array of shape {list(shape)} (a stack of sections, a 3D volume or a multi-channel image), "
        "not one 2D image; save each section as its own 2D file (grey or RGB)."
    )


def read_header(path: str | os.PathLike) -> ImageHeader:
    """Read an image's header only (PNG/JPEG via PIL, TIFF via tifffile, NIfTI via nibabel): size, channels and pixel
    type as MONAI's ``LoadImage`` will see them, or the problem (missing, unreadable, unsupported, not 2D).

    Args:
        path: the image file.

    Returns:
        An :class:`ImageHeader`.
    """
    path = Path(path)
    ext = image_extension(path)
    if ext is None:
        return ImageHeader(problem=f"{path}: unsupported file type; use PNG, JPEG, TIFF or NIfTI.")
    if not path.is_file():
        return ImageHeader(problem=f"{path}: file not found.")
    try:
        if ext in (".png", ".jpg", ".jpeg"):
            from PIL import Image

            with Image.open(path) as img:
                if getattr(img, "n_frames", 1) > 1:
                    return ImageHeader(problem=_not_2d(path, [img.n_frames, img.size[1], img.size[0]]))
                if img.mode not in _PIL_MODES:
                    return ImageHeader(problem=f"{path}: unsupported pixel mode {img.mode!r}; save it as grey or RGB.")
                channels, dtype = _PIL_MODES[img.mode]
                return ImageHeader((img.size[1], img.size[0]), channels, dtype)
        if ext in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                shape, axes, dtype = tuple(series.shape), series.axes, str(series.dtype)
            kept = [(n, a) for n, a in zip(shape, axes) if n > 1 or a in "YX"]
            spatial = [n for n, a in kept if a in "YX"]
            other = [(n, a) for n, a in kept if a not in "YX"]
            if len(spatial) != 2 or len(other) > 1 or (other and (other[0][1] not in "SC" or other[0][0] > 4)):
                return ImageHeader(problem=_not_2d(path, shape))
            return ImageHeader(tuple(spatial), other[0][0] if other else 1, dtype)
        import nibabel as nib

        header = nib.load(str(path)).header
        shape = [n for n in header.get_data_shape() if n > 1]
        if len(shape) == 2 or (len(shape) == 3 and shape[-1] in (3, 4)):
            return ImageHeader((shape[1], shape[0]), shape[2] if len(shape) == 3 else 1, str(header.get_data_dtype()))
        return ImageHeader(problem=_not_2d(path, header.get_data_shape()))
    except Exception as e:  # noqa: BLE001 - any decoder failure: the file cannot be used
        return ImageHeader(
            problem=f"{path}: cannot read this {ext} file (corrupt, truncated or not a {ext} image): {e}."
        )


def picture_folder(name: str) -> str:
    """The picture folder :class:`scripts.visualize.PictureWriter` uses for output name ``name``."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


@dataclass
class InferencePlan:
    """The outcome of :func:`plan_inference`.

    Attributes:
        items: the dataset items to predict: the input items with ``output_name`` and ``intensity_range``
            (``[low, high]``, when the pre-flight decided it) added.
        records: one record per input, in input order: ``input``, ``output_name``, ``status`` (``"pending"`` for
            items, ``"skipped"`` for existing outputs, ``"failed"`` for refused inputs), ``stage``, ``reason``,
            ``outputs``, ``intensity``, ``size``, ``channels``, ``dtype``.
        output_dir: the run's output folder.
        intensity_rule: the configured rule.
        overwrite: whether existing outputs are replaced.
    """

    items: list[dict] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    output_dir: str = ""
    intensity_rule: str = "auto"
    overwrite: bool = False

    def problems(self) -> list[str]:
        """The refused inputs' reasons."""
        return [r["reason"] for r in self.records if r["status"] == "failed"]

    def log(self) -> InferencePlan:
        """Log the plan: counts, the rule, every refused input (one message) and every skipped one."""
        counts = {s: sum(r["status"] == s for r in self.records) for s in ("pending", "skipped", "failed")}
        logger.info(
            "pre-flight: %d input(s): %d to predict, %d skipped (outputs exist%s), %d refused; intensity_rule=%s",
            len(self.records), counts["pending"], counts["skipped"],
            "" if self.overwrite else "; --overwrite True replaces them", counts["failed"], self.intensity_rule,
        )
        problems = self.problems()
        if problems:
            logger.error(
                "pre-flight: %d input(s) will not be predicted:\n  - %s", len(problems), "\n  - ".join(problems)
            )
        switched = [r for r in self.records if r["status"] == "pending" and r["intensity"]["rule"] != "model"]
        if self.intensity_rule == "auto" and switched:
            logger.warning(
                "pre-flight: %d image(s) do not fit the model's range and are scaled by their own %s percentiles "
                "(intensity_rule auto): %s",
                len(switched), "0.5/99.5", ", ".join(Path(r["input"]).name for r in switched[:20]),
            )
        return self


def _previous_statuses(output_dir: Path) -> dict[str, str]:
    """input path -> status in the report of an earlier run in ``output_dir`` (empty when there is none)."""
    try:
        report = json.loads((output_dir / REPORT_NAME).read_text())
        return {str(f["input"]): str(f["status"]) for f in report.get("files", [])}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def plan_inference(
    datalist: list[dict],
    output_dir: str | os.PathLike,
    in_channels: int = 1,
    intensity_max: float = 255,
    intensity_rule: str = "auto",
    label_ext: str = ".png",
    save_probabilities: bool = True,
    save_refined: bool = False,
    pictures: bool = True,
    overwrite: bool = False,
) -> InferencePlan:
    """Check every input once and plan the run (see the module docstring).

    A file is skipped when all its outputs exist (label map, and the probability map, refined map and picture folder
    that are switched on) and the report of an earlier run in ``output_dir``, if any, does not list it as failed;
    otherwise its outputs are (re)written. With ``overwrite`` nothing is skipped.

    Args:
        datalist: ``[{"image": path, ...}, ...]`` (``scripts.data.list_images``).
        output_dir: the run's output folder.
        in_channels: the model's input channels (1 grey, 3 RGB).
        intensity_max: the model's intensity scaling (``intensity_max``).
        intensity_rule: see :mod:`scripts.data.intensity`.
        label_ext: extension of the label maps (``.png``, ``.tif``, ``.nii.gz``).
        save_probabilities, save_refined, pictures: which outputs the run writes.
        overwrite: replace existing outputs instead of skipping their inputs.

    Returns:
        An :class:`InferencePlan`.

    Raises:
        DatasetError: no input can be predicted and none was skipped (every problem listed, with its fix).
        ValueError: an unknown ``intensity_rule`` or a bad ``in_channels``.
    """
    check_intensity_rule(intensity_rule)
    check_positive_int("in_channels", in_channels)
    out = Path(output_dir)
    previous = {} if overwrite else _previous_statuses(out)
    plan = InferencePlan(output_dir=str(out), intensity_rule=intensity_rule, overwrite=bool(overwrite))
    paths = [str(item["image"]) for item in datalist]
    for item, path, name in zip(datalist, paths, unique_output_names(paths)):
        outputs = [f"{name}_seg{label_ext}"]
        if save_probabilities:
            outputs.append(f"{name}_prob.tif")
        if save_refined:
            outputs.append(f"{name}_refined{label_ext}")
        if pictures:
            outputs.append(f"pictures/{picture_folder(name)}/input.png")
        record: dict[str, Any] = {
            "input": path, "output_name": name, "status": "pending", "stage": None, "reason": None,
            "outputs": outputs, "intensity": None, "size": None, "channels": None, "dtype": None, "seconds": None,
        }
        plan.records.append(record)
        if not overwrite and all((out / o).exists() for o in outputs) and previous.get(path) != "failed":
            record.update(status="skipped", stage="pre-flight",
                          reason="outputs exist from an earlier run; --overwrite True replaces them")
            continue
        header = read_header(path)
        if header.problem:
            record.update(status="failed", stage="pre-flight", reason=header.problem)
            continue
        record.update(size=list(header.size), channels=header.channels, dtype=header.dtype)
        if header.channels != in_channels:
            kind = {1: "grey", 2: "grey + alpha", 3: "RGB", 4: "RGB + alpha"}.get(header.channels, "")
            want = {1: "grey", 3: "RGB"}.get(in_channels, f"{in_channels}-channel")
            record.update(status="failed", stage="pre-flight", reason=(
                f"{path}: {header.channels} channel(s) ({kind}) but the model takes {in_channels} ({want}); convert "
                f"the image to {want} (e.g. `python -m scripts.data.prepare folders` writes grey/RGB PNGs), or use a "
                f"model trained with in_channels={header.channels}."))
            continue
        try:
            scaling = intensity_scaling(None, intensity_rule, intensity_max, header.dtype) if _header_suffices(
                header.dtype, intensity_rule, intensity_max) else None
            if scaling is None and intensity_rule != "percentile":
                scaling = intensity_scaling(read_image(path), intensity_rule, intensity_max, header.dtype)
        except ValueError as e:
            msg = str(e)
            record.update(status="failed", stage="pre-flight", reason=msg if msg.startswith(path) else f"{path}: {msg}")
            continue
        if scaling is None:  # "percentile": computed from the pixels when the image is loaded
            record["intensity"] = {"rule": "percentile", "range": None}
            plan.items.append({**item, OUTPUT_NAME_KEY: name})
        else:
            record["intensity"] = {"rule": scaling.rule, "range": [scaling.low, scaling.high]}
            plan.items.append({**item, OUTPUT_NAME_KEY: name, "intensity_range": [scaling.low, scaling.high]})
    if not plan.items and not any(r["status"] == "skipped" for r in plan.records):
        raise DatasetError(plan.problems() or ["no input image"], "inference input")
    return plan


def _header_suffices(dtype: str, rule: str, intensity_max: float) -> bool:
    """Whether the intensity decision needs no pixels (8-bit under auto/model, integers under dtype)."""
    dt = np.dtype(dtype)
    if rule in ("auto", "model"):
        return dt == np.bool_ or (dt == np.uint8 and intensity_max >= 255)
    if rule == "dtype":
        return dt == np.bool_ or np.issubdtype(dt, np.integer)
    return False
