"""Ignite handler that turns accumulated confusion matrices into the evaluation report (CSV, JSON, printed table)."""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from scripts.metrics.confusion import format_table, per_image_scores, scores_from_confusion

__all__ = ["SegmentationReport"]

logger = logging.getLogger(__name__)


def _num(x: torch.Tensor | float) -> float | None:
    v = float(x)
    return None if math.isnan(v) else round(v, 6)


class SegmentationReport:
    """Writes per-class IoU, Dice, precision, recall and F1 when an evaluation completes.

    It reads the per-image confusion matrices that ``IgniteMetricHandler(SegmentationConfusionMatrix(...),
    save_details=True)`` leaves in ``engine.state.metric_details[metric_name]`` and reports two things side by side:

    - **accumulated** scores: the matrices summed over the whole split, scores derived once (the paper's protocol);
    - **per-image mean** scores: scores of each image, averaged over the images where the class is defined.

    Files written to ``output_dir``: ``<prefix>.json`` (everything, plus the accumulated confusion matrix),
    ``<prefix>.csv`` (one row per class and a ``mean`` row, both kinds of score) and ``<prefix>_per_image.csv``
    (mean IoU and per-class IoU of every image, named by its file when known). The table is also logged.

    Args:
        output_dir: folder for the files (created).
        class_names: names of the K classes, in index order.
        metric_name: name under which the confusion-matrix metric is attached to the engine.
        prefix: file name prefix.
    """

    def __init__(
        self, output_dir: str, class_names: Sequence[str], metric_name: str = "mean_iou", prefix: str = "metrics"
    ) -> None:
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names)
        self.metric_name = metric_name
        self.prefix = prefix
        self.filenames: list[str] = []
        self.last_report: dict | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self.filenames.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect_names)
        engine.add_event_handler(Events.COMPLETED, self)

    def _collect_names(self, engine: Engine) -> None:
        batch = engine.state.batch
        items = batch if isinstance(batch, list) else [batch]
        for item in items:
            meta = getattr(item.get("image"), "meta", {}) if isinstance(item, dict) else {}
            names = meta.get("filename_or_obj", None)
            if isinstance(names, (list, tuple)):
                self.filenames.extend(str(n) for n in names)
            elif names is not None:
                self.filenames.append(str(names))

    def __call__(self, engine: Engine) -> None:
        details = getattr(engine.state, "metric_details", {}).get(self.metric_name)
        if details is None:
            raise RuntimeError(
                f"SegmentationReport found no per-image details for metric '{self.metric_name}': attach "
                "IgniteMetricHandler(SegmentationConfusionMatrix(...), save_details=True) under that name."
            )
        names = self.filenames
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # details are all-gathered in rank order (IgniteMetricHandler -> Cumulative.get_buffer); gather names alike
            parts: list = [None] * dist.get_world_size()
            dist.all_gather_object(parts, list(self.filenames))
            names = [n for part in parts for n in part]
            if dist.get_rank() != 0:
                return
        cms = details.to(torch.long).cpu()
        k = len(self.class_names)
        if cms.shape[-1] != k:
            raise ValueError(f"the metric has {cms.shape[-1]} classes but {k} class names were given.")
        report = self.build_report(cms)
        self.write(report, cms, names)
        self.last_report = report
        logger.info("Evaluation on %d images:\n%s", report["num_images"], self.table(report))

    def build_report(self, cms: torch.Tensor) -> dict:
        total = cms.sum(dim=0)
        acc = scores_from_confusion(total)
        img = per_image_scores(cms)
        per_class = {}
        for i, name in enumerate(self.class_names):
            per_class[name] = {
                "accumulated": {s: _num(acc[s][i]) for s in acc},
                "per_image_mean": {s: _num(img[s][i]) for s in acc},
                "pixels_true": int(total[i].sum()),
                "pixels_pred": int(total[:, i].sum()),
            }
        return {
            "num_images": int(cms.shape[0]),
            "classes": self.class_names,
            "mean_iou": _num(torch.nanmean(acc["iou"])),
            "mean_dice": _num(torch.nanmean(acc["dice"])),
            "per_image_mean_iou": _num(img["mean_iou"]),
            "pixel_accuracy": _num(total.diagonal().sum() / total.sum().clamp_min(1)),
            "per_class": per_class,
            "mean": {
                "accumulated": {s: _num(torch.nanmean(acc[s])) for s in acc},
                "per_image_mean": {s: _num(torch.nanmean(img[s])) for s in acc},
            },
            "confusion_matrix": total.tolist(),
            "confusion_matrix_axes": "rows: ground truth class, columns: predicted class",
        }

    def table(self, report: dict) -> str:
        def f(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.4f}"

        head = ["class", "IoU", "Dice", "precision", "recall", "F1", "IoU (per-image mean)"]
        rows = [head]
        for name in self.class_names + ["mean"]:
            r = report["per_class"][name] if name != "mean" else report["mean"]
            a, m = r["accumulated"], r["per_image_mean"]
            rows.append([name, f(a["iou"]), f(a["dice"]), f(a["precision"]), f(a["recall"]), f(a["f1"]), f(m["iou"])])
        return (
            format_table(rows)
            + f"\nper-image mean IoU (mean over images of each image's mIoU): {f(report['per_image_mean_iou'])}"
        )

    def write(self, report: dict, cms: torch.Tensor, names: list[str] | None = None) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / f"{self.prefix}.json").write_text(json.dumps(report, indent=2))
        scores = ["iou", "dice", "precision", "recall", "f1"]
        with open(self.output_dir / f"{self.prefix}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["class"] + scores + [f"{s}_per_image_mean" for s in scores])
            for name in self.class_names + ["mean"]:
                r = report["per_class"][name] if name != "mean" else report["mean"]
                w.writerow([name] + [r["accumulated"][s] for s in scores] + [r["per_image_mean"][s] for s in scores])
        per_image = scores_from_confusion(cms)["iou"]
        names = self.filenames if names is None else names
        names = names if len(names) == cms.shape[0] else [str(i) for i in range(cms.shape[0])]
        with open(self.output_dir / f"{self.prefix}_per_image.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["image", "mean_iou"] + [f"iou_{c}" for c in self.class_names])
            for name, row in zip(names, per_image):
                w.writerow([name, _num(torch.nanmean(row))] + [_num(v) for v in row])
