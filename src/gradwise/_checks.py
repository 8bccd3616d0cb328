"""Checks of user-given values: each raises one UserError that names the value and what is
accepted (``gamma=0 is invalid; gamma must be a finite number > 0``)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection
from typing import SupportsFloat, SupportsIndex, TypeVar

from .errors import UserError

V = TypeVar("V")


def integer(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    """``value`` unless it is not an integer in ``[minimum, maximum]``."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or int(value) < minimum or (maximum is not None and int(value) > maximum)):
        accepted = (f"an integer >= {minimum}" if maximum is None
                    else f"an integer in [{minimum}, {maximum}]")
        raise UserError(f"{name}={value!r} is invalid; {name} must be {accepted}")
    return int(value)


def number(name: str, value: object, low: float = -math.inf, high: float = math.inf, *,
           open_low: bool = False, open_high: bool = False) -> float:
    """``value`` as a float unless it is not a finite number in ``[low, high]`` (ends excluded
    where ``open_low``/``open_high``). One-element tensors count as numbers; text does not."""
    v: float | None = None
    if not isinstance(value, bool) and isinstance(value, SupportsFloat | SupportsIndex):
        try:
            v = float(value)
        except (TypeError, ValueError, RuntimeError):
            v = None
    ok = (v is not None and math.isfinite(v)
          and (v > low if open_low else v >= low) and (v < high if open_high else v <= high))
    if v is None or not ok:
        if high == math.inf:
            accepted = f"a finite number {'>' if open_low else '>='} {low:g}"
        else:
            accepted = (f"a number in {'(' if open_low else '['}{low:g}, "
                        f"{high:g}{')' if open_high else ']'}")
        raise UserError(f"{name}={value!r} is invalid; {name} must be {accepted}")
    return v


def choice(name: str, value: V, choices: Collection[object]) -> V:
    """``value`` unless it is not one of ``choices``."""
    if value not in choices:
        raise UserError(f"{name}={value!r} is invalid; accepted: {', '.join(map(repr, choices))}")
    return value
