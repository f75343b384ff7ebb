"""The simulated journal: real frames on a faulty in-memory disk, group commit in virtual time.

Theory of operation
-------------------
Appends queue up; when the journal is idle the next *batch* (everything that
queued meanwhile) is written with one ``write`` through the journal's own
:class:`~corosm.io.journal.log.LogWriter` onto a
:class:`~corosm.io.journal.files.FaultyFS`, and made durable by one
``fdatasync`` a random while later. Only then are the batch's completions
delivered, in LSN order: the real journal's promise. So the bytes on the
simulated disk are exactly the bytes the real journal would write, and a crash
(``FaultyFS.crash``) leaves exactly what a power cut would, for the real
recovery code to read.

Before each write or fsync the seeded random generator may inject an error
(EIO, or ENOSPC after a short write). The batch then fails with
:class:`~corosm.errors.JournalError`, and the journal *fail-stops*: every
later append fails with :class:`~corosm.errors.JournalClosed` until the world
restarts the process. The :class:`~.faults.Sabotage` switches break these
rules on purpose.
"""

from __future__ import annotations

import errno
import random
from collections.abc import Callable
from typing import Any

from corosm.core.machine import Machine
from corosm.errors import JournalClosed, JournalError
from corosm.io.journal.files import FaultyFS
from corosm.io.journal.log import LogWriter
from corosm.testing.sim.faults import FaultPlan, Sabotage
from corosm.testing.sim.trace import Trace, show_error

Completion = tuple[int, Any, BaseException | None]
Deliver = Callable[[list[Completion]], None]
Schedule = Callable[[float, object], None]

JOURNAL_DIR = "/sim/journal"


class JournalWrite:
    """Clock event: the journal writes its next batch."""

    __slots__ = ("generation",)

    def __init__(self, generation: int) -> None:
        self.generation = generation


class JournalSynced:
    """Clock event: the fdatasync of the batch in flight returns."""

    __slots__ = ("generation",)

    def __init__(self, generation: int) -> None:
        self.generation = generation


class SimJournal:
    """One process lifetime's journal (a restart makes a new one on the same disk)."""

    def __init__(
        self,
        *,
        fs: FaultyFS,
        machine: Machine[Any, Any, Any],
        next_lsn: int,
        generation: int,
        rng: random.Random,
        plan: FaultPlan,
        sabotage: Sabotage,
        trace: Trace,
        now: Callable[[], float],
        schedule: Schedule,
        deliver: Deliver,
    ) -> None:
        self.fs = fs
        self.machine = machine
        self.generation = generation
        self._rng, self._plan, self._sabotage = rng, plan, sabotage
        self._trace, self._now, self._schedule, self._deliver = trace, now, schedule, deliver
        self.writer = LogWriter(fs, JOURNAL_DIR, next_lsn)
        self.writer.open()
        self._queued: list[tuple[int, bytes]] = []
        self._inflight: list[tuple[int, int]] = []  # (request, lsn) of the batch being synced
        self._busy = False
        self.failed: BaseException | None = None
        self.last_write_size = 0  # bytes of the newest write not yet synced (for tearing)

    def submit(self, request: int, record: Any) -> None:
        """Queue ``Append(record)`` made as ``request``."""
        if self.failed is not None:
            error = JournalClosed(f"the journal fail-stopped earlier: {show_error(self.failed)}")
            self._deliver([(request, None, error)])
            return
        try:
            payload = self.machine.encode_record(record)
        except Exception as exc:
            self._deliver([(request, None, exc)])
            return
        self._queued.append((request, payload))
        self._kick()

    def _kick(self) -> None:
        if not self._busy and self._queued:
            self._busy = True
            delay = self._rng.uniform(*self._plan.write_latency)
            self._schedule(delay, JournalWrite(self.generation))

    def on_write(self) -> None:
        """Write the queued batch with one ``write``."""
        batch, self._queued = self._queued, []
        first = self.writer.next_lsn
        self._maybe_inject_write(sum(len(p) for _, p in batch))
        try:
            result = self.writer.flush_batch([p for _, p in batch], sync=False)
        except OSError as exc:
            self._fail([r for r, _ in batch], "write", exc)
            return
        self.last_write_size = result.nbytes
        self._inflight = [(request, first + i) for i, (request, _) in enumerate(batch)]
        last = first + len(batch) - 1
        text = f"write lsn {first}..{last} ({result.nbytes} bytes, not yet durable)"
        self._trace.add(self._now(), "journal", text)
        if self._sabotage.ack_before_fsync:
            self._deliver_batch()  # BUG on purpose: acknowledged before it is durable
        self._schedule(self._rng.uniform(*self._plan.fsync_latency), JournalSynced(self.generation))

    def on_synced(self) -> None:
        """The batch's fdatasync returns: deliver its completions in LSN order."""
        plan = self._plan
        if self._rng.random() < plan.fsync_error_probability:
            self.fs.inject("fdatasync", errno.EIO)
        try:
            self.writer.sync()
        except OSError as exc:
            self._fail([r for r, _ in self._inflight], "fdatasync", exc)
            return
        self.last_write_size = 0
        self._trace.add(self._now(), "journal", "fdatasync ok")
        self._deliver_batch()
        self._busy = False
        self._kick()

    def _deliver_batch(self) -> None:
        batch, self._inflight = self._inflight, []
        if self._sabotage.reorder_journal_completions:
            self._rng.shuffle(batch)  # BUG on purpose: not log order
        if batch:
            self._deliver([(request, lsn, None) for request, lsn in batch])

    def _maybe_inject_write(self, size: int) -> None:
        rng, plan = self._rng, self._plan
        if rng.random() < plan.write_error_probability:
            self.fs.inject("write", errno.EIO)
        elif rng.random() < plan.enospc_probability:
            self.fs.inject("write", errno.ENOSPC, partial=rng.randrange(size + 1))

    def _fail(self, requests: list[int], op: str, exc: OSError) -> None:
        """A write or fsync failed: fail the batch, then fail-stop."""
        self.failed = exc
        self._inflight = []
        self._busy = False
        self._trace.add(self._now(), "journal", f"FAULT {op} failed: {show_error(exc)}; fail-stop")
        errors: list[Completion] = []
        for request in requests:
            error = JournalError(f"journal {op} failed: {show_error(exc)}")
            error.__cause__ = exc
            errors.append((request, None, error))
        queued, self._queued = self._queued, []
        closed = JournalClosed("the journal fail-stopped")
        errors.extend((request, None, closed) for request, _ in queued)
        self._deliver(errors)
