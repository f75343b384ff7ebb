"""Outputs of the key-value machine: small frozen values a front end renders.

Errors that the *client* caused (INCR of a value that is not an integer, an
overflow) are outputs too, :class:`Rejected`, not exceptions: the machine did
its job, the answer is "no". Exceptions are kept for broken inputs and I/O
failures. ``Rejected.reason`` is a :class:`RejectReason` so a front end can map
it to its own wording; ``message`` is Redis's wording, without the ``ERR``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from corosm.core.fields import Reduced, by_constructor


@dataclass(frozen=True, slots=True)
class Ok:
    """The command was done."""

    def __reduce__(self) -> Reduced:
        return by_constructor(self)


OK: Final = Ok()
"""The one :class:`Ok` value (outputs are values; sharing it saves allocations)."""


@dataclass(frozen=True, slots=True, init=False)
class Value:
    """One value, or None when the key is absent."""

    value: bytes | None

    def __init__(self, value: bytes | None) -> None:
        # Built for every read; compiled, object.__setattr__ is the cheap way (corosm.core.fields).
        object.__setattr__(self, "value", value)

    def __reduce__(self) -> Reduced:
        return by_constructor(self)


@dataclass(frozen=True, slots=True)
class Values:
    """Several values, in the order of the keys asked for; None for absent keys."""

    values: tuple[bytes | None, ...]

    def __reduce__(self) -> Reduced:
        return by_constructor(self)


@dataclass(frozen=True, slots=True)
class Count:
    """A count or a length (EXISTS, DEL, DBSIZE, STRLEN, APPEND)."""

    n: int

    def __reduce__(self) -> Reduced:
        return by_constructor(self)


@dataclass(frozen=True, slots=True)
class IntValue:
    """The integer a key holds after INCRBY."""

    n: int

    def __reduce__(self) -> Reduced:
        return by_constructor(self)


@dataclass(frozen=True, slots=True)
class SetOutcome:
    """The result of :class:`~corosm.apps.kv.inputs.SetIf`.

    ``stored``: whether the value was written (False when NX/XX said no).
    ``old``: the value before the command (None if absent); always filled in,
    a front end shows it only when ``return_old`` was asked.
    """

    stored: bool
    old: bytes | None

    def __reduce__(self) -> Reduced:
        return by_constructor(self)


class RejectReason(enum.Enum):
    """Why a command was refused."""

    NOT_INTEGER = "not_integer"
    OVERFLOW = "overflow"


@dataclass(frozen=True, slots=True)
class Rejected:
    """The command was refused because of what the client asked; nothing changed."""

    reason: RejectReason
    message: str

    def __reduce__(self) -> Reduced:
        return by_constructor(self)


NOT_INTEGER: Final = Rejected(RejectReason.NOT_INTEGER, "value is not an integer or out of range")
OVERFLOW: Final = Rejected(RejectReason.OVERFLOW, "increment or decrement would overflow")

Output = Ok | Value | Values | Count | IntValue | SetOutcome | Rejected
"""Every output the key-value machine gives."""
