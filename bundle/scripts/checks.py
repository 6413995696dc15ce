"""Argument checks shared by the library's constructors: one wording for "a positive int" and "one of".

Built on ``monai.utils.look_up_option`` (options) and plain ``numbers`` tests; ``bool`` is never an int here
(``True`` is not a channel count).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from enum import Enum
from numbers import Integral, Real
from typing import Any

from monai.utils import look_up_option

__all__ = ["check_option", "check_positive_int", "is_int", "is_positive_number"]


def is_int(value: Any, minimum: int | None = None) -> bool:
    """Whether ``value`` is an integer (Python or NumPy, not ``bool``) and, when given, ``>= minimum``."""
    return isinstance(value, Integral) and not isinstance(value, bool) and (minimum is None or value >= minimum)


def is_positive_number(value: Any) -> bool:
    """Whether ``value`` is a finite real number ``> 0`` (not ``bool``)."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def check_positive_int(name: str, value: Any, allow_none: bool = False) -> Any:
    """Returns ``value`` when it is an int ``>= 1`` (or ``None`` with ``allow_none``).

    Raises:
        ValueError: ``"<name> must be a positive int[ or None], got <value>."``
    """
    if (allow_none and value is None) or is_int(value, 1):
        return value
    raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, got {value!r}.")


def check_option(name: str, value: Any, options: Collection[Any] | type[Enum]) -> Any:
    """Returns ``monai.utils.look_up_option(value, options)`` (the option itself; a member for an ``Enum``).

    Raises:
        ValueError: ``"<name> must be one of <options>, got <value>."``
    """
    try:
        return look_up_option(value, options, print_all_options=False)
    except (ValueError, TypeError):
        shown = tuple(m.value for m in options) if isinstance(options, type) and issubclass(options, Enum) else options
        raise ValueError(f"{name} must be one of {shown}, got {value!r}.") from None
