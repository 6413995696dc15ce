"""Soft Cohen's kappa loss (one-vs-rest per class, averaged)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.utils import LossReduction
from scripts.checks import check_option

from ._base import SoftRegionLoss

__all__ = ["KappaLoss"]

_VARIANTS = ("cohen", "zhang2020")


class KappaLoss(SoftRegionLoss):
    """``1 -`` Cohen's kappa, computed softly from probabilities, per class (one-vs-rest) and averaged.

    **Derivation** (``variant="cohen"``, the default). For one class, let ``p_i ∈ [0, 1]`` be the predicted
    probability and ``g_i ∈ {0, 1}`` the ground truth of pixel ``i``, ``N`` the number of pixels, and write
    ``P = Σ p_i``, ``G = Σ g_i``, ``I = Σ p_i g_i``. The soft 2x2 agreement table of "class" vs "not class" is
    ``TP = I``, ``FP = P - I``, ``FN = G - I``, ``TN = Σ (1 - p_i)(1 - g_i) = N - P - G + I``. Cohen's kappa
    is ``κ = (p_o - p_e) / (1 - p_e)`` with

    1. observed agreement ``p_o = (TP + TN) / N = (N + 2I - P - G) / N``;
    2. chance agreement ``p_e = (P G + (N - P)(N - G)) / N² = (N² - N P - N G + 2 P G) / N²``;
    3. ``p_o - p_e = (N² + 2NI - NP - NG - N² + NP + NG - 2PG) / N² = 2 (I - P G / N) / N``;
    4. ``1 - p_e = (N P + N G - 2 P G) / N² = (P + G - 2 P G / N) / N``;
    5. hence ``κ = 2 (I - P G / N) / (P + G - 2 P G / N)``.

    The loss of the class is ``1 - (2 (I - P G / N) + smooth_nr) / (P + G - 2 P G / N + smooth_dr)``. Its
    denominator equals ``N (a (1 - b) + b (1 - a))`` with ``a = P / N``, ``b = G / N``, so it is never
    negative and is 0 only when prediction and ground truth are both all-0 or both all-1 (then the loss is
    ``1 - smooth_nr / smooth_dr``, 0 by default). On hard one-hot inputs the loss is exactly
    ``1 - κ`` of the class's 2x2 table. Kappa ranges over ``[-1, 1]``, so the loss ranges over ``[0, 2]``.
    Unlike Dice/IoU, the true negatives count: a class that is mostly "not present" still has to be
    predicted absent where it is absent.

    ``variant="zhang2020"`` is the Kappa loss as printed by Zhang et al. (ISBI 2020, formula of the authors'
    public code repository ``jizhang02/Kappa-loss``):
    ``1 - (2I - P G / N) / (P + G - 2 I / N)`` (their code uses ``Σp² + Σg²`` in place of ``P + G``). It is
    **not** Cohen's kappa (compare with step 5: ``P G / N`` lacks the factor 2 in the numerator and the
    denominator has ``I`` where ``P G`` belongs), its value at a perfect prediction is not 0 in general (it
    can be negative), and it is offered only to reproduce results that used that formula. Never the default.

    Inputs and the other arguments behave as in :class:`monai.losses.DiceLoss`; ``N`` counts the pixels of
    one image, or of the whole batch with ``batch=True``.

    References:
        Cohen, J. (1960) A coefficient of agreement for nominal scales. Educational and Psychological
        Measurement 20(1).

        Zhang, J., Petitjean, C., Ainouz, S. (2020) Kappa loss for skin lesion segmentation in fully
        convolutional network. ISBI 2020.

    Args:
        include_background: if False, channel index 0 is excluded from the calculation.
        to_onehot_y: convert ``target`` (class indices ``B1H[WD]``) to one-hot with ``input.shape[1]`` classes.
        sigmoid: apply a sigmoid to ``input``.
        softmax: apply a softmax over the channel dimension of ``input``.
        other_act: another callable activation applied to ``input``, e.g. ``torch.tanh``.
        reduction: ``"none"`` (shape ``(B, C, 1, ...)``), ``"mean"`` or ``"sum"`` over batch and classes.
        smooth_nr: small constant added to the numerator.
        smooth_dr: small constant added to the denominator.
        batch: sum the statistics over the batch before dividing.
        weight: class weights applied to the per-class losses: a number or one value per class (without
            class 0 when ``include_background=False``), no less than 0.
        variant: ``"cohen"`` (default, Cohen's kappa) or ``"zhang2020"`` (see above).

    Raises:
        TypeError: when ``other_act`` is not None nor callable.
        ValueError: when ``variant`` is unknown, more than one of ``sigmoid``, ``softmax``, ``other_act`` is
            set, ``reduction`` is unknown, a smoothing term is negative, or ``weight`` is invalid.
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
        variant: str = "cohen",
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
        check_option("variant", variant, _VARIANTS)
        self.variant = variant

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
        n = 1
        for axis in reduce_axis:
            n *= input.shape[axis]
        intersection = torch.sum(input * target, dim=reduce_axis)
        sum_p = torch.sum(input, dim=reduce_axis)
        sum_g = torch.sum(target, dim=reduce_axis)
        chance = sum_p * sum_g / n
        if self.variant == "cohen":
            numerator = 2.0 * (intersection - chance)
            denominator = sum_p + sum_g - 2.0 * chance
        else:
            numerator = 2.0 * intersection - chance
            denominator = sum_p + sum_g - 2.0 * intersection / n
        f = 1.0 - (numerator + self.smooth_nr) / (denominator + self.smooth_dr)
        return self.reduce(f, spatial_ndim)
