"""The measure step's counts against the hand labels: per class, objects per µm² and area fraction of the
prediction and of the labels, and object detection precision, recall and F1 (a predicted object matches a labelled
one of its class when their IoU exceeds 0.5; such a match is unique).

The prediction: an output folder of ``run inference`` with ``configs/measure.json`` (its ``measurements/``:
instance maps, object CSVs, ``measure_report.json``). The labels: the same inputs' ``label`` in a datalist,
measured with the same function and settings (classes, connectivity, pixel size;
:func:`scripts.measure.measure_objects`).

Example (the shipped model on the Drosophila fold-0 test sections, 4.6 nm pixels)::

    python -m monai.bundle run inference \\
        --config_file "['bundle/configs/inference.json','bundle/configs/measure.json']" \\
        --input bundle/data/drosophila/datalist_fold0.json --input_key testing_sections \\
        --output_dir runs/measure_test_sections --pictures False --measure "['mitochondria','synapse']" \\
        --pixel_size_nm 4.6
    python benchmarks/measure_objects.py --output_dir runs/measure_test_sections \\
        --datalist bundle/data/drosophila/datalist_fold0.json --key testing_sections --json measure.json
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
from pathlib import Path

import numpy as np
import tifffile

from scripts.data import list_images, read_image
from scripts.data.pixel_size import PixelSize
from scripts.measure import measure_objects

#: A match: IoU above this.
IOU = 0.5


def matches(gt: np.ndarray, pred: np.ndarray) -> set[tuple[int, int]]:
    """``(gt id, predicted id)`` pairs whose IoU exceeds :data:`IOU`, from two instance maps (0 = none)."""
    both = (gt > 0) & (pred > 0)
    pairs, overlap = np.unique(np.stack([gt[both], pred[both]]), axis=1, return_counts=True)
    gt_area, pred_area = np.bincount(gt.ravel()), np.bincount(pred.ravel())
    iou = overlap / (gt_area[pairs[0]] + pred_area[pairs[1]] - overlap)
    return {(int(g), int(p)) for g, p, v in zip(pairs[0], pairs[1], iou) if v > IOU}


def _classes_of(rows) -> dict[int, str]:
    return {int(r["id"]): r["class"] for r in rows}


def compare(output_dir: str | Path, datalist: str | Path, key: str) -> dict:
    """Per class (and per image): counts, densities, area fractions of prediction and labels; detection scores."""
    output_dir = Path(output_dir)
    measure_dir = output_dir / "measurements"
    report = json.loads((measure_dir / "measure_report.json").read_text())
    settings = report["settings"]
    classes = dict(zip(settings["class_indices"], settings["classes"]))
    labels = {str(Path(item["image"]).resolve()): item["label"] for item in list_images(datalist, key) if "label" in item}
    totals = {n: {"gt_count": 0, "pred_count": 0, "matched": 0, "gt_area_px": 0, "pred_area_px": 0} for n in classes.values()}
    images, area_px, area_um2 = [], 0, 0.0
    for record in report["files"]:
        if record["status"] not in ("ok", "skipped") or str(Path(record["input"]).resolve()) not in labels:
            continue
        name = record["output_name"]
        size = PixelSize(*record["pixel_size_nm"], "report") if record.get("pixel_size_nm") else None
        truth = measure_objects(read_image(labels[str(Path(record["input"]).resolve())]), classes, None, size,
                                settings["connectivity"])
        pred = tifffile.imread(measure_dir / f"{name}_instances.tif").astype(np.int64)
        with open(measure_dir / f"{name}_objects.csv", newline="") as fh:
            pred_class = _classes_of(csv.DictReader(fh))
        gt_class = _classes_of(truth.rows)
        found = [(g, p) for g, p in matches(truth.instances.astype(np.int64), pred) if gt_class[g] == pred_class[p]]
        per_image = {"image": name}
        for n in classes.values():
            t = totals[n]
            gt_n = sum(1 for c in gt_class.values() if c == n)
            pred_n = sum(1 for c in pred_class.values() if c == n)
            hit = sum(1 for g, _ in found if gt_class[g] == n)
            pred_area = int(np.isin(pred, [i for i, c in pred_class.items() if c == n]).sum())
            t["gt_count"] += gt_n
            t["pred_count"] += pred_n
            t["matched"] += hit
            t["gt_area_px"] += truth.per_class[n]["area_px"]
            t["pred_area_px"] += pred_area
            per_image[n] = {"gt_count": gt_n, "pred_count": pred_n, "matched": hit}
        images.append(per_image)
        area_px += truth.image_area_px
        area_um2 = area_um2 + truth.image_area_px * size.area_um2 if size and area_um2 is not None else None
    for t in totals.values():
        t["precision"] = t["matched"] / t["pred_count"] if t["pred_count"] else None
        t["recall"] = t["matched"] / t["gt_count"] if t["gt_count"] else None
        p, r = t["precision"], t["recall"]
        t["f1"] = 2 * p * r / (p + r) if p and r else 0.0
        t["gt_area_fraction"] = t["gt_area_px"] / area_px if area_px else None
        t["pred_area_fraction"] = t["pred_area_px"] / area_px if area_px else None
        t["gt_per_um2"] = t["gt_count"] / area_um2 if area_um2 else None
        t["pred_per_um2"] = t["pred_count"] / area_um2 if area_um2 else None
    return {"output_dir": str(output_dir), "settings": settings, "images": len(images), "image_area_px": area_px,
            "image_area_um2": area_um2, "iou_threshold": IOU, "classes": totals, "per_image": images}


def _f(v, digits=3) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def table(result: dict) -> str:
    lines = ["| class | objects: labels / predicted | per µm²: labels / predicted | area fraction: labels / predicted | "
             "matched (IoU > 0.5) | precision | recall | F1 |", "|---|---|---|---|---|---|---|---|"]
    for n, t in result["classes"].items():
        lines.append(f"| {n} | {t['gt_count']} / {t['pred_count']} | {_f(t['gt_per_um2'], 2)} / {_f(t['pred_per_um2'], 2)} | "
                     f"{_f(t['gt_area_fraction'], 4)} / {_f(t['pred_area_fraction'], 4)} | {t['matched']} | "
                     f"{_f(t['precision'])} | {_f(t['recall'])} | {_f(t['f1'])} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", required=True, help="an inference output folder measured with measure.json")
    parser.add_argument("--datalist", required=True, help="datalist JSON with the inputs' labels")
    parser.add_argument("--key", default="testing", help="its list (default: testing)")
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)
    result = compare(args.output_dir, args.datalist, args.key)
    result["command"] = " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])
    result["machine"] = {"python": platform.python_version(), "platform": platform.platform(),
                         "processor": platform.processor()}
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
