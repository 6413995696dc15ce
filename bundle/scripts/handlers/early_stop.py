"""Early stopping whose state (patience counter, best score) is saved in the resumable checkpoint."""

from __future__ import annotations

from typing import Any

from ignite.engine import Engine
from monai.handlers import EarlyStopHandler as _MonaiEarlyStopHandler

__all__ = ["EarlyStopHandler"]


class EarlyStopHandler(_MonaiEarlyStopHandler):
    """MONAI ``EarlyStopHandler`` with ``state_dict``/``load_state_dict`` (Ignite ``EarlyStopping``'s counter and
    best score), so that a resumed run keeps counting epochs without improvement where the interrupted one was.

    Same arguments as ``monai.handlers.EarlyStopHandler``, plus:

    Args:
        validator: when given, the handler goes in the *trainer's* handler list: attached to the trainer, it stops
            that trainer and scores ``validator`` (after each of its epochs). This wires it without MONAI's
            ``trainer=`` argument, which a config cannot use from the validator's list (the trainer holds the
            validator: a reference cycle). Without it, MONAI's behaviour (``trainer=`` or ``set_trainer``).
    """

    def __init__(self, *args: Any, validator: Engine | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.validator = validator

    def attach(self, engine: Engine) -> None:
        if self.validator is None:
            super().attach(engine)
        else:
            self.set_trainer(engine)
            super().attach(self.validator)

    def state_dict(self) -> dict[str, Any]:
        return dict(self._handler.state_dict()) if self._handler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state and self._handler is not None:
            self._handler.load_state_dict(state)
