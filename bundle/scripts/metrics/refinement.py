"""Does the difficult-pixel refinement help? Scores before and after it (Matsuzuki & Hotta's tables, and more).

Two kinds of numbers, each for the arg-max prediction ("before") and the refined one ("after"):

- per-class precision, recall (the paper's tables) and IoU, from the confusion matrix summed over all images
  (every pixel counts the same; ``scripts.metrics.confusion``);
- membrane continuity: the adapted Rand error (``skimage.metrics.adapted_rand_error``, 0 = perfect, as in the
  ISBI 2012 EM segmentation challenge) between the *cell regions* of ground truth and prediction, averaged over
  images. Cell regions are the connected components (4-connectivity, so a diagonal gap in a membrane does not join
  two cells) of the non-membrane pixels. Ground-truth membrane pixels are ignored (label 0, skimage's
  ``ignore_labels``); predicted membrane pixels are given to the nearest predicted cell
  (``skimage.segmentation.expand_labels``), so a thicker membrane is not counted as one more object and only gaps
  (merged cells) and spurious membranes (split cells) cost. An image with no ground-truth cell has no defined
  error (NaN, skipped in the mean).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.utils import convert_data_type
from scripts.metrics.confusion import confusion_matrix, format_table, scores_from_confusion
from scripts.transforms.difficult_pixels import DifficultPixelRefine
from skimage.measure import label as connected_components
from skimage.metrics import adapted_rand_error
from skimage.segmentation import expand_labels

__all__ = ["cell_regions", "membrane_rand_error", "RefinementEvaluation", "format_refinement_table"]


def _label_map(x, name: str) -> np.ndarray:
    """(H, W) or (1, H, W) class indices (tensor or array) -> (H, W) int64 array."""
    arr, *_ = convert_data_type(x, np.ndarray)
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be an (H, W) or (1, H, W) label map, got shape {arr.shape}.")
    return np.rint(arr).astype(np.int64)


def cell_regions(labels, membrane_class: int) -> np.ndarray:
    """Connected components (4-connectivity) of the non-membrane pixels: (H, W) int, 0 = membrane, 1.. = cells."""
    labels = _label_map(labels, "labels")
    return connected_components(labels != membrane_class, background=0, connectivity=1)


def membrane_rand_error(pred, true, membrane_class: int) -> float:
    """Adapted Rand error of the predicted cell regions against the true ones (module docstring).

    Args:
        pred: predicted label map, (H, W) or (1, H, W).
        true: ground-truth label map, same size.
        membrane_class: index of the membrane class (1 for the bundle's classes).

    Returns:
        the error in 0..1 (0 = the same cells), NaN when ``true`` has no cell.

    Raises:
        ValueError: maps of different sizes.
    """
    true_cells = cell_regions(true, membrane_class)
    pred_cells = cell_regions(pred, membrane_class)
    if true_cells.shape != pred_cells.shape:
        raise ValueError(f"pred {pred_cells.shape} and true {true_cells.shape} must have the same size.")
    if not true_cells.any():
        return float("nan")
    pred_cells = expand_labels(pred_cells, distance=sum(pred_cells.shape))
    return float(adapted_rand_error(true_cells, pred_cells)[0])


class RefinementEvaluation:
    """Accumulate scores of the arg-max prediction and of its difficult-pixel refinement over images.

    Example::

        ev = RefinementEvaluation(DifficultPixelRefine((1, 3), 0, softmax=True), num_classes=5, membrane_class=1)
        for logits, label in data:          # (C, H, W) and (1, H, W) per image
            ev.update(logits, label)
        print(format_refinement_table(ev.aggregate(), class_names=["intracellular", "membrane", "glia", "mito", "synapse"]))

    Args:
        refiner: the refinement (input = probabilities; give it ``softmax=True`` to feed logits).
        num_classes: number of classes K.
        membrane_class: class whose continuity the Rand error measures.
    """

    def __init__(self, refiner: DifficultPixelRefine, num_classes: int, membrane_class: int) -> None:
        if num_classes < 2 or not 0 <= membrane_class < num_classes:
            raise ValueError(
                f"need num_classes >= 2 and 0 <= membrane_class < num_classes, got {num_classes}, {membrane_class}."
            )
        self.refiner = refiner
        self.num_classes = num_classes
        self.membrane_class = membrane_class
        self.reset()

    def reset(self) -> None:
        self.confusion = {
            k: torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64) for k in ("before", "after")
        }
        self.rand_errors: dict[str, list[float]] = {"before": [], "after": []}
        self.difficult_pixels = 0
        self.pixels = 0

    def update(self, prob, label) -> dict[str, float]:
        """Add one image.

        Args:
            prob: (C, H, W) per-class probabilities (logits if the refiner has ``softmax=True``).
            label: (H, W) or (1, H, W) ground-truth class indices.

        Returns:
            this image's ``{"rand_error_before", "rand_error_after", "difficult_fraction"}``.
        """
        refined, _, difficult = self.refiner(prob, return_maps=True)
        prob_np, *_ = convert_data_type(prob, np.ndarray)
        maps = {"before": np.argmax(prob_np, axis=0), "after": _label_map(refined, "refined")}
        true = _label_map(label, "label")
        result = {}
        for key, pred in maps.items():
            self.confusion[key] += confusion_matrix(
                torch.as_tensor(pred)[None, None], torch.as_tensor(true)[None, None], self.num_classes
            )[0]
            err = membrane_rand_error(pred, true, self.membrane_class)
            self.rand_errors[key].append(err)
            result[f"rand_error_{key}"] = err
        n_difficult = int(np.asarray(convert_data_type(difficult, np.ndarray)[0]).sum())
        self.difficult_pixels += n_difficult
        self.pixels += true.size
        result["difficult_fraction"] = n_difficult / true.size
        return result

    def aggregate(self) -> dict[str, object]:
        """Scores over all images so far.

        Returns:
            ``{"before": {...}, "after": {...}, "images": N, "difficult_fraction": f}``, each of "before"/"after"
            holding ``precision``, ``recall``, ``iou`` (lists of K floats, NaN where undefined), ``mean_iou`` and
            ``rand_error`` (mean over images with a defined error).
        """
        out: dict[str, object] = {"images": len(self.rand_errors["before"])}
        for key in ("before", "after"):
            s = scores_from_confusion(self.confusion[key])
            errs = np.array(self.rand_errors[key], dtype=np.float64)
            out[key] = {
                "precision": s["precision"].tolist(),
                "recall": s["recall"].tolist(),
                "iou": s["iou"].tolist(),
                "mean_iou": float(torch.nanmean(s["iou"])),
                "rand_error": float(np.nanmean(errs)) if np.isfinite(errs).any() else float("nan"),
            }
        out["difficult_fraction"] = self.difficult_pixels / self.pixels if self.pixels else float("nan")
        return out


def format_refinement_table(results: dict, class_names: Sequence[str]) -> str:
    """Plain-text table of :meth:`RefinementEvaluation.aggregate`: per class precision/recall/IoU before -> after,
    then mean IoU and the membrane adapted Rand error."""
    before, after = results["before"], results["after"]

    def f(v: float) -> str:
        return "n/a" if v != v else f"{v:.4f}"

    rows = [
        ["class", "precision before", "precision after", "recall before", "recall after", "IoU before", "IoU after"]
    ]
    for i, name in enumerate(class_names):
        rows.append([name] + [f(d[m][i]) for m in ("precision", "recall", "iou") for d in (before, after)])
    rows.append(["mean IoU", "", "", "", "", f(before["mean_iou"]), f(after["mean_iou"])])
    table = format_table(rows)
    return (
        f"{table}\n\nmembrane continuity, adapted Rand error of cell regions (lower is better): "
        f"before {f(before['rand_error'])}, after {f(after['rand_error'])}\n"
        f"images: {results['images']}, difficult pixels: {100 * results['difficult_fraction']:.2f}%"
    )
