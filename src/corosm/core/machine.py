"""What a machine is: its state, its handler, and how its journal records apply.

A machine is written once and run by any host: the asyncio runtime in
production, the simulator in tests. Subclass :class:`Machine` and define
``initial_state`` and ``handle``; a machine that journals also defines
``apply`` (used both live, when an append completes, and by recovery) and the
codecs that turn records and snapshots into bytes.

Interleaving policy
-------------------
While a handler is suspended, other inputs run and may change the state. The
machine chooses how much of that it allows (docs/policies.md helps choose):

``Policy.INTERLEAVE`` (the default, the seed's behaviour)
    Every input runs at once; a resumed handler sees the latest state.
``Policy.PER_KEY``
    ``key(input)`` names what an input touches: one key, ``Keys(k1, k2, ...)``
    for several, or ``None`` for none. An input holds all of its keys from
    its start to its reply; one whose keys are not all free waits, queued
    in arrival order on each of its keys. Inputs on disjoint keys interleave.
``Policy.EXCLUSIVE``
    One input at a time: the machine behaves like a plain sequential one.

The bug ``PER_KEY`` prevents is the lost update of a read-modify-write::

    async def handle(self, ctx, inp):          # inp = Incr("x")
        old = ctx.state.get(inp.key, 0)        # both increments read 0 ...
        await ctx.append(Set(inp.key, old + 1))  # ... suspend here ...
        return old + 1                         # ... and both write 1.

Under ``INTERLEAVE`` two concurrent ``Incr("x")`` can both read 0 and both
store 1; under ``PER_KEY`` with ``key = lambda inp: inp.key`` the second waits
for the first and stores 2. An input that reads or writes several keys (a
transfer between two accounts) returns ``Keys(inp.source, inp.target)``.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Hashable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from corosm.errors import UsageError

if TYPE_CHECKING:
    from corosm.core.context import Context

S = TypeVar("S")
I = TypeVar("I")
O = TypeVar("O")


class Policy(enum.Enum):
    """How inputs may interleave while handlers are suspended (see module docs)."""

    INTERLEAVE = "interleave"
    PER_KEY = "per_key"
    EXCLUSIVE = "exclusive"


class Order(enum.Enum):
    """How an input orders against earlier inputs of the same connection.

    Front ends promise read-your-writes per connection: an answer reflects
    every earlier write of that connection. The machine declares, once, which
    inputs need what (:meth:`Machine.order`), and every front end obeys it:

    ``LOGGED``
        A write whose outcome is decided when its journal record is applied,
        in log order (``await ctx.append(...)`` first, answer after). It may
        go to the machine while earlier writes still wait for their fsync.
    ``READ``
        Answers from the applied state without waiting for I/O. It waits
        until the connection's writes in flight are answered.
    ``WRITE``
        A write that may answer from the applied state at once (a delete of
        an absent key): it waits for earlier writes, and later reads wait
        for it. The safe choice for an input one knows nothing about.
    """

    LOGGED = "logged"
    READ = "read"
    WRITE = "write"


class Keys:
    """Several keys for one input, as :meth:`Machine.key` returns them.

    ``Keys(source, target)`` makes a ``PER_KEY`` input hold both keys for its
    whole run. Only a ``Keys`` means "several keys": any other value,
    a tuple or a frozenset included, is one key, so ``("user", 42)`` stays the
    single key it always was. ``None`` elements are dropped (the input touches
    nothing there), a ``Keys`` element is flattened into this one, and
    duplicates count once; ``Keys()`` with nothing left means no key at all.

    The keys keep the order given (first occurrence wins), never a hash order:
    the stepper hands freed keys on in that order, and string hashes change
    from one process to the next, which would make runs differ. Two ``Keys``
    are equal when they hold the same set of keys.
    """

    __slots__ = ("_keys",)

    def __init__(self, *keys: Hashable) -> None:
        # A plain loop: for the usual two or three keys it beats dict.fromkeys().
        unique: dict[Hashable, None] = {}  # insertion-ordered, and hashes every key now
        for key in keys:
            if type(key) is Keys:
                unique.update(dict.fromkeys(key._keys))
            elif key is not None:
                unique[key] = None
        # Read by the stepper directly: iterating it is on its hot path.
        self._keys: tuple[Hashable, ...] = tuple(unique)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __eq__(self, other: object) -> bool:
        if type(other) is not Keys:
            return NotImplemented
        return frozenset(self._keys) == frozenset(other._keys)

    def __hash__(self) -> int:
        return hash(frozenset(self._keys))

    def __repr__(self) -> str:
        return f"Keys({', '.join(map(repr, self._keys))})"


class Machine(Generic[S, I, O]):
    """Base class for coroutine state machines."""

    #: How inputs interleave while handlers are suspended.
    policy: Policy = Policy.INTERLEAVE
    #: True when :meth:`order` depends on the input's type alone (a table by
    #: type): the front ends then ask it once per type and remember. See
    #: :meth:`orders_by_type` for which ``order`` it speaks for.
    order_by_type: ClassVar[bool] = False

    def order(self, input: I) -> Order:
        """How ``input`` orders against the same connection's earlier inputs.

        The default, ``Order.WRITE``, is always safe; declaring reads
        ``READ`` and log-decided writes ``LOGGED`` lets pipelined inputs on
        one connection overlap. A machine whose answer depends on the
        input's type alone says so with ``order_by_type = True``.
        """
        return Order.WRITE

    def orders_by_type(self) -> bool:
        """True when :attr:`order_by_type` holds for the :meth:`order` this machine runs.

        The nearest class (along the MRO) that sets ``order_by_type`` or
        defines ``order`` decides: its flag if it sets one, else False. So a
        subclass that overrides ``order`` without declaring again is asked
        for every input, and one that only sets the flag speaks for the
        ``order`` it inherits.
        """
        for cls in type(self).__mro__:
            attrs = vars(cls)
            if "order_by_type" in attrs:
                return bool(attrs["order_by_type"])
            if "order" in attrs:
                return False
        return False

    def read(self, state: S, input: I) -> O:
        """Answer a ``READ`` input from ``state`` at once: no I/O, no change. Optional.

        A machine whose reads need no effects may define this, and have
        ``handle`` call it for those inputs (so the logic lives here only).
        A host may then answer a ``READ`` input with one plain call instead
        of a handler coroutine, under ``Policy.INTERLEAVE``: the outcome is
        the same (a handler that never awaits runs atomically), the cost a
        fraction. It must not change ``state``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define read()")

    def supports_read(self) -> bool:
        """True when the subclass defines :meth:`read`."""
        return type(self).read is not Machine.read

    def log(self, input: I) -> Any:
        """The one record ``input`` appends, when that is all it does; or None. Optional.

        With :meth:`logged`, the twin of :meth:`read` for writes. For an input
        whose handler would be exactly::

            await ctx.append(self.log(input))
            return self.logged(ctx.state, input)

        a host (under ``Policy.INTERLEAVE``) appends the record with no
        handler coroutine and, once it is durable and applied, answers
        ``logged(state, input)``: the same outcome, a fraction of the cost.
        Return None to run :meth:`handle` instead (an input that reads the
        state to decide, or appends nothing). A ``log`` that raises fails the
        input alone, as a handler would. It must not change anything.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define log()")

    def logged(self, state: S, input: I) -> O:
        """The output of an input :meth:`log` took, from the state just after its record.

        Called right after ``apply`` of that record, before any later record
        is applied (as a handler resumes), e.g. an outcome ``apply`` left in
        the state. It must not change ``state``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define logged()")

    def supports_log(self) -> bool:
        """True when the subclass defines both :meth:`log` and :meth:`logged`."""
        cls = type(self)
        return cls.log is not Machine.log and cls.logged is not Machine.logged

    def initial_state(self) -> S:
        """The state of a machine that has seen no input."""
        raise NotImplementedError(f"{type(self).__name__} must define initial_state()")

    async def handle(self, ctx: Context[S], input: I) -> O:
        """Process one input and return its output. Await effects through ``ctx``."""
        raise NotImplementedError(f"{type(self).__name__} must define handle()")

    def key(self, input: I) -> Keys | Hashable | None:
        """What ``input`` touches, for ``Policy.PER_KEY``.

        Return one hashable key, ``Keys(k1, k2, ...)`` when the input reads or
        writes several (each one is held), or ``None`` when it touches no
        keyed state and may always run. Name every key whose state the
        handler reads before a suspension and relies on after it. A ``key()``
        that raises, or returns something unhashable, fails that input alone.
        """
        raise NotImplementedError(f"{type(self).__name__} uses PER_KEY and must define key()")

    def apply(self, state: S, record: Any) -> S:
        """Apply one journal record to ``state`` and return the new state.

        Runs when an append completes and when recovery replays the journal:
        the same code in both, so a restarted machine has the live state.
        """
        raise NotImplementedError(f"{type(self).__name__} journals records and must define apply()")

    def apply_encoded(self, state: S, payloads: Iterator[bytes]) -> S:
        """Decode and apply journal records in order; what recovery runs. Optional.

        The default is ``state = apply(state, decode_record(payload))`` for
        each payload, and an override must have exactly that effect: it lets
        a machine apply a record straight from its bytes, without building
        the record object that ``apply`` would only take apart (recovery
        replays millions of them).

        Take the payloads one at a time, in order, and be done with each
        before taking the next (a plain ``for`` loop does): when this raises,
        recovery names the payload taken last as the one that failed. It
        decodes that payload again to tell a record that does not decode
        (``CorruptJournal``) from one that ``apply`` refused (``ApplyFailed``).
        """
        apply = self.apply
        decode = self.decode_record
        for payload in payloads:
            state = apply(state, decode(payload))
        return state

    def encode_record(self, record: Any) -> bytes:
        """Serialise a journal record. The default accepts ``bytes`` records only."""
        if isinstance(record, bytes | bytearray | memoryview):
            return bytes(record)
        raise TypeError(
            f"{type(self).__name__}.encode_record() got {type(record).__name__}; "
            "records must be bytes unless the machine defines encode_record()"
        )

    def decode_record(self, data: bytes) -> Any:
        """Inverse of :meth:`encode_record`."""
        return data

    def copy_state(self, state: S) -> S:
        """A copy of ``state`` that later changes to ``state`` do not affect.

        Called on the loop thread when a snapshot starts, so it must be cheap;
        :meth:`snapshot` then serialises the copy on a background thread. The
        default is a shallow ``copy.copy``, right for a dict of immutable values.
        If it raises, that snapshot fails as one whose :meth:`snapshot` raised:
        logged, tried again when the next one is due; inputs are not affected.
        """
        return copy.copy(state)

    def snapshot(self, state: S) -> bytes:
        """Serialise a state (a :meth:`copy_state` copy) for a snapshot file.

        Runs on a background thread. Snapshots are off unless this is defined.
        """
        raise NotImplementedError(f"{type(self).__name__} does not support snapshots")

    def restore(self, data: bytes) -> S:
        """Inverse of :meth:`snapshot`."""
        raise NotImplementedError(f"{type(self).__name__} does not support snapshots")

    def supports_snapshots(self) -> bool:
        """True when the subclass defines :meth:`snapshot` and :meth:`restore`."""
        cls = type(self)
        return cls.snapshot is not Machine.snapshot and cls.restore is not Machine.restore


def fresh_state(machine: Machine[S, Any, Any]) -> S:
    """``machine.initial_state()``; if it raises, a :class:`UsageError` that says whose.

    Where a host starts with no snapshot (a new stepper, recovery of a data
    directory without one): the machine's own error alone would not say
    which method failed, nor keep a server's start to one line.
    """
    try:
        return machine.initial_state()
    except Exception as exc:
        raise UsageError(
            f"{type(machine).__name__}.initial_state() raised {type(exc).__name__}: {exc}"
        ) from exc
