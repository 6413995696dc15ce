"""Pixel-weighted softmax cross-entropy of U-Net (Ronneberger et al.), reading the weight map from the label."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from ._base import at_least_float32, check_weight_count, per_class_weight

__all__ = ["BorderWeightedCELoss"]


class BorderWeightedCELoss(_Loss):
    """U-Net's weighted cross-entropy ``E = Σ_x w(x) · (-log p_{y(x)}(x))`` with a per-pixel weight map.

    MONAI's ``SupervisedTrainer`` calls ``loss(y_pred, y)`` only, so the weight map travels inside the label:
    :class:`scripts.transforms.UNetBorderWeightMapd` appends it as a second label channel, and the target this
    loss receives is ``(B, 2, *spatial)``: channel 0 the class index, channel 1 the weight map. The per-pixel
    weight is

    ``w(x) = target[:, 1](x) + weight[y(x)]``   (the second term only when ``weight`` is given)

    i.e. U-Net's ``w(x) = w_c(x) + w_0 exp(-(d_1 + d_2)² / 2σ²)`` whose class-balancing part ``w_c`` is set in
    exactly one place: in the transform (its default, ``class_weights="frequency"``: the map already holds
    ``w_c + border term``, leave ``weight=None`` here), or here (``weight`` = per-class ``w_c``, e.g. dataset
    frequencies from :func:`scripts.losses.compute_class_weights`, with the transform's ``class_weights=None``
    so the map holds the border term only). Setting both adds ``w_c`` twice.

    With ``weight=None``, pixels whose map value is 0 (e.g. zero padding from a rotation of the label) do not
    count.

    Reference:
        Ronneberger, O., Fischer, P., Brox, T. (2015) U-Net: Convolutional Networks for Biomedical Image
        Segmentation. MICCAI 2015, eq. 1-2.

    Args:
        weight: class weights ``w_c`` added to the map, one per class (list/tuple/tensor of ``C`` floats no less
            than 0), stored as a buffer; ``None``: the map is the whole weight.
        reduction: ``"mean"`` (``Σ_x w(x) CE(x) / number of pixels``, the U-Net energy divided by the pixel
            count, so loss values do not depend on the tile size), ``"sum"`` (the energy ``E`` itself) or
            ``"none"`` (``w(x) CE(x)``, shape ``(B, 1, *spatial)``).

    Raises:
        ValueError: when ``reduction`` is unknown or ``weight`` is not a 1-D sequence of finite values no less
            than 0.
    """

    def __init__(
        self, weight: Sequence[float] | torch.Tensor | None = None, reduction: LossReduction | str = LossReduction.MEAN
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        cw = per_class_weight(weight)
        self.register_buffer("class_weight", cw)
        self.class_weight: torch.Tensor | None

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: logits ``BCH[WD]``, ``C >= 2``.
            target: ``(B, 2, *spatial)``: channel 0 class indices, channel 1 the weight map.

        Returns:
            the loss, reduced as set by ``reduction``.

        Raises:
            ValueError: when ``input`` has fewer than 2 channels, ``target`` is not ``(B, 2, *spatial)`` with
                ``input``'s batch and spatial shape, or the number of class weights differs from ``C``.
        """
        if input.ndim < 3 or input.shape[1] < 2:
            raise ValueError(
                f"input must be logits of shape (B, C, *spatial) with C >= 2 classes, got {list(input.shape)}."
            )
        if target.ndim != input.ndim or target.shape[1] != 2:
            raise ValueError(
                f"target must be (B, 2, *spatial) (class index + weight map channels), got {list(target.shape)}; "
                "add scripts.transforms.UNetBorderWeightMapd to the training transforms (before random ones)."
            )
        if target.shape[0] != input.shape[0] or target.shape[2:] != input.shape[2:]:
            raise ValueError(
                f"target batch/spatial shape {list(target.shape)} differs from input's {list(input.shape)}."
            )
        class_weight = self.class_weight
        check_weight_count(class_weight, input.shape[1])
        labels = torch.round(target[:, 0]).long()
        # at least float32 (fp16 logits under autocast): large weights would overflow fp16
        input = at_least_float32(input)
        pixel_weight = target[:, 1].to(input.dtype)
        if class_weight is not None:
            pixel_weight = pixel_weight + class_weight.to(device=input.device, dtype=input.dtype)[labels]
        loss = pixel_weight * F.cross_entropy(input, labels, reduction="none")
        if self.reduction == LossReduction.MEAN.value:
            return loss.mean()
        if self.reduction == LossReduction.SUM.value:
            return loss.sum()
        return loss.unsqueeze(1)
