"""The key-value machine: the seed's store, durable, with Redis's string commands.

Theory of operation
-------------------
Handlers are straight-line, as in the seed: a change is ``await
ctx.append(record)``; the core runs :meth:`KVMachine.apply` when that append
is durable (recovery replays through :func:`apply_payloads`, which tests hold
to the same effect), then resumes the handler, which answers. Nothing is
acknowledged before it is on the journal, and every change, Reset included
(a ``Clear`` record), goes through it.

Why intent records (the interleaving argument)
----------------------------------------------
The machine runs under ``Policy.INTERLEAVE``, so plain writes to one hot key
are not serialised behind each other's fsync and still group-commit. The price
is that the state may change while a handler is suspended. A read-modify-write
written naively (read ``x``, compute ``x + 1``, append ``Put(x + 1)``) would
lose updates: two INCRs both read 0 and both store 1.

So no handler computes a result from the state *before* it suspends. A
read-modify-write appends an *intent* (``Increment(key, delta)``,
``PutIf(key, value, nx, xx)``, ``AppendTo``, ``Remove``) whose effect
``apply`` computes from the state at apply time, i.e. in log order; the same
happens in recovery, so replay gives the live state exactly. ``apply`` stores
the outcome of the record it just applied in ``state.last_outcome``. The core
resumes a handler immediately after applying *its* record and before applying
any later one (see :meth:`corosm.core.Stepper.complete`), so the handler reads
exactly the outcome of its own record. The linearization point of a change is
the moment its record is applied.

``apply`` never raises for a record a handler could have appended: an
``Increment`` of a value that became non-integer meanwhile is a deterministic
no-op whose outcome is a ``Rejected`` output, and so is an ``AppendTo`` whose
result would be over ``MAX_VALUE_BYTES``. The APPEND handler does *not*
refuse early from the state it sees: APPEND is ``Order.LOGGED``, so it may
run while an earlier write of its own connection (say a SET that shortens the
value) is still waiting for its fsync; only the record's apply, in log order,
knows the value it really extends.

Every change except a delete appends one record and answers that record's
outcome, so :meth:`KVMachine.log` names the record and :meth:`KVMachine.logged`
the outcome: the stepper then runs those inputs with no handler coroutine
(see ``Machine.log``), and ``handle`` is written on top of ``log`` for the
rest, so the mapping from inputs to records exists once.

Reads do not suspend: they answer from the applied state, which holds only
durable changes, and linearize at the moment they run. For the same reason a
delete of keys none of which exist answers ``Count(0)`` at once, without a
journal record (as Redis does not log such a DEL).

Sharding: ``key(input)`` names the keys an input touches, so a router can
send it to its shard, and ``state_items`` / ``state_from_items`` split the
state by key, so ``python -m corosm.shards reshard`` can move keys between
shard counts (see :mod:`corosm.shards`).

The state is a small mutable object, changed in place by ``apply``: copying a
dict of 10^6 keys per write is not an option. :meth:`KVMachine.copy_state`
gives the cheap copy a background snapshot needs.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any

from corosm.apps.kv.inputs import (
    MAX_VALUE_BYTES,
    AppendBytes,
    Delete,
    DeleteMany,
    Exists,
    IncrBy,
    Input,
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
    decode_snapshot,
    encode_record,
    encode_snapshot,
    parse_int64,
    unpack_put_head,
)
from corosm.core import Context, Keys, Machine, Order, Policy
from corosm.errors import DataError, UsageError

#: APPEND's answer when the result would be over MAX_VALUE_BYTES (Redis's wording;
#: OVERFLOW is the nearest RejectReason: the value would outgrow its limit).
VALUE_TOO_LARGE = Rejected(
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
    match record:
        case Put(key, value):  # a subclass of Put
            data[key] = value
            state.last_outcome = OK
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
    put, key_at, unpack_head = TAG_PUT, PUT_KEY_AT, unpack_put_head
    for payload in payloads:
        try:
            tag, key_len = unpack_head(payload)
        except struct.error:  # shorter than a Put's head, so not a Put
            tag = key_len = 0
        key_end = key_at + key_len
        if tag == put and key_end <= len(payload):
            data[payload[key_at:key_end]] = payload[key_end:]
            state.last_outcome = OK
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


#: How each input orders against its own connection's earlier inputs (see
#: :class:`corosm.core.Order`); anything not listed is a READ. Every front end
#: takes read-your-writes from here. A delete is a WRITE, not LOGGED: when
#: the key is absent it answers 0 at once, without a journal record.
ORDER: dict[type[Input], Order] = {
    Write: Order.LOGGED,
    WriteMany: Order.LOGGED,
    SetIf: Order.LOGGED,
    IncrBy: Order.LOGGED,
    AppendBytes: Order.LOGGED,
    Reset: Order.LOGGED,
    Delete: Order.WRITE,
    DeleteMany: Order.WRITE,
}

#: The writes that only append: the record each one appends (see KVMachine.log).
#: ``apply`` computes every outcome, so a write reads nothing before it appends.
_LOGS: dict[type, Callable[[Any], Record | None]] = {
    Write: lambda input: Put(input.key, input.value),
    SetIf: lambda input: PutIf(input.key, input.value, input.nx, input.xx),
    IncrBy: lambda input: Increment(input.key, input.delta),
    AppendBytes: lambda input: AppendTo(input.key, input.value),
    Reset: lambda input: Clear(),
    WriteMany: lambda input: PutMany(input.pairs) if input.pairs else None,
}

#: The reads: one small function per input type (a table, not a chain of
#: patterns, since every GET of every front end comes through here).
_READS: dict[type, Callable[[dict[bytes, bytes], Any], Output]] = {
    Read: lambda data, input: Value(data.get(input.key)),
    ReadMany: lambda data, input: Values(tuple(map(data.get, input.keys))),
    Exists: lambda data, input: Count(sum(1 for key in input.keys if key in data)),
    StrLen: lambda data, input: Count(len(data.get(input.key, b""))),
    Size: lambda data, input: Count(len(data)),
}

_READ = Order.READ  # a module constant: an enum member costs a slow class lookup each time


class KVMachine(Machine[KVState, Input, Output]):
    """The durable key-value store as a coroutine state machine (see module docs)."""

    policy = Policy.INTERLEAVE

    def initial_state(self) -> KVState:
        return KVState()

    def order(self, input: Input) -> Order:
        """Writes that journal first are LOGGED; deletes may answer at once (see ORDER)."""
        return ORDER.get(type(input), _READ)

    async def handle(self, ctx: Context[KVState], input: Input) -> Output:
        record = self.log(input)
        if record is not None:  # a write that only appends (see log): its outcome
            await ctx.append(record)
            # Read at once, before any later record is applied: this record's outcome.
            return ctx.state.last_outcome
        match input:
            case Delete(key):
                return await _remove(ctx, (key,))
            case DeleteMany(keys):
                return await _remove(ctx, keys)
            case WriteMany():
                return OK  # no pairs: nothing to write
        return self.read(ctx.state, input)  # every other input is a read

    def log(self, input: Input) -> Record | None:
        """The record of a write that only appends one (see ``Machine.log``), else None.

        Every change but a delete: ``apply`` computes its outcome in log order
        (the intent records above) and leaves it in ``state.last_outcome``,
        which :meth:`logged` answers. A delete looks at the state first (no
        record when no key exists) and an empty MSET appends nothing: those
        run :meth:`handle`.
        """
        make = _LOGS.get(type(input))
        return None if make is None else make(input)

    def logged(self, state: KVState, input: Input) -> Output:
        """The outcome ``apply`` left for the record just applied (see :meth:`log`)."""
        return state.last_outcome

    def read(self, state: KVState, input: Input) -> Output:
        """Answer a read (Read, ReadMany, Exists, StrLen, Size) from ``state``."""
        answer = _READS.get(type(input))
        if answer is None:
            raise UsageError(
                f"the key-value machine does not take {input!r:.80}; expected one of the "
                "inputs in corosm.apps.kv.inputs (Write, Read, Delete, Reset, ...)"
            )
        return answer(state.data, input)

    def key(self, input: Input) -> Keys | Hashable | None:
        """What ``input`` touches, for routing it to a shard (see :mod:`corosm.shards`).

        The key of a one-key input; ``Keys(...)`` for MGET, EXISTS, DEL and
        MSET (refused by the router when the keys fall on several shards);
        None for ``Reset`` and ``Size``, which would need every shard. The
        policy stays INTERLEAVE: the key routes inputs, it does not make
        same-key inputs wait (the intent records make that unnecessary).
        """
        match input:
            case Write() | Read() | Delete() | SetIf() | IncrBy() | AppendBytes() | StrLen():
                return input.key
            case ReadMany() | Exists() | DeleteMany():
                return Keys(*input.keys)
            case WriteMany():
                return Keys(*(key for key, _ in input.pairs))
        return None  # Reset, Size: every key

    def state_items(self, state: KVState) -> Iterable[tuple[Hashable, bytes]]:
        """Every key with its value: what moves between shards when re-sharding."""
        return state.data.items()

    def state_from_items(self, items: Iterable[tuple[Hashable, bytes]]) -> KVState:
        """A state holding exactly ``items`` (the keys re-sharding gave one shard)."""
        data: dict[bytes, bytes] = {}
        for key, value in items:
            assert type(key) is bytes
            data[key] = value
        return KVState(data)

    # The codec and apply are the module functions themselves, not wrappers:
    # a wrapper is one more Python frame per call (per record, live or not).
    apply = staticmethod(apply_record)
    apply_encoded = staticmethod(apply_payloads)
    encode_record = staticmethod(encode_record)
    decode_record = staticmethod(decode_record)

    def snapshot(self, state: KVState) -> bytes:
        return encode_snapshot(state.data)

    def restore(self, data: bytes) -> KVState:
        return KVState(decode_snapshot(data))

    def copy_state(self, state: KVState) -> KVState:
        """A copy that later changes to ``state`` do not affect (for background snapshots)."""
        return KVState(state.data.copy())


async def _remove(ctx: Context[KVState], keys: tuple[bytes, ...]) -> Output:
    data = ctx.state.data
    if not any(key in data for key in keys):
        return Count(0)  # nothing to remove: linearizes now, no journal record needed
    await ctx.append(Remove(keys))
    # Read at once, before any later record is applied: this record's outcome.
    return ctx.state.last_outcome
