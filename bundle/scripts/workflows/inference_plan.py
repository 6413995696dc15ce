"""The inputs of an inference run, each looked at once before the model loads: which to predict, under which name.

:meth:`InferencePlan.prepare` (run by inference.json's pre-flight, :class:`scripts.workflows.InferencePreflight`) opens
each input cheaply (:func:`scripts.data.read_header`: size, channels, sections, pixel type; the pixels only when the
intensity rule needs them, e.g. for a 16-bit image), and checks that it is readable, one 2D image or one stack of 2D
sections, has the model's number of channels, and can be scaled as the model expects (:mod:`scripts.data.intensity`).
It gives every input a
unique output name (:mod:`scripts.workflows.output_names`) and skips inputs that are done (unless ``overwrite``):
the report of an earlier run in ``output_dir`` lists them as finished by the same model (its sha256) and their
outputs exist. Every output is written under a temporary name and renamed into place (:mod:`scripts.atomic`), so
that an interrupted file is never mistaken for a finished one; the leftovers of a killed run are removed here.
Problems do not stop the run: each refused file is listed, with its reason and the fix, in one log message, and in
``inference_report.json``; only when no file at all can be predicted does it raise (one message listing every
problem). A file whose pixels turn out to be unreadable later (a truncated PNG passes the header check)
is isolated at run time (:class:`scripts.workflows.FaultTolerantDataset`, :class:`scripts.workflows.InferenceReport`).

A stack (a multi-page TIFF or OME-TIFF, a 3-D NIfTI: :mod:`scripts.data.stacks`) is one input of the report and one
item per section for the run (``image_stack``, ``section``: :class:`scripts.transforms.LoadSectiond`), predicted by
the same 2D model and inferer; its outputs are stacks of the input's layout (``<name>_seg.tif`` for TIFF,
``<name>_seg.nii.gz`` for NIfTI, ``<name>_prob.tif`` ``(Z, C, H, W)``), and its pictures are those of the
``picture_sections`` only (default: the middle section), in ``pictures/<name>_z<k>/``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from scripts.atomic import remove_leftovers
from scripts.checks import check_positive_int
from scripts.data.header import read_header
from scripts.data.integrity import DatasetError
from scripts.data.intensity import check_intensity_rule, header_suffices, intensity_scaling
from scripts.data.io import read_image
from scripts.data.stacks import SECTION_KEY, STACK_SUFFIX, sample_pixels, section_name, stack_extension
from scripts.errors import ConfigError
from scripts.networks.pinned import file_sha256

from .output_names import OUTPUT_NAME_KEY, PICTURE_KEY, unique_output_names

__all__ = ["REPORT_NAME", "InferencePlan", "picture_folder"]

logger = logging.getLogger(__name__)

#: File name of the machine-readable report in ``output_dir``.
REPORT_NAME = "inference_report.json"

#: Report statuses of a file whose outputs are complete.
DONE = ("ok", "skipped")


def picture_folder(name: str) -> str:
    """The picture folder :class:`scripts.visualize.PictureWriter` uses for output name ``name``: the name with every
    character other than ASCII letters, digits and ``._-~`` percent-encoded (``a b`` -> ``a%20b``, ``a?b`` ->
    ``a%3Fb``), and a leading dot too (no hidden folder). Distinct names give distinct folders, as they give
    distinct label maps."""
    folder = quote(name, safe="")
    return "%2E" + folder[1:] if folder.startswith(".") else folder


class InferencePlan(Sequence):
    """The plan of an inference run: built from the run's settings, filled by :meth:`prepare`; then the sequence of
    the items to predict (the dataset's ``data``) with one record per input (the report's rows).

    A file is done, and skipped, only when the report of an earlier run in ``output_dir`` lists it as ``"ok"`` (or
    ``"skipped"``) with the sha256 of this run's model, and every output this run writes exists (label map, and the
    probability map, refined map and picture folder that are switched on). Otherwise -- no report,
    ``"pending"`` (the run was killed), ``"failed"``, another model, an output missing -- its outputs are (re)written.
    With ``overwrite`` nothing is skipped.

    Args:
        datalist: ``[{"image": path, ...}, ...]`` (``scripts.data.list_images``).
        output_dir: the run's output folder.
        in_channels: the model's input channels (1 grey, 3 RGB).
        intensity_max: the model's intensity scaling (``intensity_max``).
        intensity_rule: see :mod:`scripts.data.intensity`.
        intensity_statistics: the model's training statistics (``scripts.networks.model_intensity_statistics``), onto
            which ``"auto"`` maps the images not of a training pixel type; ``None``: a model that records none.
        label_ext: extension of the label maps (``.png``, ``.tif``, ``.nii.gz``).
        save_probabilities, save_refined, pictures: which outputs the run writes.
        picture_sections: the sections of a stack that get pictures: ``None`` the middle one, a list of indices
            (negative: from the end; those a stack does not have are left out), ``"all"``.
        overwrite: replace existing outputs instead of skipping their inputs.
        model: the model file (``ckpt_path``); its sha256 is recorded per output (``None``: no file, random weights).

    Attributes:
        items: the dataset items to predict: the input items with ``output_name`` and ``intensity_range``
            (``[low, high]``, when the pre-flight decided it) added.
        records: one record per input, in input order: ``input``, ``output_name``, ``status`` (``"pending"`` for
            items, ``"skipped"`` for existing outputs, ``"failed"`` for refused inputs), ``stage``, ``reason``,
            ``outputs``, ``intensity``, ``size``, ``channels``, ``dtype``, ``sections`` (1: a 2D image),
            ``model_sha256``.
        earlier: the earlier report's records of other inputs (kept in the report, so that a run on a few files
            does not make the others look unfinished).
        model_sha256: the model's sha256 (``None`` without a model file).
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
        model: str | os.PathLike | None = None,
        intensity_statistics: dict | None = None,
        picture_sections: Sequence[int] | str | None = None,
    ) -> None:
        self.datalist = list(datalist)
        self.output_dir = str(Path(output_dir))
        self.in_channels = in_channels
        self.intensity_max = intensity_max
        self.intensity_rule = intensity_rule
        self.intensity_statistics = intensity_statistics
        self.label_ext = label_ext
        self.save_probabilities = save_probabilities
        self.save_refined = save_refined
        self.pictures = pictures
        self.overwrite = bool(overwrite)
        self.model = model
        self.picture_sections = picture_sections
        self.model_sha256: str | None = None
        self.items: list[dict] = []
        self.records: list[dict] = []
        self.earlier: list[dict] = []
        self.other_model: list[str] = []

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
        self._picture_sections(1)  # the setting's type, before any file
        out = Path(self.output_dir)
        for folder in (out, out / "pictures"):
            remove_leftovers(folder)
        self.model_sha256 = file_sha256(self.model) if self.model and os.path.isfile(self.model) else None
        previous = _previous_records(out)
        self.items, self.records, self.other_model = [], [], []
        paths = [str(item["image"]) for item in self.datalist]
        names = unique_output_names(paths)
        inputs, taken = set(paths), {n.casefold() for n in names}
        self.earlier = [
            r
            for p, r in previous.items()
            if p not in inputs and str(r.get(OUTPUT_NAME_KEY, "")).casefold() not in taken
        ]
        for item, path, name in zip(self.datalist, paths, names):
            before = previous.get(path, {})
            sections = int(before.get("sections") or 1)  # a finished stack's outputs are known before its header
            outputs = self._outputs(name, path, sections)
            record: dict[str, Any] = {
                "input": path,
                "output_name": name,
                "status": "pending",
                "stage": None,
                "reason": None,
                "outputs": outputs,
                "intensity": None,
                "size": None,
                "channels": None,
                "dtype": None,
                "sections": sections,
                "seconds": None,
                "model_sha256": self.model_sha256,
            }
            self.records.append(record)
            if not self.overwrite and self._done(before, outputs):
                record.update(
                    status="skipped",
                    stage="pre-flight",
                    reason="done by an earlier run with this model; --overwrite True replaces its outputs",
                )
                continue
            recorded = before.get("model_sha256", self.model_sha256)  # a report of v0.7.1 records none
            if not self.overwrite and before.get("status") in DONE and recorded != self.model_sha256:
                self.other_model.append(path)
            header = read_header(path)
            if header.problem:
                record.update(status="failed", stage="pre-flight", reason=header.problem)
                continue
            record.update(
                size=list(header.size),
                channels=header.channels,
                dtype=header.dtype,
                sections=header.sections,
                outputs=self._outputs(name, path, header.sections),
            )
            if header.channels != self.in_channels:
                kind = {1: "grey", 2: "grey + alpha", 3: "RGB", 4: "RGB + alpha"}.get(header.channels, "")
                want = {1: "grey", 3: "RGB"}.get(self.in_channels, f"{self.in_channels}-channel")
                hint = f"{header.hint}; else " if header.hint else ""
                record.update(
                    status="failed",
                    stage="pre-flight",
                    reason=(
                        f"{path}: {header.channels} channel(s) ({kind}) but the model takes {self.in_channels} ({want}); "
                        f"{hint}convert the image to {want} (e.g. `python -m scripts.data.prepare folders` writes grey/RGB "
                        f"PNGs), or use a model trained with in_channels={header.channels}."
                    ),
                )
                continue
            rule, peak, stats = self.intensity_rule, self.intensity_max, self.intensity_statistics
            try:
                scaling = (
                    intensity_scaling(None, rule, peak, header.dtype, stats)
                    if header_suffices(header.dtype, rule, peak, stats)
                    else None
                )
                if scaling is None and rule != "percentile":
                    pixels = read_image(path) if header.sections == 1 else sample_pixels(path)
                    scaling = intensity_scaling(pixels, rule, peak, header.dtype, stats)
            except ValueError as e:
                msg = str(e)
                record.update(
                    status="failed", stage="pre-flight", reason=msg if msg.startswith(path) else f"{path}: {msg}"
                )
                continue
            if scaling is None:  # "percentile": computed from the pixels when the image (section) is loaded
                record["intensity"] = {"rule": "percentile", "range": None}
                extra = {}
            else:
                record["intensity"] = {"rule": scaling.rule, "range": [scaling.low, scaling.high]}
                extra = {"intensity_range": [scaling.low, scaling.high]}
            if header.sections == 1:
                self.items.append({**item, OUTPUT_NAME_KEY: name, **extra})
            else:
                self.items.extend(self._section_items(item, name, header.sections, extra))
        if not self.items and not any(r["status"] == "skipped" for r in self.records):
            raise DatasetError(self.problems() or ["no input image"], "inference input")
        return self

    def _picture_sections(self, sections: int) -> list[int]:
        """The sections of a stack of ``sections`` that get pictures (see ``picture_sections``)."""
        chosen = self.picture_sections
        if chosen is None:
            return [sections // 2]
        if chosen == "all":
            return list(range(sections))
        if (
            isinstance(chosen, str)
            or not isinstance(chosen, Sequence)
            or not all(isinstance(k, int) and not isinstance(k, bool) for k in chosen)
        ):
            raise ConfigError(
                f"picture_sections must be null (the middle section), a list of section indices such "
                f'as "[0, 10]", or "all"; got {chosen!r}.'
            )
        return sorted({k % sections for k in chosen if -sections <= k < sections})

    def _outputs(self, name: str, path: str, sections: int) -> list[str]:
        """The outputs this run writes for the input ``path`` of output name ``name`` and ``sections`` sections."""
        ext = self.label_ext if sections == 1 else stack_extension(path)
        outputs = [f"{name}_seg{ext}"]
        if self.save_probabilities:
            outputs.append(f"{name}_prob.tif")
        if self.save_refined:
            outputs.append(f"{name}_refined{ext}")
        if self.pictures:
            folders = (
                [name] if sections == 1 else [section_name(name, k, sections) for k in self._picture_sections(sections)]
            )
            outputs += [f"pictures/{picture_folder(f)}/input.png" for f in folders]
        return outputs

    def _section_items(self, item: dict, name: str, sections: int, extra: dict) -> list[dict]:
        """The items of a stack: one per section (``image_stack``, ``section``, ``picture_name``; ``label_stack``
        when the item's label is a stack of as many sections)."""
        path, label = str(item["image"]), item.get("label")
        base = {k: v for k, v in item.items() if k not in ("image", "label")}
        if label is not None:
            found = read_header(label)
            if found.sections == sections:
                base[f"label{STACK_SUFFIX}"] = str(label)
            else:
                logger.warning(
                    "%s: its label %s holds %s section(s), the stack %d; shown without it",
                    path,
                    label,
                    found.sections if not found.problem else "no readable",
                    sections,
                )
        pictured = set(self._picture_sections(sections)) if self.pictures else set()
        return [
            {
                **base,
                f"image{STACK_SUFFIX}": path,
                SECTION_KEY: k,
                OUTPUT_NAME_KEY: name,
                **extra,
                PICTURE_KEY: section_name(name, k, sections) if k in pictured else "",
            }
            for k in range(sections)
        ]

    def _done(self, before: dict, outputs: list[str]) -> bool:
        """Whether an earlier run finished this file with this model and every output (see the class docstring)."""
        return (
            before.get("status") in DONE
            and before.get("model_sha256") == self.model_sha256
            and all((Path(self.output_dir) / o).exists() for o in outputs)
        )

    def problems(self) -> list[str]:
        """The refused inputs' reasons."""
        return [r["reason"] for r in self.records if r["status"] == "failed"]

    def log(self) -> InferencePlan:
        """Log the plan: counts, the rule, every refused input (one message) and every skipped one."""
        counts = {s: sum(r["status"] == s for r in self.records) for s in ("pending", "skipped", "failed")}
        stacks = [r for r in self.records if r["status"] == "pending" and (r.get("sections") or 1) > 1]
        if stacks:
            logger.info(
                "pre-flight: %d stack(s) of %d section(s) in all, each section predicted as a 2D image: %s",
                len(stacks),
                sum(r["sections"] for r in stacks),
                ", ".join(f"{Path(r['input']).name} ({r['sections']})" for r in stacks[:20]),
            )
        logger.info(
            "pre-flight: %d input(s): %d to predict, %d skipped (outputs exist%s), %d refused; intensity_rule=%s",
            len(self.records),
            counts["pending"],
            counts["skipped"],
            "" if self.overwrite else "; --overwrite True replaces them",
            counts["failed"],
            self.intensity_rule,
        )
        if self.other_model:
            logger.warning(
                "pre-flight: %d input(s) were predicted by another model (not sha256 %s) and are predicted again: %s",
                len(self.other_model),
                self.model_sha256,
                ", ".join(Path(p).name for p in self.other_model[:20]),
            )
        problems = self.problems()
        if problems:
            logger.error(
                "pre-flight: %d input(s) will not be predicted:\n  - %s", len(problems), "\n  - ".join(problems)
            )
        pending = [r for r in self.records if r["status"] == "pending"]
        matched = [r for r in pending if r["intensity"]["rule"] == "matched"]
        switched = [r for r in pending if r["intensity"]["rule"] == "percentile"]
        if self.intensity_rule == "auto" and matched:
            stats = self.intensity_statistics
            logger.info(
                "pre-flight: %d image(s) are not of the training images' pixel type (%s) or exceed intensity_max: "
                "their own 0.5/99.5 percentiles are mapped onto the training images' (%.3f, %.3f on the 0..1 input; "
                "intensity_rule auto): %s",
                len(matched),
                ", ".join(stats.get("dtypes", [])),
                *stats["range"],
                ", ".join(Path(r["input"]).name for r in matched[:20]),
            )
        if self.intensity_rule == "auto" and switched:
            logger.warning(
                "pre-flight: %d image(s) do not fit the model's range and are scaled by their own %s percentiles "
                "(intensity_rule auto): %s",
                len(switched),
                "0.5/99.5",
                ", ".join(Path(r["input"]).name for r in switched[:20]),
            )
        return self


def _previous_records(output_dir: Path) -> dict[str, dict]:
    """input path -> record in the report of an earlier run in ``output_dir`` (its ``files``, then its
    ``earlier_files``; empty when there is none or it cannot be read)."""
    try:
        report = json.loads((output_dir / REPORT_NAME).read_text())
        records = [*report.get("files", []), *report.get("earlier_files", [])]
        return {str(r["input"]): r for r in reversed(records) if isinstance(r, dict)}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}
