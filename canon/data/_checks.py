"""Validation of dataset option values; every failure is a ConfigError naming the option."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

from canon.errors import ConfigError

__all__ = [
    "check_bool",
    "check_choice",
    "check_fraction",
    "check_int",
    "check_optional_int",
    "check_positive_float",
]


def check_int(where: str, option: str, value: object, *, minimum: int | None = None) -> int:
    """Return ``value`` as an int, or raise ConfigError if it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{where}: option {option} must be an int, got {value!r}")
    result = int(value)
    if minimum is not None and result < minimum:
        raise ConfigError(f"{where}: option {option} must be >= {minimum}, got {result}")
    return result


def check_optional_int(
    where: str, option: str, value: object, *, minimum: int | None = None
) -> int | None:
    """Return ``value`` unchanged if None, else as a validated int (see :func:`check_int`)."""
    if value is None:
        return None
    return check_int(where, option, value, minimum=minimum)


def check_fraction(
    where: str,
    option: str,
    value: object,
    *,
    allow_zero: bool = False,
    allow_one: bool = False,
) -> float:
    """Return ``value`` as a float in (0, 1), with 0 and/or 1 allowed on request."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{where}: option {option} must be a number, got {value!r}")
    result = float(value)
    low_ok = result > 0.0 or (allow_zero and result == 0.0)
    high_ok = result < 1.0 or (allow_one and result == 1.0)
    if not (math.isfinite(result) and low_ok and high_ok):
        low = "[0" if allow_zero else "(0"
        high = "1]" if allow_one else "1)"
        raise ConfigError(f"{where}: option {option} must lie in {low}, {high}, got {value!r}")
    return result


def check_positive_float(where: str, option: str, value: object, *, allow_zero: bool) -> float:
    """Return ``value`` as a finite float > 0 (or >= 0 when ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{where}: option {option} must be a number, got {value!r}")
    result = float(value)
    if not math.isfinite(result) or result < 0.0 or (result == 0.0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{where}: option {option} must be finite and {bound}, got {value!r}")
    return result


def check_bool(where: str, option: str, value: object) -> bool:
    """Return ``value`` if it is a bool, else raise ConfigError (no truthiness coercion)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: option {option} must be True or False, got {value!r}")
    return value


def check_choice(where: str, option: str, value: object, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ConfigError listing them."""
    allowed = tuple(choices)
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(
            f"{where}: option {option} must be one of {', '.join(allowed)}; got {value!r}"
        )
    return value
