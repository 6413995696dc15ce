"""Stop training when the loss becomes NaN or infinite, with a message that says what to do."""

from __future__ import annotations

import logging
import math

import torch
from ignite.engine import Engine, Events

__all__ = ["StopOnNonFiniteLoss"]

logger = logging.getLogger(__name__)


class StopOnNonFiniteLoss:
    """Ends training at the first non-finite loss and raises ``FloatingPointError`` explaining the likely causes.

    Checkpoints already written (best model, last resumable epoch) are left untouched; nothing is saved from the
    diverged state. Ignite's ``TerminateOnNan`` only logs a warning and lets the run exit as if it had succeeded;
    a diverged run should fail loudly.

    Args:
        loss_key: key of the loss in ``engine.state.output``.
    """

    def __init__(self, loss_key: str = "loss") -> None:
        self.loss_key = loss_key

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        out = engine.state.output
        loss = out.get(self.loss_key) if isinstance(out, dict) else out
        if loss is None:
            return
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
