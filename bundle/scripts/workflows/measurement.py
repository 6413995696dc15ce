"""Answers per object for an inference output folder: the ``measure`` step of ``configs/measure.json``.

:class:`FolderMeasurement` reads the folder's ``inference_report.json``, and for every input whose outputs are done
(``"ok"`` or ``"skipped"``) it measures the connected objects of the chosen classes in ``<name>_seg<ext>``, with the
confidence from ``<name>_prob.tif`` when it is there (:func:`scripts.measure.measure_objects`), and writes into
``measure_dir`` (``<output_dir>/measurements``), each file atomically:

- ``<name>_objects.csv``: one row per object (:data:`scripts.measure.OBJECT_COLUMNS`);
- ``<name>_instances.tif``: the instance label map (0 = none, else the object's ``id``);
- ``summary.csv``: per image and class, and over all images (:data:`scripts.measure.SUMMARY_COLUMNS`);
- ``measure_report.json``: the settings and, per image, its status, the sha256 of the maps it was measured from,
  the pixel size and its source, the counts.

The pixel size is ``pixel_size_nm`` when set, else what the input image file records
(:func:`scripts.data.read_pixel_size`), else unknown (the µm columns stay empty).

Re-runs, as inference: an image measured earlier from the same label and probability maps (sha256) with the same
pixel size is skipped; one whose maps changed (predicted again, e.g. by another model) is measured again.
Measurements made with other settings (classes, connectivity, minimum area, ``pixel_size_nm``) are never replaced
silently: :meth:`check` refuses before anything runs, unless ``overwrite``.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from numbers import Real
from pathlib import Path
from typing import Any

from scripts.atomic import remove_leftovers
from scripts.data.datalist import write_json
from scripts.data.io import read_image
from scripts.data.pixel_size import PixelSize, read_pixel_size
from scripts.errors import ConfigError, UserError
from scripts.locks import lock_folder
from scripts.measure import (
    OBJECT_COLUMNS,
    SUMMARY_COLUMNS,
    measure_objects,
    summary_rows,
    write_csv,
    write_instance_map,
)
from scripts.networks.pinned import file_sha256

from .inference_plan import DONE, REPORT_NAME

__all__ = [
    "MEASURE_REPORT",
    "SUMMARY_NAME",
    "FolderMeasurement",
    "MeasurementFailed",
    "pixel_size_setting",
    "resolve_classes",
]

logger = logging.getLogger(__name__)

#: The measurement report's file name in ``measure_dir``.
MEASURE_REPORT = "measure_report.json"

#: The folder summary's file name in ``measure_dir``.
SUMMARY_NAME = "summary.csv"


class MeasurementFailed(RuntimeError):
    """Raised by :meth:`FolderMeasurement.finish` when some images could not be measured; the others were."""


class MeasurementError(UserError, RuntimeError):
    """The folder cannot be measured as asked (no inference report, maps of other classes)."""


def resolve_classes(classes: Any, class_names: Sequence[str]) -> dict[int, str]:
    """The classes to measure, index -> name, from names or indices (``None``: all of ``class_names``).

    Raises:
        ConfigError: a name or index the model does not have, or an empty list.
    """
    names = [str(n) for n in class_names]
    if classes is None:
        return dict(enumerate(names))
    chosen = [classes] if isinstance(classes, (str, int)) else list(classes)
    resolved: dict[int, str] = {}
    for c in chosen:
        if isinstance(c, str) and c in names:
            index = names.index(c)
        elif isinstance(c, int) and not isinstance(c, bool) and 0 <= c < len(names):
            index = c
        else:
            close = difflib.get_close_matches(str(c), names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"--measure: {c!r} is not a class of the model ({', '.join(names)}).{hint} Give class names or "
                f"indices, e.g. --measure \"['{names[-1]}']\", or null for all."
            )
        resolved[index] = names[index]
    if not resolved:
        raise ConfigError("--measure is empty: give the classes to measure, e.g. --measure \"['mitochondria']\".")
    return resolved


def pixel_size_setting(value: Any) -> PixelSize | None:
    """``pixel_size_nm`` (a number, or ``[height, width]``, in nm; ``None``: from each file's metadata).

    Raises:
        ConfigError: not a positive number or pair of them.
    """
    if value is None:
        return None
    pair = [value, value] if isinstance(value, Real) else list(value) if isinstance(value, (list, tuple)) else []
    if len(pair) != 2 or not all(
        isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in pair
    ):
        raise ConfigError(
            f"--pixel_size_nm must be the pixel size in nanometres, a positive number (e.g. 4.6) or [height, width], "
            f"got {value!r}."
        )
    return PixelSize(float(pair[0]), float(pair[1]), "--pixel_size_nm")


def _read_json(path: Path) -> dict | None:
    try:
        content = json.loads(path.read_text())
        return content if isinstance(content, dict) else None
    except (OSError, ValueError):
        return None


def _probability_labels(path: Path) -> list[str] | None:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        labels = (tif.imagej_metadata or {}).get("Labels")
    return [str(v) for v in labels] if isinstance(labels, (list, tuple)) else None


class FolderMeasurement:
    """The objects of the finished outputs of an inference folder, measured (see the module docstring).

    Example (``configs/measure.json``, composed after ``inference.json``)::

        "measurement": {"_target_": "scripts.workflows.FolderMeasurement", "output_dir": "@output_dir",
                        "class_names": "@class_names", "classes": "@measure", "pixel_size_nm": "@pixel_size_nm",
                        "overwrite": "@overwrite"},
        "initialize": ["$scripts.start_run()", "$@measurement.check()"],
        "measuring": ["$@measurement.run()", "$@measurement.finish()"]

    Args:
        output_dir: the inference output folder (holding ``inference_report.json``).
        class_names: the model's classes, in index order.
        classes: the classes to measure, names or indices (``None``: all).
        pixel_size_nm: nm per pixel, a number or ``[height, width]``; ``None``: each input file's metadata.
        connectivity: 4 or 8 (default): the neighbours that join pixels into one object.
        min_area_px: objects of fewer pixels (prediction speckle) are left out (default 10; 0 keeps all).
        measure_dir: where the measurements go (default ``<output_dir>/measurements``).
        overwrite: replace measurements made with other settings, and measure every image again.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Sequence[str],
        classes: Any = None,
        pixel_size_nm: Any = None,
        connectivity: int = 8,
        min_area_px: int = 10,
        measure_dir: str | os.PathLike | None = None,
        overwrite: bool = False,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.measure_dir = Path(measure_dir) if measure_dir is not None else self.output_dir / "measurements"
        self.class_names = list(class_names)
        self.classes_setting, self.pixel_size_nm, self.connectivity = classes, pixel_size_nm, connectivity
        self.min_area_px = min_area_px
        self.overwrite = bool(overwrite)
        self.classes: dict[int, str] = {}
        self.pixel_size: PixelSize | None = None
        self.records: list[dict] = []
        self.started: str | None = None
        self._earlier: dict[str, dict] = {}
        self._checked = False

    @property
    def settings(self) -> dict:
        """What the measurements depend on besides the maps: recorded, and compared with an earlier run's."""
        return {
            "classes": list(self.classes.values()),
            "class_indices": list(self.classes),
            "connectivity": self.connectivity,
            "min_area_px": self.min_area_px,
            "pixel_size_nm": self.pixel_size.as_setting() if self.pixel_size else None,
        }

    def check(self) -> FolderMeasurement:
        """The settings, the output folder's lock, and the earlier measurements (before anything runs).

        Raises:
            ConfigError: a bad setting, or ``measure_dir`` holds measurements made with other settings (and not
                ``overwrite``).
            RunFolderError: another run writes into ``output_dir``.
        """
        self.classes = resolve_classes(self.classes_setting, self.class_names)
        self.pixel_size = pixel_size_setting(self.pixel_size_nm)
        if self.connectivity not in (4, 8):
            raise ConfigError(f"--measure_connectivity must be 4 or 8, got {self.connectivity!r}.")
        if isinstance(self.min_area_px, bool) or not isinstance(self.min_area_px, int) or self.min_area_px < 0:
            raise ConfigError(f"--measure_min_area_px must be a whole number of pixels >= 0, got {self.min_area_px!r}.")
        lock_folder(self.output_dir, purpose="measurement")
        remove_leftovers(self.measure_dir)
        earlier = _read_json(self.measure_dir / MEASURE_REPORT) or {}
        if earlier.get("settings") not in (None, self.settings) and not self.overwrite:
            was = earlier["settings"]
            raise ConfigError(
                f"{self.measure_dir} holds measurements made with other settings (measure={was.get('classes')}, "
                f"measure_connectivity={was.get('connectivity')}, measure_min_area_px={was.get('min_area_px')}, "
                f"pixel_size_nm={was.get('pixel_size_nm')}; now {self.settings['classes']}, {self.connectivity}, "
                f"{self.min_area_px}, {self.settings['pixel_size_nm']}): "
                "--overwrite True replaces them, --measure_dir another folder keeps them. Nothing was run."
            )
        self._earlier = (
            {}
            if self.overwrite
            else {str(r.get("output_name")): r for r in earlier.get("files", []) if isinstance(r, dict)}
        )
        self._checked = True
        return self

    # ------------------------------------------------------------------ run
    def _done_outputs(self) -> list[dict]:
        report = _read_json(self.output_dir / REPORT_NAME)
        if report is None:
            raise MeasurementError(
                f"{self.output_dir}: no readable {REPORT_NAME}; the measure step reads the outputs of `run inference`: "
                "give --output_dir the folder inference wrote to (or run inference with measure.json)."
            )
        seen, done = set(), []
        for r in [*report.get("files", []), *report.get("earlier_files", [])]:
            if isinstance(r, dict) and r.get("status") in DONE and r.get("output_name") not in seen:
                seen.add(r.get("output_name"))
                done.append(r)
        return done

    def _maps(self, record: dict) -> tuple[Path, Path | None]:
        name = str(record["output_name"])
        outputs = [str(o) for o in record.get("outputs") or []]
        seg = next((o for o in outputs if o.startswith(f"{name}_seg")), None)
        if seg is None:
            raise ValueError(f"{record.get('input')}: the inference report lists no label map for it.")
        if not (self.output_dir / seg).is_file():
            raise ValueError(f"{self.output_dir / seg}: the label map is missing (moved or deleted?)")
        prob = self.output_dir / f"{name}_prob.tif"
        return self.output_dir / seg, prob if prob.is_file() else None

    def _measure(self, record: dict) -> dict:
        name = str(record["output_name"])
        row: dict[str, Any] = {"output_name": name, "input": record.get("input"), "status": "failed", "reason": None}
        try:
            seg, prob = self._maps(record)
            size = self.pixel_size or read_pixel_size(record.get("input") or "")
            row.update(
                seg=seg.name,
                prob=prob.name if prob else None,
                seg_sha256=file_sha256(seg),
                prob_sha256=file_sha256(prob) if prob else None,
                pixel_size_nm=size.as_setting() if size else None,
                pixel_size_source=size.source if size else None,
                outputs=[f"{name}_objects.csv", f"{name}_instances.tif"],
            )
            before = self._earlier.get(name, {})
            keys = ("seg_sha256", "prob_sha256", "pixel_size_nm")
            if (
                before.get("status") in DONE
                and all(before.get(k) == row[k] for k in keys)
                and all((self.measure_dir / o).is_file() for o in row["outputs"])
            ):
                return {
                    **before,
                    "status": "skipped",
                    "reason": "measured earlier from these maps",
                    "input": row["input"],
                }
            t0 = time.perf_counter()
            confidence = None
            if prob is not None:
                from scripts.transforms.save_probabilities import read_probability_map

                labels_in_file = _probability_labels(prob)
                if labels_in_file is not None and labels_in_file != self.class_names:
                    raise MeasurementError(
                        f"{prob}: holds the classes {labels_in_file}, but class_names is {self.class_names}: measure "
                        "with the class_names of the model that made these outputs (compose the same config files "
                        "as the inference run, or --class_names)."
                    )
                confidence = read_probability_map(prob).max(axis=0)
            table = measure_objects(
                read_image(seg), self.classes, confidence, size, self.connectivity, self.min_area_px
            )
            write_csv(self.measure_dir / row["outputs"][0], OBJECT_COLUMNS, table.rows)
            write_instance_map(self.measure_dir / row["outputs"][1], table.instances, size)
            row.update(
                status="ok",
                image_area_px=table.image_area_px,
                objects=len(table.rows),
                per_class=table.per_class,
                seconds=round(time.perf_counter() - t0, 3),
            )
        except MeasurementError:
            raise
        except Exception as e:  # noqa: BLE001 - this image fails, the others are measured
            row["reason"] = f"{record.get('input')} ({name}): cannot be measured: {e}"
            logger.error("measure: %s", row["reason"])
        return row

    def write_report(self, finished: bool = False) -> Path:
        """Write ``measure_report.json`` (atomically)."""
        return write_json(
            self.measure_dir / MEASURE_REPORT,
            {
                "output_dir": str(self.output_dir),
                "settings": self.settings,
                "started": self.started,
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds") if finished else None,
                "counts": self.counts(),
                "files": self.records,
            },
        )

    def counts(self) -> dict[str, int]:
        """Images per status."""
        statuses = [r["status"] for r in self.records]
        return {s: statuses.count(s) for s in ("ok", "skipped", "failed")}

    def run(self) -> FolderMeasurement:
        """Measure every finished output of ``output_dir`` (skipping those measured earlier), write the summary and
        the report; returns ``self`` (:meth:`finish` raises when an image failed).

        Raises:
            MeasurementError: ``output_dir`` holds no inference report, or the probability maps name other classes.
        """
        if not self._checked:
            self.check()
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.measure_dir.mkdir(parents=True, exist_ok=True)
        self.records = []
        done = self._done_outputs()
        if not done:
            logger.warning("measure: %s holds no finished outputs to measure", self.output_dir)
        for record in done:
            self.records.append(self._measure(record))
            self.write_report()
        measured = [r for r in self.records if r["status"] in DONE]
        names = list(self.classes.values())
        summary = write_csv(self.measure_dir / SUMMARY_NAME, SUMMARY_COLUMNS, summary_rows(measured, names))
        report = self.write_report(finished=True)
        counts = self.counts()
        totals = ", ".join(f"{n} {sum(r['per_class'][n]['count'] for r in measured)}" for n in names)
        logger.info(
            "measure: %d image(s) measured, %d skipped (measured earlier%s), %d failed; objects: %s; summary %s, "
            "report %s",
            counts["ok"],
            counts["skipped"],
            "" if self.overwrite else "; --overwrite True measures again",
            counts["failed"],
            totals,
            summary,
            report,
        )
        return self

    def finish(self) -> dict[str, int]:
        """Raise :class:`MeasurementFailed` if an image could not be measured; else return the counts."""
        failed = [r for r in self.records if r["status"] == "failed"]
        if failed:
            raise MeasurementFailed(
                f"{len(failed)} of {len(self.records)} image(s) could not be measured; the others were "
                f"(report: {self.measure_dir / MEASURE_REPORT}):\n"
                + "\n".join(f"  - {r['reason']}" for r in failed[:20])
            )
        return self.counts()
