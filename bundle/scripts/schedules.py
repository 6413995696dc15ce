"""Learning-rate schedules stepped once per epoch that know their length, so that the length can change mid-run.

- :class:`StepSchedule`: PyTorch's ``MultiStepLR`` whose milestones are also fractions of ``total_epochs``.
- :class:`PolySchedule`: PyTorch's ``PolynomialLR`` whose decay ends after ``total_epochs``.

They step exactly as PyTorch's schedulers (the same learning rates, bit for bit) and load their checkpoints. Their
common base, :class:`EpochSchedule`, adds :meth:`~EpochSchedule.set_total_epochs`, which the handlers that change the
run's length call: ``ResumeCheckpointLoader`` (``--resume True --epochs M``) and ``FitEpochsToBudget``
(``--time_budget_s``).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, MultiStepLR, PolynomialLR

__all__ = ["EpochSchedule", "PolySchedule", "StepSchedule"]


def _check_length(total_epochs: object) -> None:
    if isinstance(total_epochs, bool) or not isinstance(total_epochs, int) or total_epochs < 1:
        raise ValueError(f"total_epochs must be a whole number of epochs >= 1, got {total_epochs!r}.")


class EpochSchedule(LRScheduler):
    """An ``LRScheduler`` stepped once per epoch over a run of ``total_epochs`` epochs, whose length can change."""

    total_epochs: int | None  # None: unknown (a checkpoint of PyTorch's scheduler that does not record it)

    def set_total_epochs(self, total_epochs: int, *, keep_past: bool = False) -> None:
        """Make this the schedule of a ``total_epochs``-epoch run, at the current epoch (``last_epoch``).

        Args:
            total_epochs: the run's new length.
            keep_past: ``False``: the schedule the run would have had with ``total_epochs`` from the start, the
                learning rate its value at the current epoch (closed form). ``True``: the epochs done keep their
                rates and the rest is fitted to end with the run, from the current rate.

        Raises:
            ValueError: when ``total_epochs`` is not a whole number >= 1.
        """
        _check_length(total_epochs)
        self._fit(total_epochs, keep_past)
        if not keep_past:
            lrs = self.closed_form_lr()
            for group, lr in zip(self.optimizer.param_groups, lrs):
                group["lr"] = lr
            self._last_lr = list(lrs)

    def closed_form_lr(self) -> list[float]:
        """The learning rates at ``last_epoch`` computed from ``base_lrs`` (not from the current rates)."""
        raise NotImplementedError

    def plan(self) -> str:
        """The schedule in words (for log lines)."""
        raise NotImplementedError

    def _fit(self, total_epochs: int, keep_past: bool) -> None:
        raise NotImplementedError


class StepSchedule(EpochSchedule, MultiStepLR):
    """``MultiStepLR`` over ``total_epochs`` epochs: the rate is multiplied by ``gamma`` after each milestone epoch.

    At milestone ``m`` epochs ``m + 1, ...`` train at the lower rate. When the length changes, each milestone moves
    to its fraction of the run (``milestone / total_epochs`` as constructed): ``round(fraction * total_epochs)``, at
    least 1 (with ``keep_past``: a milestone passed stays, a later one comes after the current epoch at the earliest).
    The fractions are configuration, not state: the checkpoint holds PyTorch's state and ``total_epochs``.

    Args:
        optimizer: the wrapped optimiser.
        total_epochs: the run's length, of which the milestones are fractions.
        milestones: the epochs after which the rate drops (a repeated one drops it ``gamma`` times as often).
        gamma: the factor.
        last_epoch: the index of the last epoch, as PyTorch's (-1: a new run).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_epochs: int,
        milestones: Iterable[int],
        gamma: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        _check_length(total_epochs)
        milestones = list(milestones)
        self.total_epochs = total_epochs
        self.fractions = sorted(m / total_epochs for m in milestones)
        super().__init__(optimizer, milestones, gamma, last_epoch)

    def state_dict(self) -> dict:
        state = super().state_dict()
        del state["fractions"]
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a checkpoint's state; one of PyTorch's ``MultiStepLR`` (v0.7.1 and earlier) records no length: it is
        the configured one when its milestones are the configured ones, else unknown (``None``)."""
        configured, milestones = self.total_epochs, self.milestones
        super().load_state_dict(state_dict)
        if "total_epochs" not in state_dict:
            self.total_epochs = configured if self.milestones == milestones else None

    def closed_form_lr(self) -> list[float]:
        drops = bisect.bisect_right(sorted(self.milestones.elements()), self.last_epoch)
        return [base * self.gamma**drops for base in self.base_lrs]

    def plan(self) -> str:
        steps = sorted(self.milestones.elements())
        return f"{self.total_epochs} epochs, the rate x {self.gamma:g} after epochs {steps}"

    def _fit(self, total_epochs: int, keep_past: bool) -> None:
        epoch = self.last_epoch
        current = sorted(self.milestones.elements())
        self.milestones = Counter(
            m if keep_past and m <= epoch else max(epoch + 1 if keep_past else 1, round(f * total_epochs))
            for m, f in zip(current, self.fractions)
        )
        self.total_epochs = total_epochs


class PolySchedule(EpochSchedule, PolynomialLR):
    """``PolynomialLR`` over ``total_epochs`` epochs: ``lr * (1 - epoch / total_epochs) ** power``, 0 from then on.

    ``total_epochs`` is PyTorch's ``total_iters`` (the checkpoint holds PyTorch's state). With ``keep_past`` a new
    length continues PyTorch's recursive form from the current rate, which then reaches 0 with the run.

    Args:
        optimizer: the wrapped optimiser.
        total_epochs: the epoch at which the decay ends.
        power: the power of the polynomial.
        last_epoch: the index of the last epoch, as PyTorch's (-1: a new run).
    """

    def __init__(self, optimizer: Optimizer, total_epochs: int, power: float = 1.0, last_epoch: int = -1) -> None:
        _check_length(total_epochs)
        super().__init__(optimizer, total_iters=total_epochs, power=power, last_epoch=last_epoch)

    @property
    def total_epochs(self) -> int:
        return self.total_iters

    def closed_form_lr(self) -> list[float]:
        factor = (1.0 - min(self.total_iters, self.last_epoch) / self.total_iters) ** self.power
        return [base * factor for base in self.base_lrs]

    def plan(self) -> str:
        return f"{self.total_iters} epochs, the polynomial decay (power {self.power:g}) ending with them"

    def _fit(self, total_epochs: int, keep_past: bool) -> None:
        self.total_iters = total_epochs
