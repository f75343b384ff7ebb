"""One caller's inputs on one shard, in the caller's order: per batch, then per key.

Theory of operation
-------------------
A caller sends a shard its inputs in numbered batches, several in flight at
once. Ray does not run an async actor's calls in the order they were made,
so :class:`Sequencer` puts a caller's batches back in number order: a batch
that comes early waits until every earlier one has started. When the caller
starts a new session (after it lost a call, see :mod:`.client`), the host
abandons the old session's early batches: they never run.

Starting a batch hands its inputs, in order, to the caller's
:class:`CallerGate`, which keeps the promise a front end keeps per
connection (:class:`corosm.core.Order`), but per key: inputs on disjoint keys
never wait for each other. On each key, inputs start in the caller's order;
a ``READ`` or ``WRITE`` input also waits until the caller's earlier
``LOGGED``/``WRITE`` inputs on that key have been answered (a read must see
them; a delete must not decide "absent" before an earlier write applies).
A ``LOGGED`` input starts as soon as it is first in line: the host admits
inputs in the order they are offered, so its journal record follows the
earlier ones on the key.

Both are pure and synchronous: the shard host feeds them and calls back.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from corosm.core.machine import Order
from corosm.errors import InternalError

T = TypeVar("T")


class Sequencer(Generic[T]):
    """Puts one caller's batches back in the order it numbered them (0, 1, 2, ...)."""

    __slots__ = ("_early", "next")

    def __init__(self) -> None:
        self.next = 0
        self._early: dict[int, T] = {}

    @property
    def waiting(self) -> int:
        """Batches that arrived before an earlier one."""
        return len(self._early)

    def arrive(self, seq: int, batch: T) -> list[T]:
        """Batch ``seq`` arrived: return the batches to start now, in order (maybe none)."""
        if seq < self.next or seq in self._early:
            raise InternalError(f"batch {seq} arrived twice (next expected: {self.next})")
        if seq != self.next:
            self._early[seq] = batch
            return []
        ready = [batch]
        self.next += 1
        while (follow := self._early.pop(self.next, None)) is not None:
            ready.append(follow)
            self.next += 1
        return ready

    def abandon(self) -> list[T]:
        """Give up on the batches still waiting for an earlier one (they never start)."""
        early = [self._early[seq] for seq in sorted(self._early)]
        self._early.clear()
        return early


class Ticket:
    """One input at the gate: its keys, what it waits for, and how to start it."""

    __slots__ = ("barrier", "keys", "start", "waits")

    def __init__(self, keys: tuple[Hashable, ...], order: Order, start: Callable[[], None]):
        self.keys = keys
        #: Later reads and deletes on these keys wait until this one is answered.
        self.barrier = order is not Order.READ
        #: This one waits until earlier barriers on its keys are answered.
        self.waits = order is not Order.LOGGED
        self.start = start


class _Line:
    """One key: tickets not started yet, and started barriers not answered yet."""

    __slots__ = ("held", "open_barriers")

    def __init__(self) -> None:
        self.held: deque[Ticket] = deque()
        self.open_barriers = 0


class CallerGate:
    """Starts one caller's inputs in its order per key (see the module docs)."""

    __slots__ = ("_lines",)

    def __init__(self) -> None:
        self._lines: dict[Hashable, _Line] = {}

    @property
    def held(self) -> int:
        """Tickets waiting (a ticket on several keys counts once per key)."""
        return sum(len(line.held) for line in self._lines.values())

    def offer(self, ticket: Ticket) -> None:
        """A new input, after every earlier one of this caller: start it or hold it."""
        lines = self._lines
        for key in ticket.keys:
            line = lines.get(key)
            if line is None:
                line = lines[key] = _Line()
            line.held.append(ticket)
        if self._ready(ticket):
            self._start(ticket)

    def answered(self, ticket: Ticket) -> None:
        """``ticket``'s input was answered: start the inputs that waited for it."""
        if not ticket.barrier:
            return
        lines = self._lines
        for key in ticket.keys:
            line = lines[key]
            line.open_barriers -= 1
            if line.open_barriers == 0 and not line.held:
                del lines[key]
        self._release(list(ticket.keys))

    def _ready(self, ticket: Ticket) -> bool:
        for key in ticket.keys:
            line = self._lines[key]
            if line.held[0] is not ticket or (ticket.waits and line.open_barriers):
                return False
        return True

    def _start(self, ticket: Ticket) -> None:
        lines = self._lines
        for key in ticket.keys:
            line = lines[key]
            line.held.popleft()
            if ticket.barrier:
                line.open_barriers += 1
            elif not line.held and not line.open_barriers:
                del lines[key]
        ticket.start()

    def _release(self, keys: list[Hashable]) -> None:
        """Start every ticket now first in line on ``keys`` and free to go, and so on."""
        while keys:
            line = self._lines.get(keys.pop())
            if line is None or not line.held:
                continue
            head = line.held[0]
            if self._ready(head):
                self._start(head)
                keys.extend(head.keys)
