"""An epoch that ran no iteration is an error, not a silently untrained model."""

from __future__ import annotations

from ignite.engine import Engine, Events
from scripts.errors import DataLoadingError

__all__ = ["FailOnEmptyEpoch"]


class FailOnEmptyEpoch:
    """Raises :class:`~scripts.errors.DataLoadingError` when an epoch of the engine completes without an iteration
    (its data loader gave no batch: an empty datalist, or a loader that stopped early)."""

    def __init__(self) -> None:
        self._start = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _started(self, engine: Engine) -> None:
        self._start = engine.state.iteration

    def __call__(self, engine: Engine) -> None:
        if engine.state.iteration == self._start:
            raise DataLoadingError(
                f"{type(engine).__name__} epoch {engine.state.epoch} ran no iteration: its data loader gave no batch. "
                "Check that the datalist's lists are not empty and look above for the item that failed to load."
            )
