"""Combining losses: a weighted sum on one output, and one loss per output of a multi-output network (X-Net)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.modules.loss import _Loss

__all__ = ["SumLoss", "MultiOutputLoss"]


def _check_weights(weights: Sequence[float] | None, n: int, what: str) -> list[float]:
    if weights is None:
        return [1.0] * n
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise TypeError(f"`weights` must be None or a list of numbers (one per {what}), got {weights!r}.")
    if len(weights) != n:
        raise ValueError(f"`weights` has {len(weights)} values but there are {n} {what}s; give one weight per {what}.")
    out = []
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ValueError(f"`weights` must be finite numbers no less than 0, got {list(weights)!r}.")
        out.append(float(w))
    return out


def _sum_terms(terms: list[torch.Tensor], inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum of the weighted terms; terms with weight 0 are never computed. All weights 0 gives a zero that is
    still connected to the inputs (so ``backward`` works and gives zero gradients)."""
    if not terms:
        return sum((x.sum() * 0.0 for x in inputs), torch.zeros((), device=inputs[0].device))
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def _check_loss(loss: object, where: str) -> nn.Module:
    if not isinstance(loss, nn.Module):
        raise TypeError(
            f"{where} must be a loss module (a torch.nn.Module such as monai.losses.DiceLoss), "
            f"got {type(loss).__name__}."
        )
    return loss


class SumLoss(_Loss):
    """Weighted sum of losses applied to the same ``(input, target)``: ``Σ_k weights[k] · losses[k](input, target)``.

    For example X-Net's third loss, softmax cross-entropy + IoU on the same output. Members may be any loss
    modules (the bundle's, or MONAI's ``DiceLoss``/``TverskyLoss``/``FocalLoss``/``DiceCELoss``); each must
    accept the same ``target`` layout (e.g. class indices ``B1H[WD]`` with ``to_onehot_y=True`` for the
    region losses). Members are registered as sub-modules, so they follow ``.to(device)``.

    Args:
        losses: one or more loss modules.
        weights: one number no less than 0 per loss; ``None``: all 1. A loss with weight 0 is not computed.

    Raises:
        TypeError: when ``losses`` is not a non-empty sequence of ``torch.nn.Module`` or ``weights`` is not a list.
        ValueError: when ``losses`` is empty, or ``weights`` has the wrong length or a negative/non-finite value.
    """

    def __init__(self, losses: Sequence[nn.Module], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if isinstance(losses, nn.Module) or not isinstance(losses, Sequence):
            raise TypeError(f"`losses` must be a list of loss modules, got {type(losses).__name__}.")
        if len(losses) == 0:
            raise ValueError("`losses` must hold at least one loss module.")
        self.losses = nn.ModuleList([_check_loss(loss, f"losses[{i}]") for i, loss in enumerate(losses)])
        self.weights = _check_weights(weights, len(losses), "loss")

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: the network output given to every member.
            target: the ground truth given to every member.

        Returns:
            the weighted sum of the members' values.
        """
        terms = [w * loss(input, target) for w, loss in zip(self.weights, self.losses) if w > 0]
        return _sum_terms(terms, [input])


class MultiOutputLoss(_Loss):
    """One loss per network output, weighted and summed: ``Σ_i weights[i] · losses[i](outputs[i], target)``.

    X-Net (Fujii et al.) returns three outputs and is trained with ``Loss1 = SCE(out1)``,
    ``Loss2 = IoU(out2)``, ``Loss3 = SCE(out3) + IoU(out3)``, total ``Loss1 + Loss2 + Loss3``; as a config::

        "loss": {"_target_": "scripts.losses.MultiOutputLoss",
                 "losses": ["@sce", "@iou", ["@sce", "@iou"]]}

    Element ``i`` of ``losses`` is a loss module, or a list of loss modules that are summed
    (:class:`SumLoss`) on output ``i``. A network that returns a single tensor is handled when exactly one
    loss is given. ``target`` is either one tensor shared by all outputs, or a list/tuple with one target
    per output (e.g. deep supervision at several resolutions).

    Args:
        losses: one entry per network output: a loss module or a list of loss modules. A single loss module
            is accepted as a one-output list.
        weights: one number no less than 0 per output; ``None``: all 1. An output with weight 0 is not
            given to its loss (no cost, no gradient from it).

    Raises:
        TypeError: when an entry is neither a loss module nor a list of them, or ``weights`` is not a list.
        ValueError: when ``losses`` (or a nested list) is empty, or ``weights`` has the wrong length or a
            negative/non-finite value.
    """

    def __init__(
        self, losses: nn.Module | Sequence[nn.Module | Sequence[nn.Module]], weights: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        if isinstance(losses, nn.Module):
            losses = [losses]
        if not isinstance(losses, Sequence) or isinstance(losses, (str, bytes)):
            raise TypeError(f"`losses` must be a list of loss modules (one per output), got {type(losses).__name__}.")
        if len(losses) == 0:
            raise ValueError("`losses` must hold at least one entry (one per network output).")
        members: list[nn.Module] = []
        for i, entry in enumerate(losses):
            if isinstance(entry, nn.Module):
                members.append(entry)
            elif isinstance(entry, Sequence) and not isinstance(entry, (str, bytes)):
                if len(entry) == 0:
                    raise ValueError(f"losses[{i}] is an empty list; give at least one loss module for output {i}.")
                members.append(SumLoss([_check_loss(m, f"losses[{i}][{j}]") for j, m in enumerate(entry)]))
            else:
                raise TypeError(
                    f"losses[{i}] must be a loss module or a list of loss modules, got {type(entry).__name__}."
                )
        self.losses = nn.ModuleList(members)
        self.weights = _check_weights(weights, len(members), "output")

    def forward(
        self, input: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor | Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """
        Args:
            input: the network's outputs (tuple/list), or one tensor when one loss is configured.
            target: the ground truth shared by all outputs, or a tuple/list with one per output.

        Returns:
            the weighted sum of the per-output losses.

        Raises:
            ValueError: when the number of outputs (or of targets) differs from the number of losses.
        """
        outputs = [input] if isinstance(input, torch.Tensor) else list(input)
        if len(outputs) != len(self.losses):
            raise ValueError(
                f"the network returned {len(outputs)} output(s) but {len(self.losses)} loss(es) are configured; "
                "give one loss (or list of losses) per output."
            )
        targets = [target] * len(outputs) if isinstance(target, torch.Tensor) else list(target)
        if len(targets) != len(outputs):
            raise ValueError(
                f"got {len(targets)} targets for {len(outputs)} outputs; give one target or one per output."
            )
        terms = [w * loss(o, t) for w, loss, o, t in zip(self.weights, self.losses, outputs, targets) if w > 0]
        return _sum_terms(terms, outputs)
