"""Fit the number of epochs, and the learning-rate schedule with it, to a wall-clock budget (nnU-Net-style).

A run cut off by a timer stops with its learning rate still high; a run given a fixed number of epochs wastes or
overruns its budget on a machine faster or slower than expected. :class:`FitEpochsToBudget` times the epochs and,
after each one, sets the trainer's ``max_epochs`` to the number of epochs that end within the budget, and rescales
the scheduler to that number (the end of a ``PolynomialLR`` decay, the milestones of a ``MultiStepLR`` at the same
fractions of the run), so that the schedule runs to its end when the budget does.
"""

from __future__ import annotations

import math
import time
from collections import Counter

import ignite.distributed as idist
from ignite.engine import Engine, Events
from torch.optim.lr_scheduler import MultiStepLR, PolynomialLR

__all__ = ["FitEpochsToBudget", "fit_epochs"]


def fit_epochs(budget_s: float, elapsed_s: float, epochs_done: int, epoch_s: float) -> int:
    """Total epochs so that the run ends within ``budget_s``: those done plus the whole epochs that fit in the rest.

    Args:
        budget_s: the budget in seconds.
        elapsed_s: seconds used so far.
        epochs_done: epochs finished so far (>= 1).
        epoch_s: the expected duration of one more epoch (> 0).

    Returns:
        ``epochs_done`` + the whole epochs that fit in ``budget_s - elapsed_s`` (never fewer than ``epochs_done``:
        the run ends now when nothing more fits).

    Raises:
        ValueError: when ``epochs_done < 1`` or ``epoch_s <= 0``.
    """
    if epochs_done < 1 or not epoch_s > 0:
        raise ValueError(f"need epochs_done >= 1 and epoch_s > 0, got {epochs_done} and {epoch_s}.")
    return epochs_done + max(0, math.floor((budget_s - elapsed_s) / epoch_s + 1e-9))


class FitEpochsToBudget:
    """After every epoch, set ``max_epochs`` (and the schedule) to what ends within ``budget_s`` seconds of training.

    The clock starts when the engine starts (after the datasets are cached). An epoch's expected duration is the mean
    of the epochs after the first (the first carries the start-up), or the first while it is the only one; it
    includes the validation and checkpointing that run at the end of each epoch when this handler is attached after
    them. Checked at ``EPOCH_COMPLETED``, so the run ends at the end of the last epoch that fits.

    The schedule follows the new length: ``PolynomialLR.total_iters`` becomes ``max_epochs`` (its decay ends with
    the run; PyTorch's recursive form continues smoothly from the current rate), ``MultiStepLR`` milestones keep
    their fractions of the run (a milestone not yet passed moves; one passed stays). Other schedulers are left
    alone. With several processes (multi-GPU), every rank takes the smallest plan. A resumed run starts a new clock (the budget counts this process's training), so a budgeted run is not
    bit-exact on resume.

    Args:
        budget_s: training seconds; ``None`` disables the handler (``attach`` does nothing).
        lr_scheduler: the scheduler stepped once per epoch, or ``None``.

    Raises:
        ValueError: when ``budget_s`` is given and not a positive number.
    """

    def __init__(self, budget_s: float | None = None, lr_scheduler=None) -> None:
        if budget_s is not None and not (isinstance(budget_s, (int, float)) and budget_s > 0):
            raise ValueError(f"budget_s must be a positive number of seconds or None, got {budget_s!r}.")
        self.budget_s = budget_s
        self.lr_scheduler = lr_scheduler
        self.start: float | None = None
        self.first_epoch_end: float | None = None
        self.first_epoch: int | None = None
        self._fractions: list[float] | None = None

    def attach(self, engine: Engine) -> None:
        if self.budget_s is not None:
            engine.add_event_handler(Events.STARTED, self._started)
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _started(self, engine: Engine) -> None:
        self.start, self.first_epoch_end, self.first_epoch = time.monotonic(), None, None
        if isinstance(self.lr_scheduler, MultiStepLR):
            total = max(1, engine.state.max_epochs or 1)
            self._fractions = sorted(m / total for m in self.lr_scheduler.milestones.elements())

    def __call__(self, engine: Engine) -> None:
        now = time.monotonic()
        epoch = engine.state.epoch
        if self.first_epoch_end is None:  # the first epoch of this process (a resumed run starts later)
            self.first_epoch_end, self.first_epoch = now, epoch
            epoch_s = now - self.start
        else:
            epoch_s = (now - self.first_epoch_end) / (epoch - self.first_epoch)
        planned = fit_epochs(self.budget_s, now - self.start, epoch, max(epoch_s, 1e-6))
        if idist.get_world_size() > 1:  # every rank stops at the same epoch: the slowest rank's plan
            planned = int(idist.all_reduce(float(planned), op="MIN"))
        engine.state.max_epochs = planned
        self._fit_schedule(epoch, planned)
        engine.logger.info(f"time budget: {now - self.start:.0f} of {self.budget_s:.0f} s used after epoch {epoch}, "
                           f"{epoch_s:.1f} s per epoch: {planned} epochs planned")

    def _fit_schedule(self, epoch: int, planned: int) -> None:
        s = self.lr_scheduler
        if isinstance(s, PolynomialLR):
            s.total_iters = planned
        elif isinstance(s, MultiStepLR) and self._fractions is not None:
            # the scheduler has been stepped for this epoch: a milestone <= epoch has acted, a later one moves (to
            # epoch + 1 at the earliest, so that it still acts)
            current = sorted(s.milestones.elements())
            s.milestones = Counter(m if m <= epoch else max(epoch + 1, round(f * planned))
                                   for m, f in zip(current, self._fractions))
