"""Moves the previous run to the archive only once the new run has started successfully (``--overwrite True``)."""

from __future__ import annotations

from typing import Any

from ignite.engine import Engine, Events

__all__ = ["ArchivePreviousRun"]


class ArchivePreviousRun:
    """After the trainer's first completed iteration, commit the pre-flight's pending archive (the old ``models/`` and
    ``logs/``, listed before the run started). A run that fails or is killed before that leaves the old run in place.

    Args:
        preflight: the workflow's :class:`scripts.workflows.TrainingPreflight` (its ``pending_archive``: ``None`` when
            there is nothing to move, e.g. a new folder, ``--resume True``, or a rank other than 0).
    """

    def __init__(self, preflight: Any) -> None:
        self.preflight = preflight

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=1), self)

    def __call__(self, engine: Engine) -> None:
        pending = getattr(self.preflight, "pending_archive", None)
        if pending is not None:
            pending.commit()
