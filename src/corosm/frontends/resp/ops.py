"""The data operations a RESP command can ask of the key-value store, as values.

Theory of operation
-------------------
:mod:`~corosm.frontends.resp.commands` checks a command's arguments (arity,
options, integers) and turns each command that touches data into one *op*
below. An op is a small frozen value; it says what to do, not how. A
:class:`Backend` then maps an op to an input of the machine that serves the
data and maps that input's output back to a RESP reply. Keeping the ops apart
from any machine lets the front end be tested against a stand-in before (or
without) the key-value app, and leaves one small module to change when the
key-value machine's inputs change.

:func:`apply_op` is the reference meaning of every op on a plain ``dict`` of
``bytes``: the model the tests compare against, and the body of
:class:`~corosm.frontends.resp.memory.RespMemoryMachine`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeAlias

from corosm.frontends.resp.protocol import ErrorReply, Reply, SimpleString

__all__ = [
    "Append",
    "Backend",
    "DbSize",
    "Del",
    "Exists",
    "FlushAll",
    "Get",
    "IncrBy",
    "MGet",
    "MSet",
    "NOT_AN_INTEGER",
    "OVERFLOW",
    "Op",
    "Set",
    "Strlen",
    "apply_op",
    "parse_int64",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

NOT_AN_INTEGER = ErrorReply("ERR value is not an integer or out of range")
OVERFLOW = ErrorReply("ERR increment or decrement would overflow")
OK = SimpleString("OK")


@dataclass(frozen=True, slots=True)
class Get:
    key: bytes


@dataclass(frozen=True, slots=True)
class MGet:
    keys: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Set:
    """``SET key value [NX|XX] [GET]``. ``condition`` is ``""`` for "always"."""

    key: bytes
    value: bytes
    condition: Literal["", "NX", "XX"] = ""
    get: bool = False


@dataclass(frozen=True, slots=True)
class MSet:
    """Every pair is written, atomically (one journal record)."""

    pairs: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Del:
    keys: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Exists:
    keys: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class IncrBy:
    """``INCR``, ``DECR``, ``INCRBY``, ``DECRBY``: add ``delta`` to an integer value."""

    key: bytes
    delta: int


@dataclass(frozen=True, slots=True)
class Append:
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class Strlen:
    key: bytes


@dataclass(frozen=True, slots=True)
class DbSize:
    pass


@dataclass(frozen=True, slots=True)
class FlushAll:
    """``FLUSHALL`` / ``FLUSHDB``: empty the store (journaled, like the seed's DELETE)."""


Op: TypeAlias = (
    Get | MGet | Set | MSet | Del | Exists | IncrBy | Append | Strlen | DbSize | FlushAll
)

#: Ops that change data (and so write a journal record when they do).
WRITE_OPS: tuple[type, ...] = (Set, MSet, Del, IncrBy, Append, FlushAll)


class Backend(Protocol):
    """Maps ops to a machine's inputs and its outputs back to replies."""

    def to_input(self, op: Op) -> Any:
        """The machine input that performs ``op``."""
        ...

    def to_reply(self, op: Op, output: Any) -> Reply:
        """The RESP reply for ``op`` given the machine's ``output``."""
        ...


def parse_int64(data: bytes) -> int | None:
    """Parse ``data`` as Redis does (``string2ll``): a canonical signed 64-bit decimal.

    No sign ``+``, no blanks, no leading zeros, no ``-0``. ``None`` when invalid.
    """
    if not data or len(data) > 20:
        return None
    digits = data[1:] if data[0] == 0x2D else data  # "-"
    if not digits.isdigit() or (digits[0] == 0x30 and (len(digits) > 1 or digits is not data)):
        return None
    value = int(data)
    return value if INT64_MIN <= value <= INT64_MAX else None


def apply_op(store: dict[bytes, bytes], op: Op) -> Reply:
    """Perform ``op`` on ``store`` in place and return the reply Redis would give."""
    match op:
        case Get(key):
            return store.get(key)
        case MGet(keys):
            return [store.get(k) for k in keys]
        case Set(key, value, condition, get):
            old = store.get(key)
            if (condition == "NX" and old is not None) or (condition == "XX" and old is None):
                return old if get else None
            store[key] = value
            return old if get else OK
        case MSet(pairs):
            store.update(pairs)
            return OK
        case Del(keys):
            return sum(store.pop(k, None) is not None for k in dict.fromkeys(keys))
        case Exists(keys):
            return sum(k in store for k in keys)
        case IncrBy(key, delta):
            current = parse_int64(store.get(key, b"0"))
            if current is None:
                return NOT_AN_INTEGER
            result = current + delta
            if not INT64_MIN <= result <= INT64_MAX:
                return OVERFLOW
            store[key] = b"%d" % result
            return result
        case Append(key, value):
            store[key] = store.get(key, b"") + value
            return len(store[key])
        case Strlen(key):
            return len(store.get(key, b""))
        case DbSize():
            return len(store)
        case FlushAll():
            store.clear()
            return OK
