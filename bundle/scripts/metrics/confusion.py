"""Multi-class confusion matrices and the segmentation scores derived from them.

IoU, Dice, precision, recall and F1 of every class follow from one ``K x K`` confusion matrix (rows: ground truth,
columns: prediction). Summing the per-image matrices over a whole split and deriving the scores once gives the
*accumulated* scores the X-Net paper reports (every pixel counts the same); deriving them per image and averaging
gives the *per-image mean*, reported beside it because a few large images cannot dominate it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.metrics import CumulativeIterationMetric
from monai.utils import MetricReduction

__all__ = ["confusion_matrix", "scores_from_confusion", "per_image_scores", "SegmentationConfusionMatrix"]

SCORE_NAMES = ("iou", "dice", "precision", "recall", "f1")


def _to_index_map(x: torch.Tensor, name: str) -> torch.Tensor:
    """(B, 1, *spatial) index map or (B, C, *spatial) scores/one-hot -> (B, N) int64 class indices."""
    if x.ndim < 3:
        raise ValueError(
            f"{name} must be batch-first with a channel dimension, (B, C, H, W); got shape {tuple(x.shape)}."
        )
    x = x.argmax(dim=1) if x.shape[1] > 1 else x[:, 0]
    return x.reshape(x.shape[0], -1).long()


def confusion_matrix(y_pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-image confusion matrices.

    Args:
        y_pred: predictions, (B, 1, H, W) class indices or (B, C, H, W) one-hot/probabilities/logits (argmax is taken).
        y: ground truth in the same forms as ``y_pred``.
        num_classes: number of classes K.

    Returns:
        (B, K, K) int64 tensor; entry ``[b, t, p]`` counts the pixels of image ``b`` with truth ``t`` predicted ``p``.

    Raises:
        ValueError: when shapes disagree or a class index falls outside ``[0, num_classes)``.
    """
    p, t = _to_index_map(y_pred, "y_pred"), _to_index_map(y, "y")
    if p.shape != t.shape:
        raise ValueError(f"y_pred and y must cover the same pixels, got {tuple(y_pred.shape)} and {tuple(y.shape)}.")
    if p.numel():
        # one device->host copy (a sync on a GPU) for the four bounds, not one per bound
        bounds = torch.stack([*torch.aminmax(p), *torch.aminmax(t)]).tolist()
        for name, (lo, hi) in (("y_pred", bounds[:2]), ("y", bounds[2:])):
            if lo < 0 or hi >= num_classes:
                raise ValueError(
                    f"{name} holds class indices outside [0, {num_classes}): min {lo}, max {hi}. "
                    "Check num_classes and the label class map."
                )
    idx = t * num_classes + p + (torch.arange(p.shape[0], device=p.device) * num_classes**2)[:, None]
    counts = torch.bincount(idx.flatten(), minlength=p.shape[0] * num_classes**2)
    return counts.reshape(p.shape[0], num_classes, num_classes)


def scores_from_confusion(cm: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-class scores from one (K, K) confusion matrix, or a batch (..., K, K).

    A class that appears in neither truth nor prediction has no defined IoU/Dice; it gets NaN so that means
    (``torch.nanmean``) skip it instead of counting it as 0 or 1. Precision is NaN for a class never predicted,
    recall NaN for a class absent from the truth.

    Returns:
        dict with keys ``iou, dice, precision, recall, f1``, each (..., K) float64. ``f1`` equals ``dice``: for a
        hard segmentation they are the same number, reported under both names because users look for both.
    """
    cm = cm.double()
    tp = cm.diagonal(dim1=-2, dim2=-1)
    fp = cm.sum(dim=-2) - tp
    fn = cm.sum(dim=-1) - tp
    nan = torch.tensor(float("nan"), dtype=cm.dtype, device=cm.device)

    def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        return torch.where(den > 0, num / den.clamp_min(1), nan)

    dice = ratio(2 * tp, 2 * tp + fp + fn)
    return {
        "iou": ratio(tp, tp + fp + fn),
        "dice": dice,
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "f1": dice.clone(),
    }


def per_image_scores(cms: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image mean of each score: per class over the images where it is defined, and the per-image mean IoU.

    Args:
        cms: (N, K, K) per-image confusion matrices.

    Returns:
        dict with the keys of :func:`scores_from_confusion` (each (K,): the mean over images, NaN-skipping) and
        ``mean_iou`` (scalar: the mean over images of each image's mean IoU over its defined classes).
    """
    s = scores_from_confusion(cms)
    out = {k: torch.nanmean(v, dim=0) for k, v in s.items()}
    out["mean_iou"] = torch.nanmean(torch.nanmean(s["iou"], dim=-1))
    return out


class SegmentationConfusionMatrix(CumulativeIterationMetric):
    """Accumulates per-image multi-class confusion matrices; ``aggregate`` returns the accumulated mean IoU.

    Wrap it in ``monai.handlers.IgniteMetricHandler`` to use it as an Ignite metric (e.g. the validation key metric for
    best-checkpoint saving). With ``save_details=True`` the handler stores the per-image matrices in
    ``engine.state.metric_details[<name>]``, from which :class:`scripts.handlers.SegmentationReport` derives every score.
    Works with distributed evaluation: ``get_buffer`` gathers all ranks' matrices.

    Args:
        num_classes: number of classes K.
        include_background: whether class 0 counts in the aggregated mean IoU (every class is scored in the report).
        reduction: ``"mean"`` (mean IoU over classes) or ``"none"`` (per-class IoU vector) for ``aggregate``.
    """

    def __init__(self, num_classes: int, include_background: bool = True, reduction: str = "mean") -> None:
        super().__init__()
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
        self.num_classes = int(num_classes)
        self.include_background = include_background
        self.reduction = MetricReduction(reduction) if reduction in ("mean", "none") else None
        if self.reduction is None:
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}.")

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if y is None:
            raise ValueError("SegmentationConfusionMatrix needs the ground truth y.")
        return confusion_matrix(y_pred, y, self.num_classes)

    def confusion(self) -> torch.Tensor:
        """The (K, K) confusion matrix accumulated over everything seen since the last reset."""
        buf = self.get_buffer()
        if not isinstance(buf, torch.Tensor) or buf.numel() == 0:
            raise RuntimeError("SegmentationConfusionMatrix has seen no data yet.")
        return buf.sum(dim=0)

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        iou = scores_from_confusion(self.confusion())["iou"]
        if not self.include_background:
            iou = iou[1:]
        return torch.nanmean(iou) if self.reduction == MetricReduction.MEAN else iou


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """Plain-text table with aligned columns (first row is the header)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
