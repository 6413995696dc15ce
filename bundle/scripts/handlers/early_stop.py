"""Early stopping whose state (patience counter, best score) is saved in the resumable checkpoint."""

from __future__ import annotations

from typing import Any

from monai.handlers import EarlyStopHandler as _MonaiEarlyStopHandler

__all__ = ["EarlyStopHandler"]


class EarlyStopHandler(_MonaiEarlyStopHandler):
    """MONAI ``EarlyStopHandler`` with ``state_dict``/``load_state_dict`` (Ignite ``EarlyStopping``'s counter and
    best score), so that a resumed run keeps counting epochs without improvement where the interrupted one was.
    Same arguments as ``monai.handlers.EarlyStopHandler``.
    """

    def state_dict(self) -> dict[str, Any]:
        return dict(self._handler.state_dict()) if self._handler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state and self._handler is not None:
            self._handler.load_state_dict(state)
