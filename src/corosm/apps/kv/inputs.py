"""Inputs of the key-value machine: what a front end asks it to do.

Every input is a frozen slotted value. Keys and values are byte strings; the
front ends (seed HTTP, REST, Redis protocol) translate their own syntax into
these. Constructors check their arguments, so a front end that builds a bad
input gets a :class:`~corosm.errors.UsageError` naming the field and what was
expected, instead of a machine that fails later in ``apply``.

The store's size limits hold for every input: every key must have 1 to
:data:`MAX_KEY_BYTES` bytes and every value at most :data:`MAX_VALUE_BYTES`,
whichever protocol built the input. A constructor given anything else raises
:class:`~corosm.errors.LimitExceeded` (a ``UsageError`` that says which part
and the limit), which each front end maps to its own reply. A value that only
*grows* past the limit (APPEND) is refused by the machine instead, in
``apply``; see :mod:`corosm.apps.kv.machine`. The limits, their checks and the
two inputs nearly every request builds, :class:`Read` and :class:`Write`, are
defined in :mod:`corosm.apps.kv.basics` (compiled in the compiled build) and
exported from here with the rest.

The seed's protocol needs only :class:`Write`, :class:`Read` and
:class:`Reset`; REST adds :class:`Delete`; the rest serves the Redis commands
(issue 6): ``SET NX/XX/GET`` is :class:`SetIf`, ``MSET`` is :class:`WriteMany`
(one journal record, so it is atomic), ``INCRBY``/``DECRBY`` is
:class:`IncrBy`, and so on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from corosm.apps.kv.basics import (
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    Read,
    Write,
    need_key,
    need_value,
)
from corosm.apps.kv.records import INT64_MAX, INT64_MIN
from corosm.errors import UsageError

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "AppendBytes",
    "Delete",
    "DeleteMany",
    "Exists",
    "IncrBy",
    "Input",
    "Read",
    "ReadMany",
    "Reset",
    "SetIf",
    "Size",
    "StrLen",
    "Write",
    "WriteMany",
]


def _need_keys(what: str, keys: object) -> tuple[bytes, ...]:
    if isinstance(keys, bytes | str) or not isinstance(keys, Iterable):
        raise UsageError(f"{what} must be a sequence of bytes keys, not {keys!r:.60}")
    result = tuple(keys)
    for key in result:
        # need_key's test, inline: a call per key was most of what MGET's input cost.
        if type(key) is not bytes or not 0 < len(key) <= MAX_KEY_BYTES:
            need_key(f"each of {what}", key)  # raises, saying why
    return result


def _freeze(obj: Any, name: str, value: object) -> None:
    # Frozen dataclasses allow this in __post_init__ only; used to store tuples.
    object.__setattr__(obj, name, value)


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove ``key``; the output counts 1 if it existed, else 0 (REST DELETE)."""

    key: bytes

    def __post_init__(self) -> None:
        need_key("Delete.key", self.key)


@dataclass(frozen=True, slots=True)
class Reset:
    """Remove every key (seed ``DELETE /``, Redis FLUSHALL/FLUSHDB). Journaled."""


@dataclass(frozen=True, slots=True)
class Exists:
    """How many of ``keys`` exist; a key named twice counts twice (Redis EXISTS)."""

    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _freeze(self, "keys", _need_keys("Exists.keys", self.keys))


@dataclass(frozen=True, slots=True)
class ReadMany:
    """The values of ``keys`` in order, None for absent ones (Redis MGET)."""

    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _freeze(self, "keys", _need_keys("ReadMany.keys", self.keys))


def _need_pair(pair: object) -> None:
    """``pair`` is a ``(key, value)`` tuple of a good key and a good value."""
    if not isinstance(pair, tuple) or len(pair) != 2:
        raise UsageError(f"WriteMany.pairs: each item must be a (key, value) tuple: {pair!r:.60}")
    need_key("WriteMany key", pair[0])
    need_value("WriteMany value", pair[1])


@dataclass(frozen=True, slots=True)
class WriteMany:
    """Store every ``(key, value)`` pair at once: one journal record (Redis MSET).

    When a key appears twice, the later pair wins, as in Redis.
    """

    pairs: tuple[tuple[bytes, bytes], ...]

    def __post_init__(self) -> None:
        given: object = self.pairs
        if isinstance(given, bytes | str) or not isinstance(given, Iterable):
            raise UsageError(f"WriteMany.pairs must be (key, value) pairs, not {given!r:.60}")
        pairs = tuple(given)
        for pair in pairs:
            # _need_pair's tests, inline: a call per pair was most of what MSET's input cost.
            if type(pair) is tuple and len(pair) == 2:
                key, value = pair
                if (
                    type(key) is bytes
                    and 0 < len(key) <= MAX_KEY_BYTES
                    and type(value) is bytes
                    and len(value) <= MAX_VALUE_BYTES
                ):
                    continue
            _need_pair(pair)  # raises, saying why (or takes a tuple subclass)
        _freeze(self, "pairs", pairs)


@dataclass(frozen=True, slots=True)
class SetIf:
    """Redis ``SET key value [NX|XX] [GET]``.

    ``nx``: store only if ``key`` is absent; ``xx``: only if it exists (not
    both). ``return_old``: the output carries the value before the command.
    The output is :class:`~corosm.apps.kv.outputs.SetOutcome`.
    """

    key: bytes
    value: bytes
    nx: bool = False
    xx: bool = False
    return_old: bool = False

    def __post_init__(self) -> None:
        need_key("SetIf.key", self.key)
        need_value("SetIf.value", self.value)
        if self.nx and self.xx:
            raise UsageError("SetIf: nx and xx exclude each other (SET takes NX or XX, not both)")


@dataclass(frozen=True, slots=True)
class IncrBy:
    """Add ``delta`` to the decimal integer stored at ``key`` (absent counts as 0).

    Redis INCR/INCRBY/DECR/DECRBY. A value that is not a decimal 64-bit integer,
    or a result out of range, gives a ``Rejected`` output and changes nothing.
    """

    key: bytes
    delta: int

    def __post_init__(self) -> None:
        need_key("IncrBy.key", self.key)
        if type(self.delta) is not int or not INT64_MIN <= self.delta <= INT64_MAX:
            raise UsageError(f"IncrBy.delta must be a 64-bit signed int, not {self.delta!r:.60}")


@dataclass(frozen=True, slots=True)
class AppendBytes:
    """Append ``value`` to the bytes at ``key`` (absent: empty); output the new length."""

    key: bytes
    value: bytes

    def __post_init__(self) -> None:
        need_key("AppendBytes.key", self.key)
        need_value("AppendBytes.value", self.value)


@dataclass(frozen=True, slots=True)
class StrLen:
    """The length of the value at ``key``, 0 if absent (Redis STRLEN)."""

    key: bytes

    def __post_init__(self) -> None:
        need_key("StrLen.key", self.key)


@dataclass(frozen=True, slots=True)
class Size:
    """The number of keys (Redis DBSIZE)."""


@dataclass(frozen=True, slots=True)
class DeleteMany:
    """Remove ``keys``; output how many existed (Redis DEL k1 k2 ...)."""

    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _freeze(self, "keys", _need_keys("DeleteMany.keys", self.keys))


Input = (
    Write
    | Read
    | Delete
    | Reset
    | Exists
    | ReadMany
    | WriteMany
    | SetIf
    | IncrBy
    | AppendBytes
    | StrLen
    | Size
    | DeleteMany
)
"""Every input the key-value machine accepts."""
