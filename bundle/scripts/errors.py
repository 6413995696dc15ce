"""Errors that are the user's to fix (data, settings, run folder, a diverged run) and how they are shown.

A :class:`UserError` raised anywhere in a workflow -- even wrapped by MONAI's ``ConfigExpression`` ("Failed to
evaluate ...") or by Ignite -- ends ``python -m monai.bundle run`` with its own message as the last thing printed and
exit status 1, without the traceback. Set the environment variable ``CELLSEG_DEBUG=1`` to get the full traceback.
The hook is installed by the bundle's entry points only -- the first ``initialize`` step of every config
(``"$scripts.errors.install_excepthook()"``) and the ``python -m scripts...`` command lines -- not by importing
``scripts``; it leaves other exceptions alone.
"""

from __future__ import annotations

import os
import sys

__all__ = [
    "ConfigError",
    "DataLoadingError",
    "DivergenceError",
    "ExportError",
    "RunFolderError",
    "UserError",
    "install_excepthook",
    "user_error_in",
]

#: Environment variable that restores full tracebacks for user errors.
DEBUG_ENV = "CELLSEG_DEBUG"


class UserError(Exception):
    """A problem the user fixes (data, settings, run folder); shown as one message, without a traceback."""


class ConfigError(UserError, ValueError):
    """A setting (config value or command-line override) of the wrong type or range."""


class RunFolderError(UserError, RuntimeError):
    """The run folder (``bundle_root``) does not fit the request (a run already there, no checkpoint to resume)."""


class DataLoadingError(UserError, RuntimeError):
    """An item could not be loaded, transformed or batched during a run; the message names the file."""


class ExportError(UserError, ValueError):
    """An export (``python -m scripts.export``) that cannot be made from this model, image or output folder."""


class DivergenceError(UserError, FloatingPointError):
    """Training diverged (non-finite or exploding loss, non-finite weights or gradients); nothing was saved from it."""


def user_error_in(exc: BaseException | None) -> UserError | None:
    """The first :class:`UserError` in ``exc``'s chain of causes/contexts (``raise ... from``), or ``None``."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _hook(exc_type, exc, tb, previous=sys.excepthook):
    error = user_error_in(exc)
    if error is None or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes"):
        previous(exc_type, exc, tb)
        return
    sys.stdout.flush()
    print(f"\n(traceback hidden; set {DEBUG_ENV}=1 to see it)\nERROR: {error}", file=sys.stderr, flush=True)


def install_excepthook() -> None:
    """Show uncaught :class:`UserError` s as their message alone (idempotent)."""
    if getattr(sys.excepthook, "__name__", "") != "_hook":
        sys.excepthook = _hook
