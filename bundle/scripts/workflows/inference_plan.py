"""The inputs of an inference run, each looked at once before the model loads: which to predict, under which name.

:meth:`InferencePlan.prepare` (run by inference.json's pre-flight, :class:`scripts.workflows.InferencePreflight`) opens
each input cheaply (:func:`scripts.data.read_header`: size, channels, pages, pixel type; the pixels only when the
intensity rule needs them, e.g. for a 16-bit image), and checks that it is readable, one 2D image, has the model's
number of channels, and can be scaled as the model expects (:mod:`scripts.data.intensity`). It gives every input a
unique output name (:mod:`scripts.workflows.output_names`) and skips inputs whose outputs already exist (unless
``overwrite``). Problems do not stop the run: each refused file is listed, with its reason and the fix, in one log
message, and in ``inference_report.json``; only when no file at all can be predicted does it raise (one message
listing every problem). A file whose pixels turn out to be unreadable later (a truncated PNG passes the header check)
is isolated at run time (:class:`scripts.workflows.FaultTolerantDataset`, :class:`scripts.workflows.InferenceReport`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scripts.checks import check_positive_int
from scripts.data.header import read_header
from scripts.data.integrity import DatasetError
from scripts.data.intensity import check_intensity_rule, intensity_scaling
from scripts.data.io import read_image

from .output_names import OUTPUT_NAME_KEY, unique_output_names

__all__ = ["REPORT_NAME", "InferencePlan", "picture_folder"]

logger = logging.getLogger(__name__)

#: File name of the machine-readable report in ``output_dir``.
REPORT_NAME = "inference_report.json"


def picture_folder(name: str) -> str:
    """The picture folder :class:`scripts.visualize.PictureWriter` uses for output name ``name``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


class InferencePlan(Sequence):
    """The plan of an inference run: built from the run's settings, filled by :meth:`prepare`; then the sequence of
    the items to predict (the dataset's ``data``) with one record per input (the report's rows).

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

    Attributes:
        items: the dataset items to predict: the input items with ``output_name`` and ``intensity_range``
            (``[low, high]``, when the pre-flight decided it) added.
        records: one record per input, in input order: ``input``, ``output_name``, ``status`` (``"pending"`` for
            items, ``"skipped"`` for existing outputs, ``"failed"`` for refused inputs), ``stage``, ``reason``,
            ``outputs``, ``intensity``, ``size``, ``channels``, ``dtype``.
    """

    def __init__(
        self,
        datalist: Sequence[dict],
        output_dir: str | os.PathLike,
        in_channels: int = 1,
        intensity_max: float = 255,
        intensity_rule: str = "auto",
        label_ext: str = ".png",
        save_probabilities: bool = True,
        save_refined: bool = False,
        pictures: bool = True,
        overwrite: bool = False,
    ) -> None:
        self.datalist = list(datalist)
        self.output_dir = str(Path(output_dir))
        self.in_channels = in_channels
        self.intensity_max = intensity_max
        self.intensity_rule = intensity_rule
        self.label_ext = label_ext
        self.save_probabilities = save_probabilities
        self.save_refined = save_refined
        self.pictures = pictures
        self.overwrite = bool(overwrite)
        self.items: list[dict] = []
        self.records: list[dict] = []

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]

    def prepare(self) -> InferencePlan:
        """Check every input once and plan the run (see the class and module docstrings).

        Returns:
            ``self``, filled.

        Raises:
            DatasetError: no input can be predicted and none was skipped (every problem listed, with its fix).
            ValueError: an unknown ``intensity_rule`` or a bad ``in_channels``.
        """
        check_intensity_rule(self.intensity_rule)
        check_positive_int("in_channels", self.in_channels)
        out = Path(self.output_dir)
        previous = {} if self.overwrite else _previous_statuses(out)
        self.items, self.records = [], []
        paths = [str(item["image"]) for item in self.datalist]
        for item, path, name in zip(self.datalist, paths, unique_output_names(paths)):
            outputs = [f"{name}_seg{self.label_ext}"]
            if self.save_probabilities:
                outputs.append(f"{name}_prob.tif")
            if self.save_refined:
                outputs.append(f"{name}_refined{self.label_ext}")
            if self.pictures:
                outputs.append(f"pictures/{picture_folder(name)}/input.png")
            record: dict[str, Any] = {
                "input": path, "output_name": name, "status": "pending", "stage": None, "reason": None,
                "outputs": outputs, "intensity": None, "size": None, "channels": None, "dtype": None, "seconds": None,
            }
            self.records.append(record)
            if not self.overwrite and all((out / o).exists() for o in outputs) and previous.get(path) != "failed":
                record.update(status="skipped", stage="pre-flight",
                              reason="outputs exist from an earlier run; --overwrite True replaces them")
                continue
            header = read_header(path)
            if header.problem:
                record.update(status="failed", stage="pre-flight", reason=header.problem)
                continue
            record.update(size=list(header.size), channels=header.channels, dtype=header.dtype)
            if header.channels != self.in_channels:
                kind = {1: "grey", 2: "grey + alpha", 3: "RGB", 4: "RGB + alpha"}.get(header.channels, "")
                want = {1: "grey", 3: "RGB"}.get(self.in_channels, f"{self.in_channels}-channel")
                record.update(status="failed", stage="pre-flight", reason=(
                    f"{path}: {header.channels} channel(s) ({kind}) but the model takes {self.in_channels} ({want}); "
                    f"convert the image to {want} (e.g. `python -m scripts.data.prepare folders` writes grey/RGB PNGs), "
                    f"or use a model trained with in_channels={header.channels}."))
                continue
            rule, peak = self.intensity_rule, self.intensity_max
            try:
                scaling = intensity_scaling(None, rule, peak, header.dtype) if _header_suffices(
                    header.dtype, rule, peak) else None
                if scaling is None and rule != "percentile":
                    scaling = intensity_scaling(read_image(path), rule, peak, header.dtype)
            except ValueError as e:
                msg = str(e)
                record.update(status="failed", stage="pre-flight",
                              reason=msg if msg.startswith(path) else f"{path}: {msg}")
                continue
            if scaling is None:  # "percentile": computed from the pixels when the image is loaded
                record["intensity"] = {"rule": "percentile", "range": None}
                self.items.append({**item, OUTPUT_NAME_KEY: name})
            else:
                record["intensity"] = {"rule": scaling.rule, "range": [scaling.low, scaling.high]}
                self.items.append({**item, OUTPUT_NAME_KEY: name, "intensity_range": [scaling.low, scaling.high]})
        if not self.items and not any(r["status"] == "skipped" for r in self.records):
            raise DatasetError(self.problems() or ["no input image"], "inference input")
        return self

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


def _header_suffices(dtype: str, rule: str, intensity_max: float) -> bool:
    """Whether the intensity decision needs no pixels (8-bit under auto/model, integers under dtype)."""
    dt = np.dtype(dtype)
    if rule in ("auto", "model"):
        return dt == np.bool_ or (dt == np.uint8 and intensity_max >= 255)
    if rule == "dtype":
        return dt == np.bool_ or np.issubdtype(dt, np.integer)
    return False
