"""The store's size limits, and the two inputs nearly every request builds.

:mod:`corosm.apps.kv.inputs` is the module to import: it re-exports
everything here beside the other inputs. These live apart because the
compiled build compiles this module (see :mod:`corosm.compiled`) and leaves
``inputs`` interpreted: a seed, REST or Redis read builds a :class:`Read`,
and a plain write a :class:`Write`, for every request, and compiled code
builds a compiled value for about a quarter of what an interpreted one
costs it (no Python frame, no ``object.__new__`` called as a function).
The pure build pays a little more for these two than it did when they set
their fields by slot (``Read(b"x")``: 0.25 -> 0.33 us): they are written
for the compiled build, as the compiled outputs are (see
:mod:`corosm.core.fields`).

The limits live here and nowhere else: every key must have 1 to
:data:`MAX_KEY_BYTES` bytes and every value at most :data:`MAX_VALUE_BYTES`,
whichever protocol built the input. A constructor given anything else raises
:class:`~corosm.errors.LimitExceeded` (a ``UsageError`` that says which part
and the limit), and one given something that is not bytes a
:class:`~corosm.errors.UsageError`. So the constructors take ``object``:
compiled, a ``bytes`` parameter would be checked by the compiler first, with
a bare ``TypeError`` that names no field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from corosm.core.fields import Reduced, by_constructor
from corosm.errors import LimitExceeded, UsageError

__all__ = ["MAX_KEY_BYTES", "MAX_VALUE_BYTES", "Read", "Write"]

#: The largest key and value any front end may store (one table in docs/limits.md).
#: A key also has at least one byte.
MAX_KEY_BYTES: Final = 1024
MAX_VALUE_BYTES: Final = 1 << 20


def not_bytes(what: str, value: object) -> UsageError:
    """The error for a field that must be bytes and is not."""
    return UsageError(f"{what} must be bytes, not {type(value).__name__} ({value!r:.60})")


def need_key(what: str, key: object) -> None:
    """``key`` is bytes with 1 to MAX_KEY_BYTES bytes; raise saying why not."""
    if type(key) is not bytes:
        raise not_bytes(what, key)
    if not 0 < len(key) <= MAX_KEY_BYTES:
        raise LimitExceeded("key", len(key), MAX_KEY_BYTES)


def need_value(what: str, value: object) -> None:
    """``value`` is bytes with at most MAX_VALUE_BYTES bytes; raise saying why not."""
    if type(value) is not bytes:
        raise not_bytes(what, value)
    if len(value) > MAX_VALUE_BYTES:
        raise LimitExceeded("value", len(value), MAX_VALUE_BYTES)


@dataclass(frozen=True, slots=True, init=False)
class Write:
    """Store ``value`` under ``key`` (seed ``Write``, REST PUT, plain Redis SET)."""

    key: bytes
    value: bytes

    def __init__(self, key: object, value: object) -> None:
        # The checks inline; the fields set as corosm.core.fields says.
        if type(key) is not bytes or not 0 < len(key) <= MAX_KEY_BYTES:
            need_key("Write.key", key)
        if type(value) is not bytes or len(value) > MAX_VALUE_BYTES:
            need_value("Write.value", value)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "value", value)

    def __reduce__(self) -> Reduced:
        return by_constructor(self)


@dataclass(frozen=True, slots=True, init=False)
class Read:
    """The value under ``key``, or None (seed ``Read``, REST GET, Redis GET)."""

    key: bytes

    def __init__(self, key: object) -> None:
        if type(key) is not bytes or not 0 < len(key) <= MAX_KEY_BYTES:
            need_key("Read.key", key)
        object.__setattr__(self, "key", key)

    def __reduce__(self) -> Reduced:
        return by_constructor(self)
