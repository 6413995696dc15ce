"""Stop training when the loss becomes NaN or infinite, with a message that says what to do."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
from ignite.engine import Engine, Events
from monai.handlers import from_engine

__all__ = ["StopOnNonFiniteLoss"]

logger = logging.getLogger(__name__)


class StopOnNonFiniteLoss:
    """Ends training at the first non-finite loss and raises ``FloatingPointError`` explaining the likely causes.

    Checkpoints already written (best model, last resumable epoch) are left untouched; nothing is saved from the
    diverged state. Ignite's ``TerminateOnNan`` only logs a warning and lets the run exit as if it had succeeded;
    a diverged run should fail loudly.

    Args:
        output_transform: picks the loss out of ``engine.state.output`` (MONAI trainers decollate their output into a
            list of per-sample dicts, hence the default ``from_engine(["loss"], first=True)``).
    """

    def __init__(self, output_transform: Callable | None = None) -> None:
        self.output_transform = output_transform or from_engine(["loss"], first=True)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        loss = self.output_transform(engine.state.output)
        if isinstance(loss, (list, tuple)):
            loss = loss[0]
        value = float(loss.detach().float().mean()) if isinstance(loss, torch.Tensor) else float(loss)
        if math.isfinite(value):
            return
        engine.terminate()
        raise FloatingPointError(
            f"The training loss became {value} at epoch {engine.state.epoch}, iteration {engine.state.iteration}. "
            "Training was stopped; checkpoints written before this point are kept. Likely causes: a learning rate too "
            "high for this batch size (lower `learning_rate`), images that are not normalised, or labels outside the "
            "class map (run the integrity check). Resume from the last good checkpoint with `resume=True` after fixing it."
        )
