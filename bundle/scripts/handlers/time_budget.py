"""Fit the number of epochs, and the learning-rate schedule with it, to a wall-clock budget (nnU-Net-style).

A run cut off by a timer stops with its learning rate still high; a run given a fixed number of epochs wastes or
overruns its budget on a machine faster or slower than expected. :class:`FitEpochsToBudget` times the epochs and,
after each one, sets the trainer's ``max_epochs`` to the number of epochs that end within the budget, and the
schedule's length to that number (a :class:`~scripts.schedules.EpochSchedule`: the end of the poly decay, the step
at the same fraction of the run), so that the schedule runs to its end when the budget does.
"""

from __future__ import annotations

import math
import time

import ignite.distributed as idist
from ignite.engine import Engine, Events
from scripts.schedules import EpochSchedule

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

    The schedule follows the new length, ``set_total_epochs(max_epochs, keep_past=True)``: the poly decay ends with
    the run, continuing smoothly from the current rate; a step not yet passed moves to its fraction of the run, one
    passed stays. A scheduler that is not an :class:`~scripts.schedules.EpochSchedule` is left alone (logged). With
    several processes (multi-GPU), every rank takes the smallest plan.

    The clock survives a resume: ``state_dict`` holds the training seconds used up to the moment it is saved and the
    last epoch estimate (the bundle's resumable checkpoint saves it after every epoch, ``train.json``'s
    ``resumable``, with the schedule fitted so far), and a run resumed from that checkpoint spends only what is left
    of the budget.
    Time after the last checkpoint of a killed process is not counted (at most one epoch). A finished run resumed
    with a larger budget trains on when one more epoch fits. A budgeted run is still not bit-exact on resume, since
    its plan depends on measured times.

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
        self.clock = time.monotonic  # seconds; replaceable in tests
        self.used_before_s = 0.0  # training seconds of earlier processes (load_state_dict)
        self.epoch_s: float | None = None  # the latest estimate of one epoch's duration
        self.start: float | None = None
        self.first_epoch_end: float | None = None
        self.first_epoch: int | None = None

    def attach(self, engine: Engine) -> None:
        if self.budget_s is not None:
            if self.lr_scheduler is not None and not isinstance(self.lr_scheduler, EpochSchedule):
                engine.logger.warning(
                    f"time budget: {type(self.lr_scheduler).__name__} does not know its length (not "
                    "a scripts.schedules.EpochSchedule): the epochs are fitted, its schedule is not."
                )
            engine.add_event_handler(Events.STARTED, self._started)
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _started(self, engine: Engine) -> None:
        self.start, self.first_epoch_end, self.first_epoch = self.clock(), None, None
        done = engine.state.epoch
        if (
            done
            and done >= (engine.state.max_epochs or 0)
            and self.epoch_s is not None
            and self.used_before_s + self.epoch_s <= self.budget_s
        ):
            engine.state.max_epochs = done + 1  # a finished run, resumed with a larger budget: refitted after it

    def __call__(self, engine: Engine) -> None:
        now = self.clock()
        epoch = engine.state.epoch
        if self.first_epoch_end is None:  # the first epoch of this process (a resumed run starts later)
            self.first_epoch_end, self.first_epoch = now, epoch
            epoch_s = now - self.start
        else:
            epoch_s = (now - self.first_epoch_end) / (epoch - self.first_epoch)
        used_s = self.used_before_s + now - self.start
        self.epoch_s = epoch_s
        planned = fit_epochs(self.budget_s, used_s, epoch, max(epoch_s, 1e-6))
        if idist.get_world_size() > 1:  # every rank stops at the same epoch: the slowest rank's plan
            planned = int(idist.all_reduce(float(planned), op="MIN"))
        engine.state.max_epochs = planned
        if isinstance(self.lr_scheduler, EpochSchedule):  # stepped for this epoch already (attached after it)
            self.lr_scheduler.set_total_epochs(planned, keep_past=True)
        engine.logger.info(
            f"time budget: {used_s:.0f} of {self.budget_s:.0f} s used after epoch {epoch}, "
            f"{epoch_s:.1f} s per epoch: {planned} epochs planned"
        )

    def used_s(self) -> float:
        """Training seconds used so far: earlier processes' (from the checkpoint) plus this one's."""
        return self.used_before_s + (self.clock() - self.start if self.start is not None else 0.0)

    def state_dict(self) -> dict:
        """What a checkpoint keeps: the training seconds used up to now (a disabled handler keeps what it loaded)
        and the latest epoch estimate (``None`` when unknown)."""
        return {"used_s": self.used_s(), "epoch_s": self.epoch_s}

    def load_state_dict(self, state: dict) -> None:
        """Continue the clock of the run that saved ``state`` (the step's ``fractions`` that checkpoints of v0.6.10 to
        v0.7.1 also hold are the schedule's own now, and ignored).

        Raises:
            ValueError: when ``state`` has no non-negative ``used_s``, or a bad ``epoch_s``.
        """
        state = state if isinstance(state, dict) else {}
        used, epoch_s = state.get("used_s"), state.get("epoch_s")
        if (
            not isinstance(used, (int, float))
            or not used >= 0
            or not (epoch_s is None or isinstance(epoch_s, (int, float)) and epoch_s > 0)
        ):
            raise ValueError(
                "a time-budget state needs a non-negative 'used_s' and a positive 'epoch_s' or None, " f"got {state!r}."
            )
        self.used_before_s = float(used)
        self.epoch_s = None if epoch_s is None else float(epoch_s)
