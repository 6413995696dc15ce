"""MONAI's TensorBoard stats handler, its event file created when it is attached (not when the config builds it)."""

from __future__ import annotations

import os
from typing import Any

from ignite.engine import Engine
from monai.handlers import TensorBoardStatsHandler as _MonaiTensorBoardStatsHandler

__all__ = ["TensorBoardStatsHandler"]


class TensorBoardStatsHandler(_MonaiTensorBoardStatsHandler):
    """``monai.handlers.TensorBoardStatsHandler`` (same arguments) that opens its ``SummaryWriter`` in ``attach``.

    A config builds every handler it references, also those it then leaves out of the engine's list (the
    ``rank0_handlers`` of the other ranks in ``multi_gpu_train.json``); MONAI's handler opens an event file when
    built, so each rank would leave an empty one in ``log_dir``. This one writes nothing until it is attached.
    """

    def __init__(self, summary_writer: Any = None, log_dir: str | os.PathLike = "./runs", **kwargs: Any) -> None:
        super().__init__(
            summary_writer=False if summary_writer is None else summary_writer, log_dir=str(log_dir), **kwargs
        )
        if summary_writer is None:
            self._writer, self.internal_writer, self._log_dir = None, True, str(log_dir)

    def attach(self, engine: Engine) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter  # here: only training needs tensorboard

            self._writer = SummaryWriter(log_dir=self._log_dir)
        super().attach(engine)

    def close(self) -> None:
        if self._writer is not None:
            super().close()
