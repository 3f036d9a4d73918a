"""Argument checks shared by the privacy modules, with messages that name the argument."""

from __future__ import annotations

import math
import numbers
from typing import TypeGuard


def is_number(value: object) -> TypeGuard[float]:
    """True for int, float and other real numbers, but not for bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def require_positive(name: str, value: object) -> None:
    """Raise ValueError unless ``value`` is a finite number > 0."""
    if not is_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")


def require_int(name: str, value: object, minimum: int) -> None:
    """Raise ValueError unless ``value`` is an integer >= ``minimum`` (bool is not an integer here)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")


def require_delta(name: str, value: object) -> None:
    """Raise ValueError unless ``value`` is a number in the open interval (0, 1)."""
    if not is_number(value) or not 0 < value < 1:
        raise ValueError(f"{name} must be in (0, 1); got {value!r}")


def require_sample_rate(name: str, value: object) -> None:
    """Raise ValueError unless ``value`` is a number in the half-open interval (0, 1]."""
    if not is_number(value) or not 0 < value <= 1:
        raise ValueError(f"{name} must be in (0, 1]; got {value!r}")
