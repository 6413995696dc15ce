"""Shared machinery of the soft, per-class region losses (:class:`~scripts.losses.IoULoss`,
:class:`~scripts.losses.KappaLoss`): activation, one-hot conversion, background removal, class weights and
reduction, with the argument names and behaviour of :class:`monai.losses.DiceLoss`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
from monai.networks import one_hot
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float32 when it is a lower-precision float (float16/bfloat16 logits under autocast), else unchanged.

    Losses compute in at least float32: class weights above 65504 overflow float16, and sums over an image's pixels
    lose precision in it.
    """
    return x.float() if x.is_floating_point() and x.element_size() < 4 else x


def as_class_weight(
    weight: Sequence[float] | float | int | torch.Tensor | None, name: str = "weight"
) -> torch.Tensor | None:
    """Validate class weights given as a number, a list/tuple or a tensor and return them as a float tensor.

    Args:
        weight: ``None``, one number, or a 1-D sequence/tensor of numbers.
        name: the argument's name, used in error messages.

    Returns:
        ``None`` or a 0-D/1-D float32 tensor.

    Raises:
        TypeError: when ``weight`` cannot be converted to a tensor of numbers.
        ValueError: when ``weight`` has more than one dimension, is empty, or holds a negative or non-finite value.
    """
    if weight is None:
        return None
    try:
        w = torch.as_tensor(weight, dtype=torch.float32).detach().clone()
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"`{name}` must be None, a number or a sequence of numbers, got {weight!r}.") from e
    if w.ndim > 1:
        raise ValueError(
            f"`{name}` must be a number or a 1-D sequence (one value per class), got shape {tuple(w.shape)}."
        )
    if w.numel() == 0:
        raise ValueError(f"`{name}` must not be empty; pass None for no class weighting.")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError(f"`{name}` values must be finite and no less than 0, got {w.tolist()}.")
    return w


def per_class_weight(weight: Sequence[float] | torch.Tensor | None) -> torch.Tensor | None:
    """:func:`as_class_weight` for losses that need one value per class (a 1-D list), not one number.

    Raises:
        TypeError, ValueError: as :func:`as_class_weight`; ValueError also for a single number.
    """
    cw = as_class_weight(weight)
    if cw is not None and cw.ndim != 1:
        raise ValueError(f"`weight` must hold one value per class (a list of C floats), got {weight!r}.")
    return cw


def check_weight_count(class_weight: torch.Tensor | None, num_classes: int) -> None:
    """Raise when a 1-D ``class_weight`` does not hold one value per class (channel) of the input.

    Raises:
        ValueError: when ``len(class_weight) != num_classes``.
    """
    if class_weight is not None and class_weight.shape[0] != num_classes:
        raise ValueError(
            f"`weight` has {class_weight.shape[0]} values but the input has {num_classes} classes "
            "(channels); give one weight per class."
        )


