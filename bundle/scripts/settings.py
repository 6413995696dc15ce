"""Checks of the training settings (config values and command-line overrides) before any work is done.

``train.json``'s pre-flight takes its settings through a ``check_training_settings`` component (``"epochs": "@epochs",
...``), built before anything else of the run: every value of the wrong type or range gets one line naming the key
and what it accepts, all in one :class:`~scripts.errors.ConfigError`, instead of a raw ``TypeError`` from deep inside
MONAI or PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable
from numbers import Real
from typing import Any

from monai.utils import look_up_option

from .checks import is_int, is_positive_number
from .errors import ConfigError

__all__ = ["RULES", "check_training_settings"]


def _int(minimum: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: is_int(v, minimum)), f"an integer >= {minimum}"


def _int_list(length: int | None, minimum: int) -> tuple[Callable[[Any], bool], str]:
    def ok(v: Any) -> bool:
        return (
            isinstance(v, (list, tuple))
            and (len(v) == length if length else len(v) >= 2)
            and all(is_int(x, minimum) for x in v)
        )

    what = f"a list of {length} integers >= {minimum}" if length else f"a list of at least 2 integers >= {minimum}"
    return ok, what


#: key -> (test, what it accepts, example)
RULES: dict[str, tuple[Callable[[Any], bool], str, str]] = {
    "epochs": (*_int(1), "--epochs 30"),
    "batch_size": (*_int(1), "--batch_size 8"),
    "val_batch_size": (*_int(1), "--val_batch_size 4"),
    "val_interval": (*_int(1), "--val_interval 1"),
    "early_stop_patience": (*_int(1), "--early_stop_patience 20"),
    "cache_workers": (*_int(0), "--cache_workers 2"),
    "seed": (*_int(0), "--seed 0"),
    "num_classes": (*_int(2), "--num_classes 5"),
    "in_channels": (*_int(1), "--in_channels 1"),
    "learning_rate": (is_positive_number, "a number > 0", "--learning_rate 0.001"),
    "intensity_max": (is_positive_number, "a number > 0", "--intensity_max 255"),
    "time_limit_s": (
        lambda v: v is None or is_positive_number(v),
        "a number of seconds > 0, or None",
        "--time_limit_s 3600",
    ),
    "dropout": (
        lambda v: isinstance(v, Real) and not isinstance(v, bool) and 0 <= v < 1,
        "a number in [0, 1)",
        "--dropout 0.1",
    ),
    "patch_size": (*_int_list(2, 1), '--patch_size "[256, 256]"'),
    "features": (*_int_list(None, 1), '--features "[32, 64, 128, 256, 512]"'),
    "resume": (lambda v: isinstance(v, bool), "True or False", "--resume True"),
    "overwrite": (lambda v: isinstance(v, bool), "True or False", "--overwrite True"),
    "show_progress": (lambda v: isinstance(v, bool), "True or False", "--show_progress False"),
}


def check_training_settings(**settings: Any) -> dict[str, Any]:
    """Check training settings by name (see :data:`RULES`; unknown names are refused, so a typo in a config fails).

    Args:
        settings: ``name=value`` for the settings to check, e.g. ``epochs=30, batch_size=8``.

    Returns:
        ``settings``, unchanged.

    Raises:
        ConfigError: one line per bad value: ``--key: got 'abc'; expected an integer >= 1 (e.g. --key 30)``.
    """
    problems = []
    for key, value in settings.items():
        test, what, example = look_up_option(key, RULES)
        if not test(value):
            problems.append(f"--{key}: got {value!r}; expected {what} (e.g. {example}).")
    if problems:
        raise ConfigError("bad training setting(s):\n" + "\n".join(f"  {p}" for p in problems))
    return settings
