"""The key-value state: how a record changes it, and how a read answers from it.

Theory of operation
-------------------
:class:`KVState` is the machine's state: the dict, changed in place, and the
outcome of the last record applied. :func:`apply_record` is
``KVMachine.apply``; :func:`apply_payloads` is ``KVMachine.apply_encoded``,
what recovery runs over a journal's encoded records; :func:`read_state` is
``KVMachine.read``, which every GET of every front end runs, and
:func:`log_input` and :func:`logged_outcome` are ``KVMachine.log`` and
``logged``, which every SET runs. They live apart from
:class:`~corosm.apps.kv.machine.KVMachine` so that the compiled build
(:mod:`corosm.compiled`) can compile them (replay spends most of its time in
that loop, reads and writes in those tables), while the machine class stays
interpreted, for subclasses.

Why records are intents, and why ``apply`` never raises on one a handler
could have appended, is in :mod:`corosm.apps.kv.machine`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any, Final

from corosm.apps.kv.inputs import (
    MAX_VALUE_BYTES,
    AppendBytes,
    Exists,
    IncrBy,
    Read,
    ReadMany,
    Reset,
    SetIf,
    Size,
    StrLen,
    Write,
    WriteMany,
)
from corosm.apps.kv.outputs import (
    NOT_INTEGER,
    OK,
    OVERFLOW,
    Count,
    IntValue,
    Output,
    Rejected,
    RejectReason,
    SetOutcome,
    Value,
    Values,
)
from corosm.apps.kv.records import (
    INT64_MAX,
    INT64_MIN,
    PUT_KEY_AT,
    TAG_PUT,
    AppendTo,
    Clear,
    Increment,
    Put,
    PutIf,
    PutMany,
    Record,
    Remove,
    decode_record,
    parse_int64,
    unpack_put_head,
)
from corosm.errors import DataError, UsageError

#: APPEND's answer when the result would be over MAX_VALUE_BYTES (Redis's wording;
#: OVERFLOW is the nearest RejectReason: the value would outgrow its limit).
VALUE_TOO_LARGE: Final = Rejected(
    RejectReason.OVERFLOW,
    f"string exceeds maximum allowed size ({MAX_VALUE_BYTES} bytes)",
)


class KVState:
    """The machine's state: the key-value dict, and the last record's outcome."""

    __slots__ = ("data", "last_outcome")

    def __init__(self, data: dict[bytes, bytes] | None = None) -> None:
        self.data: dict[bytes, bytes] = {} if data is None else data
        self.last_outcome: Output = OK

    def __repr__(self) -> str:
        return f"KVState({len(self.data)} keys)"


def apply_record(state: KVState, record: Record) -> KVState:
    """Apply one record in place and set ``state.last_outcome``; never raises on a record."""
    data = state.data
    if type(record) is Put:  # nearly every record: skip the match's class pattern
        data[record.key] = record.value
        state.last_outcome = OK
        return state
    match record:  # the records are final classes: a Put never gets here
        case Increment(key, delta):
            state.last_outcome = _increment(data, key, delta)
        case PutIf(key, value, nx, xx):
            old = data.get(key)
            stored = not ((nx and old is not None) or (xx and old is None))
            if stored:
                data[key] = value
            state.last_outcome = SetOutcome(stored, old)
        case AppendTo(key, value):
            old = data.get(key, b"")
            if len(old) + len(value) > MAX_VALUE_BYTES:
                state.last_outcome = VALUE_TOO_LARGE  # decided here: the same on replay
            else:
                new = old + value
                data[key] = new
                state.last_outcome = Count(len(new))
        case Remove(keys):
            removed = 0
            for key in keys:
                if data.pop(key, None) is not None:
                    removed += 1
            state.last_outcome = Count(removed)
        case PutMany(pairs):
            data.update(pairs)
            state.last_outcome = OK
        case Clear():
            data.clear()
            state.last_outcome = OK
        case _:
            raise DataError(f"the key-value machine cannot apply {record!r:.80}")
    return state


def apply_payloads(state: KVState, payloads: Iterator[bytes]) -> KVState:
    """Apply encoded records in order: ``apply_record(state, decode_record(p))`` for each.

    What recovery runs (``KVMachine.apply_encoded``). A Put, nearly every
    record of a log, is stored straight from its bytes, with no ``Put``
    object built only to be taken apart; any other record, or a Put that
    would not decode, goes through ``decode_record`` and ``apply_record``.
    Tests hold the two ways to the same state and outcome.
    """
    data = state.data
    put, key_at, unpack_head, ok = TAG_PUT, PUT_KEY_AT, unpack_put_head, OK
    for payload in payloads:
        try:
            tag, key_len = unpack_head(payload)
        except struct.error:  # shorter than a Put's head, so not a Put
            tag = key_len = 0
        key_end = key_at + key_len
        if tag == put and key_end <= len(payload):
            data[payload[key_at:key_end]] = payload[key_end:]
            state.last_outcome = ok
        else:
            state = apply_record(state, decode_record(payload))
            data = state.data
    return state


def _increment(data: dict[bytes, bytes], key: bytes, delta: int) -> Output:
    old = data.get(key)
    current = 0 if old is None else parse_int64(old)
    if current is None:
        return NOT_INTEGER
    new = current + delta
    if not INT64_MIN <= new <= INT64_MAX:
        return OVERFLOW
    data[key] = str(new).encode()
    return IntValue(new)


#: The reads but ``Read``, which read_state answers first (every plain GET of
#: every front end): one small function per input type, a table rather than a
#: chain of patterns.
_READS: Final[dict[type, Callable[[dict[bytes, bytes], Any], Output]]] = {
    ReadMany: lambda data, input: Values(tuple(map(data.get, input.keys))),
    Exists: lambda data, input: Count(sum(1 for key in input.keys if key in data)),
    StrLen: lambda data, input: Count(len(data.get(input.key, b""))),
    Size: lambda data, input: Count(len(data)),
}


#: The writes that only append, but ``Write``, which log_input answers first
#: (every plain write of every front end): the record each one appends.
#: ``apply`` computes every outcome, so a write reads nothing before it appends.
_LOGS: Final[dict[type, Callable[[Any], Record | None]]] = {
    SetIf: lambda input: PutIf(input.key, input.value, input.nx, input.xx),
    IncrBy: lambda input: Increment(input.key, input.delta),
    AppendBytes: lambda input: AppendTo(input.key, input.value),
    Reset: lambda input: Clear(),
    WriteMany: lambda input: PutMany(input.pairs) if input.pairs else None,
}


def log_input(input: Any) -> Record | None:
    """The record of a write that only appends one, else None: ``KVMachine.log``.

    Every change but a delete (see ``Machine.log``): ``apply`` computes its
    outcome in log order (the records are intents) and leaves it in
    ``state.last_outcome``, which :func:`logged_outcome` answers. A delete
    looks at the state first (no record when no key exists) and an empty
    MSET appends nothing: those run ``KVMachine.handle``.
    """
    if type(input) is Write:  # nearly every write: compiled, no table lookup and no call
        return Put(input.key, input.value)
    make = _LOGS.get(type(input))
    return None if make is None else make(input)


def logged_outcome(state: KVState, input: Any) -> Output:
    """The outcome ``apply`` left for the record just applied: ``KVMachine.logged``."""
    return state.last_outcome


def read_state(state: KVState, input: Any) -> Output:
    """Answer a read (Read, ReadMany, Exists, StrLen, Size) from ``state``: ``KVMachine.read``."""
    if type(input) is Read:  # nearly every read: compiled, no table lookup and no call
        return Value(state.data.get(input.key))
    answer = _READS.get(type(input))
    if answer is None:
        raise UsageError(
            f"the key-value machine does not take {input!r:.80}; expected one of the "
            "inputs in corosm.apps.kv.inputs (Write, Read, Delete, Reset, ...)"
        )
    return answer(state.data, input)
