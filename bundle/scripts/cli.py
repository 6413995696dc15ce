"""What every bundle workflow does first: its ``initialize``'s first step, ``"$scripts.start_run()"``."""

from __future__ import annotations

from .errors import install_excepthook
from .overrides import check_overrides

__all__ = ["start_run"]


def start_run() -> None:
    """Show user errors as their one-line message (:func:`scripts.errors.install_excepthook`), then refuse
    command-line overrides that name no setting (:func:`scripts.overrides.check_overrides`), before anything runs."""
    install_excepthook()
    check_overrides()
