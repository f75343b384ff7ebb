"""Virtual time: a clock that never waits, and the queue of things due on it.

Theory of operation
-------------------
The simulated world has no wall clock. Everything that will happen later (a
client sending its next input, an I/O finishing, the journal's fsync
returning, a restart) is an entry in one priority queue keyed by virtual time.
The world pops the earliest entry, sets ``now`` to its time and handles it;
when nothing is due, time simply *jumps* to the next entry, so a 5 s client
timeout costs nothing to simulate. Ties are broken by insertion order (a
counter), never by comparing the events, so runs are deterministic.
"""

from __future__ import annotations

import heapq
from typing import Generic, TypeVar

from corosm.errors import UsageError

E = TypeVar("E")


class VirtualClock(Generic[E]):
    """Virtual seconds since the start of a run, and the events scheduled on them."""

    __slots__ = ("_counter", "_queue", "now")

    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, E]] = []
        self._counter = 0

    def schedule(self, delay: float, event: E) -> None:
        """Make ``event`` due ``delay`` virtual seconds from now."""
        if not delay >= 0.0:  # also rejects NaN
            raise UsageError(f"cannot schedule an event {delay!r} s in the past")
        self._counter += 1
        heapq.heappush(self._queue, (self.now + delay, self._counter, event))

    def pop(self) -> E | None:
        """Advance to the earliest due event and return it; None when nothing is left."""
        if not self._queue:
            return None
        when, _, event = heapq.heappop(self._queue)
        self.now = max(self.now, when)
        return event

    def __len__(self) -> int:
        return len(self._queue)