class SoftRegionLoss(_Loss):
    """Base class: prepares ``(input, target)`` exactly like :class:`monai.losses.DiceLoss` and reduces the
    per-(batch, class) loss values. Subclasses implement :meth:`region_loss`.

    Args:
        include_background: if False, channel index 0 is excluded from the calculation.
        to_onehot_y: convert ``target`` (class indices, ``B1H[WD]``) to one-hot with ``input.shape[1]`` classes.
        sigmoid: apply a sigmoid to ``input``.
        softmax: apply a softmax over the channel dimension of ``input``.
        other_act: another callable activation applied to ``input``, e.g. ``torch.tanh``.
        reduction: ``"none"`` (shape ``(B, C, 1, ...)``, or ``(1, C, 1, ...)`` when ``batch``), ``"mean"``
            or ``"sum"`` over batch and classes.
        smooth_nr: small constant added to the numerator.
        smooth_dr: small constant added to the denominator (avoids 0/0 when a class is absent from both).
        batch: sum the statistics over the batch before dividing (one value per class for the whole batch).
        weight: class weights applied to the per-class loss values: a number (all classes) or one value per
            class (without class 0 when ``include_background=False``), no less than 0.

    Raises:
        TypeError: when ``other_act`` is not None nor callable.
        ValueError: when more than one of ``sigmoid``, ``softmax``, ``other_act`` is set, ``reduction`` is
            unknown, a smoothing term is negative, or ``weight`` is invalid.
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
        super().__init__(reduction=LossReduction(reduction).value)
        if other_act is not None and not callable(other_act):
            raise TypeError(f"other_act must be None or callable but is {type(other_act).__name__}.")
        if int(sigmoid) + int(softmax) + int(other_act is not None) > 1:
            raise ValueError("Incompatible values: more than 1 of [sigmoid=True, softmax=True, other_act is not None].")
        for name, value in (("smooth_nr", smooth_nr), ("smooth_dr", smooth_dr)):
            if not math.isfinite(float(value)) or float(value) < 0:
                raise ValueError(f"`{name}` must be a finite number no less than 0, got {value!r}.")
        self.include_background = include_background
        self.to_onehot_y = to_onehot_y
        self.sigmoid = sigmoid
        self.softmax = softmax
        self.other_act = other_act
        self.smooth_nr = float(smooth_nr)
        self.smooth_dr = float(smooth_dr)
        self.batch = batch
        self.register_buffer("class_weight", as_class_weight(weight))
        self.class_weight: torch.Tensor | None

    def prepare(self, input: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Apply the activation, one-hot conversion and background removal; return ``(input, target, axes)``
        where ``axes`` are the dimensions to sum over (spatial, plus batch when ``batch=True``). Lower-precision
        ``input`` (float16/bfloat16 logits under autocast) is cast to float32 first (:func:`at_least_float32`).

        Raises:
            ValueError: when ``input`` and ``target`` (after one-hot conversion) have different shapes.
        """
        input = at_least_float32(input)
        if self.sigmoid:
            input = torch.sigmoid(input)
        n_pred_ch = input.shape[1]
        if self.softmax:
            if n_pred_ch == 1:
                warnings.warn("single channel prediction, `softmax=True` ignored.", stacklevel=2)
            else:
                input = torch.softmax(input, 1)
        if self.other_act is not None:
            input = self.other_act(input)
        if self.to_onehot_y:
            if n_pred_ch == 1:
                warnings.warn("single channel prediction, `to_onehot_y=True` ignored.", stacklevel=2)
            else:
                target = one_hot(target, num_classes=n_pred_ch)
        if not self.include_background:
            if n_pred_ch == 1:
                warnings.warn("single channel prediction, `include_background=False` ignored.", stacklevel=2)
            else:
                target = target[:, 1:]
                input = input[:, 1:]
        if target.shape != input.shape:
            raise ValueError(
                f"ground truth has different shape ({list(target.shape)}) from input ({list(input.shape)}); "
                "pass a one-hot target with as many channels as the input, or class indices with to_onehot_y=True."
            )
        reduce_axis: list[int] = torch.arange(2, len(input.shape)).tolist()
        if self.batch:
            reduce_axis = [0] + reduce_axis
        return input, target.to(input.dtype), reduce_axis

    def reduce(self, f: torch.Tensor, spatial_ndim: int) -> torch.Tensor:
        """Apply the class weights to ``f`` (shape ``(B, C)`` or ``(C,)`` with ``batch``) and reduce it.

        Raises:
            ValueError: when the number of class weights differs from the number of classes.
        """
        num_classes = f.shape[-1]
        cw = self.class_weight
        if cw is not None:
            if cw.ndim == 1 and cw.shape[0] != num_classes:
                raise ValueError(
                    f"`weight` has {cw.shape[0]} values but the loss sees {num_classes} classes. "
                    "Give one weight per class; with include_background=False leave out the weight of class 0."
                )
            f = f * cw.to(device=f.device, dtype=f.dtype)
        if self.reduction == LossReduction.MEAN.value:
            return torch.mean(f)
        if self.reduction == LossReduction.SUM.value:
            return torch.sum(f)
        if self.reduction == LossReduction.NONE.value:
            if f.ndim == 1:  # batch=True: one value per class for the whole batch
                f = f.unsqueeze(0)
            return f.view(list(f.shape) + [1] * spatial_ndim)
        raise ValueError(f'Unsupported reduction: {self.reduction}, available options are ["mean", "sum", "none"].')
