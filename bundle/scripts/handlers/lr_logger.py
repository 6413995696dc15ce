"""The optimiser's learning rate in TensorBoard, once per epoch."""

from __future__ import annotations

import os

import torch
from ignite.engine import Engine, Events
from ignite.handlers.tensorboard_logger import TensorboardLogger

__all__ = ["LearningRateLogger"]


class LearningRateLogger:
    """Writes each parameter group's learning rate (``lr/group_<i>``) at the start of every epoch to an event file in
    ``log_dir``, and closes it when the run completes. The event file is created on ``attach``: a handler left out of
    the list (another rank than 0) writes nothing.

    Args:
        log_dir: TensorBoard folder.
        optimizer: the trainer's optimiser.
    """

    def __init__(self, log_dir: str | os.PathLike, optimizer: torch.optim.Optimizer) -> None:
        self.log_dir = str(log_dir)
        self.optimizer = optimizer
        self.logger: TensorboardLogger | None = None

    def attach(self, engine: Engine) -> None:
        self.logger = TensorboardLogger(log_dir=self.log_dir)
        self.logger.attach_opt_params_handler(engine, event_name=Events.EPOCH_STARTED, optimizer=self.optimizer)
        engine.add_event_handler(Events.COMPLETED, self.close)

    def close(self, engine: Engine | None = None) -> None:
        if self.logger is not None:
            self.logger.close()
