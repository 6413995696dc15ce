"""A wall-clock budget for training, as a handler of the trainer's list (none when the budget is ``None``)."""

from __future__ import annotations

import time

from ignite.engine import Engine, Events
from ignite.handlers import TimeLimit as _IgniteTimeLimit

__all__ = ["TimeLimit"]


class TimeLimit(_IgniteTimeLimit):
    """Ignite ``TimeLimit`` checked at the end of each epoch, its clock started when the engine starts (not when the
    config builds it, before the datasets are cached).

    Args:
        limit_sec: seconds of training after which the run stops at the end of the current epoch; ``None``: no limit
            (``attach`` does nothing). A fraction is rounded up to whole seconds (Ignite counts in ``int``).
    """

    def __init__(self, limit_sec: float | None = None) -> None:
        super().__init__(1 if limit_sec is None else max(1, int(-(-limit_sec // 1))))
        self.enabled = limit_sec is not None

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            engine.add_event_handler(Events.STARTED, self._start)
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _start(self, engine: Engine) -> None:
        self.start_time = time.time()
