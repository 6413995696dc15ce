"""Class-weighted softmax cross-entropy for MONAI-shaped logits and labels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from ._base import at_least_float32, check_weight_count, per_class_weight

__all__ = ["SoftmaxCrossEntropyLoss", "target_to_indices"]


def target_to_indices(target: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
    """Turn a MONAI-shaped ``target`` into the class-index tensor ``F.cross_entropy`` expects.

    Args:
        target: class indices ``B1H[WD]`` or ``BH[WD]`` (any dtype holding whole numbers, e.g. the float
            labels MONAI's ``LoadImaged`` produces), or one-hot ``BCH[WD]`` (converted with ``argmax``, as
            :class:`monai.losses.DiceCELoss` does).
        input: the logits ``BCH[WD]``, used for the shapes.

    Returns:
        a ``torch.long`` tensor of shape ``BH[WD]``.

    Raises:
        ValueError: when the shape of ``target`` matches none of the accepted layouts.
    """
    if target.ndim == input.ndim - 1:
        indices = target
    elif target.ndim == input.ndim and target.shape[1] == 1:
        indices = target[:, 0]
    elif target.ndim == input.ndim and target.shape[1] == input.shape[1]:
        indices = torch.argmax(target, dim=1)
    else:
        raise ValueError(
            f"target shape {list(target.shape)} does not fit input shape {list(input.shape)}: expected class "
            "indices (B, 1, *spatial) or (B, *spatial), or one-hot (B, C, *spatial)."
        )
    if indices.shape[0] != input.shape[0] or indices.shape[1:] != input.shape[2:]:
        raise ValueError(
            f"target spatial/batch shape {list(indices.shape)} differs from input's "
            f"{[input.shape[0]] + list(input.shape[2:])}."
        )
    if indices.is_floating_point():
        indices = torch.round(indices)
    return indices.long()


class SoftmaxCrossEntropyLoss(_Loss):
    """Softmax cross-entropy with optional class weights, built on :func:`torch.nn.functional.cross_entropy`.

    ``input`` are raw logits ``BCH[WD]`` (the softmax is part of the loss; computed in at least float32 whatever
    their dtype, e.g. float16 under autocast, so that large class weights cannot overflow); ``target`` holds class
    indices ``B1H[WD]`` / ``BH[WD]`` or is one-hot ``BCH[WD]``. With class weights ``w`` and ``reduction="mean"`` the
    loss is torch's weighted mean ``Σ_i w[y_i] CE_i / Σ_i w[y_i]``; this is the "SCE" (softmax cross entropy)
    of Fujii et al. (X-Net) and, with ``weight``, the class-balanced cross entropy used for U-Net.

    Args:
        weight: class weights, one per class: a list/tuple/tensor of ``C`` floats no less than 0 (configs pass
            lists, e.g. from :func:`scripts.losses.compute_class_weights`). Stored as a buffer, so it follows
            ``.to(device)``. ``None``: all classes weigh 1.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-pixel loss of shape ``(B, 1, *spatial)``).
        ignore_index: a target value whose pixels do not count (e.g. an "unlabelled" value); ``None``: all
            pixels count. It may lie outside ``[0, C)``.

    Raises:
        ValueError: when ``reduction`` is unknown, ``weight`` is not a 1-D sequence of finite values no less
            than 0, or ``ignore_index`` is not an integer.

    Example:
        >>> loss = SoftmaxCrossEntropyLoss(weight=[1.0, 2.0, 1.0])
        >>> loss(torch.randn(2, 3, 16, 16), torch.randint(0, 3, (2, 1, 16, 16))).shape
        torch.Size([])
    """

    def __init__(
        self,
        weight: Sequence[float] | torch.Tensor | None = None,
        reduction: LossReduction | str = LossReduction.MEAN,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        cw = per_class_weight(weight)
        if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
            raise ValueError(f"`ignore_index` must be None or an integer, got {ignore_index!r}.")
        self.register_buffer("class_weight", cw)
        self.class_weight: torch.Tensor | None
        # torch's "no ignored value" sentinel
        self.ignore_index = -100 if ignore_index is None else int(ignore_index)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: logits ``BCH[WD]``, ``C >= 2``.
            target: class indices ``B1H[WD]`` / ``BH[WD]``, or one-hot ``BCH[WD]``.

        Returns:
            the loss, reduced as set by ``reduction``.

        Raises:
            ValueError: when ``input`` has fewer than 2 channels, the number of class weights differs from
                ``C``, or ``target``'s shape does not fit ``input``'s.
        """
        if input.ndim < 3 or input.shape[1] < 2:
            raise ValueError(
                f"input must be logits of shape (B, C, *spatial) with C >= 2 classes, got {list(input.shape)}."
            )
        class_weight = self.class_weight
        check_weight_count(class_weight, input.shape[1])
        indices = target_to_indices(target, input)
        # at least float32 (fp16 logits under autocast): large class weights would overflow fp16
        input = at_least_float32(input)
        weight = None if class_weight is None else class_weight.to(device=input.device, dtype=input.dtype)
        loss = F.cross_entropy(input, indices, weight=weight, reduction=self.reduction, ignore_index=self.ignore_index)
        if self.reduction == LossReduction.NONE.value:
            loss = loss.unsqueeze(1)
        return loss
