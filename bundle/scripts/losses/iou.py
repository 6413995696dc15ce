"""Soft IoU (Jaccard) loss of Fujii et al. (X-Net)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.utils import LossReduction

from ._base import SoftRegionLoss

__all__ = ["IoULoss"]


class IoULoss(SoftRegionLoss):
    """Soft IoU (Jaccard) loss, computed per class and averaged.

    For each class ``c`` (and each batch item unless ``batch=True``), with ``p`` the predicted probabilities and
    ``g`` the one-hot ground truth of that class, summed over the pixels:

    .. math::

        L_c = 1 - \\frac{\\sum p g + \\gamma_{nr}}{\\sum p + \\sum g - \\sum p g + \\gamma_{dr}}

    which is equation 2 of Fujii et al. with ``γ = smooth_nr = smooth_dr = 1e-5``. Unlike
    ``monai.losses.DiceLoss(jaccard=True)``, whose numerator and denominator are doubled before the smoothing
    terms are added, this is the paper's formula exactly (the two agree when the smoothing terms are 0).

    The input ``input`` (``BNH[WD]``, ``N`` classes) holds probabilities, or logits with ``softmax=True`` /
    ``sigmoid=True`` / ``other_act``; ``target`` is one-hot ``BNH[WD]``, or class indices ``B1H[WD]`` with
    ``to_onehot_y=True``. The arguments mean what they mean in :class:`monai.losses.DiceLoss`.

    Reference:
        Fujii, H., Tanaka, H., Ikeuchi, M., Hotta, K. (2021) X-Net with Different Loss Functions for Cell Image
        Segmentation. CVPR Workshops 2021.

    Args:
        include_background: if False, channel index 0 is excluded from the calculation.
        to_onehot_y: convert ``target`` (class indices ``B1H[WD]``) to one-hot with ``input.shape[1]`` classes.
        sigmoid: apply a sigmoid to ``input``.
        softmax: apply a softmax over the channel dimension of ``input``.
        other_act: another callable activation applied to ``input``, e.g. ``torch.tanh``.
        reduction: ``"none"`` (shape ``(B, C, 1, ...)``), ``"mean"`` or ``"sum"`` over batch and classes.
        smooth_nr: ``γ`` added to the numerator.
        smooth_dr: ``γ`` added to the denominator (a class absent from both prediction and ground truth then
            scores a loss of ``1 - smooth_nr / smooth_dr``, 0 by default).
        batch: sum the statistics over the batch before dividing.
        weight: class weights applied to the per-class losses: a number or one value per class (without
            class 0 when ``include_background=False``), no less than 0.

    Raises:
        TypeError: when ``other_act`` is not None nor callable.
        ValueError: when more than one of ``sigmoid``, ``softmax``, ``other_act`` is set, ``reduction`` is
            unknown, a smoothing term is negative, or ``weight`` is invalid.

    Example:
        >>> import torch
        >>> loss = IoULoss(to_onehot_y=True, softmax=True)
        >>> logits = torch.randn(2, 5, 32, 32)
        >>> label = torch.randint(0, 5, (2, 1, 32, 32))
        >>> loss(logits, label).shape
        torch.Size([])
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        reduction: LossReduction | str = LossReduction.MEAN,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        weight: Sequence[float] | float | int | torch.Tensor | None = None,
    ) -> None:
        super().__init__(
            include_background=include_background,
            to_onehot_y=to_onehot_y,
            sigmoid=sigmoid,
            softmax=softmax,
            other_act=other_act,
            reduction=reduction,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            batch=batch,
            weight=weight,
        )

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: ``BNH[WD]`` probabilities or logits (see ``sigmoid``/``softmax``/``other_act``).
            target: ``BNH[WD]`` one-hot, or ``B1H[WD]`` class indices with ``to_onehot_y=True``.

        Returns:
            the loss, reduced as set by ``reduction``.

        Raises:
            ValueError: when ``input`` and ``target`` (after one-hot conversion) have different shapes, or the
                number of class weights differs from the number of classes.
        """
        spatial_ndim = input.ndim - 2
        input, target, reduce_axis = self.prepare(input, target)
        intersection = torch.sum(input * target, dim=reduce_axis)
        union = torch.sum(input, dim=reduce_axis) + torch.sum(target, dim=reduce_axis) - intersection
        f = 1.0 - (intersection + self.smooth_nr) / (union + self.smooth_dr)
        return self.reduce(f, spatial_ndim)
