"""A user error ends an engine run without tracebacks in the log: its message is printed once, last."""

from __future__ import annotations

import logging

from ignite.engine import Engine, Events
from scripts.errors import user_error_in

__all__ = ["QuietUserErrors"]

logger = logging.getLogger(__name__)


class QuietUserErrors:
    """At ``EXCEPTION_RAISED``: a :class:`scripts.errors.UserError` is re-raised without logging its traceback (the
    bundle's exception hook prints its message last); any other exception is logged with its traceback, as MONAI's
    ``StatsHandler`` does, then re-raised. List it before ``StatsHandler``: Ignite stops at the first
    ``EXCEPTION_RAISED`` handler that raises, so ``StatsHandler``'s traceback is not logged a second time."""

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EXCEPTION_RAISED, self)

    def __call__(self, engine: Engine, e: Exception) -> None:
        if user_error_in(e) is None:
            logger.exception(f"Exception: {e}")
        raise e
