"""Argument checks for the simulator and the checker: one function per kind of value.

Each raises :class:`~corosm.errors.UsageError` naming the argument, the value
given and what is expected ("FaultPlan.clients must be an int >= 1, got 0"),
when a value is built or a function called, rather than a bare ``TypeError``
deep in a run. A bool is never a number here: ``clients=True`` or
``crash_probability=False`` is a mistake, not 1 or 0.
"""

from __future__ import annotations

import math
import numbers
from typing import TypeGuard

from corosm.errors import UsageError


def need(ok: bool, what: str, value: object, expected: str) -> None:
    """Raise ``UsageError("{what} must be {expected}, got {value!r}")`` unless ``ok``."""
    if not ok:
        raise UsageError(f"{what} must be {expected}, got {value!r:.100}")


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[float]:
    """A finite real number (int, float, Fraction...), not a bool, NaN or infinity."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return math.isfinite(value)


def need_int(what: str, value: object, least: int) -> None:
    need(is_int(value) and value >= least, what, value, f"an int >= {least}")


def need_probability(what: str, value: object) -> None:
    need(is_number(value) and 0 <= value <= 1, what, value, "a number in [0, 1]")


def need_seconds(what: str, value: object) -> None:
    need(is_number(value) and value > 0, what, value, "a positive number of seconds")


def need_range(what: str, value: object) -> None:
    """A ``(low, high)`` tuple of seconds with ``0 <= low <= high``."""
    ok = (
        isinstance(value, tuple)
        and len(value) == 2
        and all(is_number(v) for v in value)
        and 0 <= value[0] <= value[1]
    )
    need(ok, what, value, "a (low, high) tuple of seconds with 0 <= low <= high")


def need_callable(what: str, value: object, *, optional: bool = False) -> None:
    if optional:
        need(value is None or callable(value), what, value, "None or a function")
    else:
        need(callable(value), what, value, "a function")


def need_instance(what: str, value: object, cls: type, *, optional: bool = False) -> None:
    ok = isinstance(value, cls) or (optional and value is None)
    ours = cls.__module__.startswith("corosm.")
    name = cls.__name__ if ours else f"{cls.__module__}.{cls.__qualname__}"  # random.Random
    need(ok, what, value, f"None or a {name}" if optional else f"a {name}")
