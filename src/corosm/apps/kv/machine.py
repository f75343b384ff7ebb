"""The key-value machine: the seed's store, durable, with Redis's string commands.

Theory of operation
-------------------
Handlers are straight-line, as in the seed: a change is ``await
ctx.append(record)``; the core runs :meth:`KVMachine.apply` when that append
is durable (recovery replays through
:func:`~corosm.apps.kv.state.apply_payloads`, which tests hold to the same
effect), then resumes the handler, which answers. Nothing is
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

from collections.abc import Hashable, Iterable

from corosm.apps.kv.inputs import (
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
    StrLen,
    Write,
    WriteMany,
)
from corosm.apps.kv.outputs import OK, Count, Output
from corosm.apps.kv.records import (
    Remove,
    decode_record,
    decode_snapshot,
    encode_record,
    encode_snapshot,
)
from corosm.apps.kv.state import (
    KVState,
    apply_payloads,
    apply_record,
    log_input,
    logged_outcome,
    read_state,
)
from corosm.core import Context, Keys, Machine, Order, Policy

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

_READ = Order.READ  # a module constant: an enum member costs a slow class lookup each time


class KVMachine(Machine[KVState, Input, Output]):
    """The durable key-value store as a coroutine state machine (see module docs)."""

    policy = Policy.INTERLEAVE
    order_by_type = True  # order() is the ORDER table's

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
    #: Answer a read (Read, ReadMany, Exists, StrLen, Size) from the state.
    read = staticmethod(read_state)
    #: The record of a write that only appends one, else None (see log_input).
    log = staticmethod(log_input)
    #: The outcome ``apply`` left for the record just applied (see :func:`log_input`).
    logged = staticmethod(logged_outcome)
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
