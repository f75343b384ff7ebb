"""The simulator's driver of the real journal: its steps as events of a virtual clock.

Theory of operation
-------------------
Production runs :class:`~corosm.io.journal.control.JournalControl` on one
journal thread (:class:`corosm.io.journal.writer.Journal`). This driver runs
the very same object, on a :class:`~corosm.io.journal.files.FaultyFS`, one
step per clock event, so that time passes (and a crash can land) between
the steps:

* appends are accepted as they are submitted; when the journal is idle, a
  :class:`JournalWrite` event is scheduled a random while later;
* ``JournalWrite``: ``take_batch`` then ``write`` (one write of every frame
  queued meanwhile; the bytes are not yet durable);
* ``JournalSynced`` a random while later: ``finish``, which fdatasyncs and
  posts the batch's completions in LSN order (or fails the batch and
  fail-stops). Then the next batch, if any.

Before a write or an fsync the seeded generator may inject an error (EIO, or
ENOSPC after a short write) into the disk: the control's own fail-stop
handles it. Snapshots run the control's snapshot steps as events too
(:class:`SnapshotWrite`, :class:`SnapshotCleanup`), on a
:class:`~.snapshots.CrashingFS` that can crash the world in the middle of a
step. Nothing here decides what the journal does: only when.
"""

from __future__ import annotations

import errno
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from corosm.io.journal.control import (
    Entry,
    JournalCompletion,
    JournalControl,
    JournalOptions,
    JournalSink,
    JournalStats,
)
from corosm.io.journal.files import FaultyFS
from corosm.io.journal.format import check_records
from corosm.io.journal.log import BatchResult, LogWriter
from corosm.testing.sim.faults import FaultPlan
from corosm.testing.sim.snapshots import CrashingFS
from corosm.testing.sim.trace import Trace, show_error

Schedule = Callable[[float, object], None]

JOURNAL_DIR = "/sim/journal"


@dataclass(frozen=True, slots=True)
class JournalWrite:
    """Clock event: the journal writes its next batch."""

    generation: int


@dataclass(frozen=True, slots=True)
class JournalSynced:
    """Clock event: the fdatasync of the batch just written returns."""

    generation: int
    batch: list[Entry]
    result: BatchResult


@dataclass(frozen=True, slots=True)
class SnapshotWrite:
    """Clock event: the snapshot at ``lsn`` is serialised and written."""

    generation: int
    lsn: int
    produce: Callable[[], bytes]


@dataclass(frozen=True, slots=True)
class SnapshotCleanup:
    """Clock event: the files the snapshot at ``lsn`` made redundant are removed."""

    generation: int
    lsn: int


class SimJournal:
    """One process lifetime's journal (a restart makes a new one on the same disk)."""

    def __init__(
        self,
        *,
        fs: FaultyFS,
        next_lsn: int,
        generation: int,
        rng: random.Random,
        plan: FaultPlan,
        trace: Trace,
        now: Callable[[], float],
        schedule: Schedule,
        snapshot_lsn: int = 0,
        records_since_snapshot: int = 0,
        control_class: type[JournalControl] = JournalControl,
        log_writer_class: type[LogWriter] = LogWriter,
    ) -> None:
        self.fs = fs
        self.generation = generation
        self._rng, self._plan, self._trace = rng, plan, trace
        self._now, self._schedule = now, schedule
        options = JournalOptions(
            fsync="always",
            snapshot_every_records=plan.snapshot_every_records,
            snapshot_every_bytes=0,
        )
        self.control = control_class(
            log_writer_class(fs, JOURNAL_DIR, next_lsn, reserve=options.reserve),
            options,
            self._deliver,
            now=now,
            snapshot_lsn=snapshot_lsn,
            records_since_snapshot=records_since_snapshot,
        )
        self.control.open()
        self._sink: JournalSink | None = None
        self._busy = False
        self.last_write_size = 0  # bytes of the newest write not yet synced (for tearing)

    # -- what JournalExecutor needs (the production Journal's interface) ----------------

    def start(self, sink: JournalSink) -> None:
        self._sink = sink

    def submit(self, entries: Sequence[Entry]) -> None:
        check_records(entries)  # the production journal's refusal, in the same place
        if self.control.accept(entries):
            self._kick()

    def close(self) -> None:
        self.control.request_close()

    @property
    def failure(self) -> BaseException | None:
        return self.control.failure

    def stats(self) -> JournalStats:
        return self.control.stats()

    # -- what the host needs for snapshots ------------------------------------------------

    def snapshot_due(self) -> bool:
        return self.control.snapshot_due()

    def start_snapshot(self, lsn: int, produce: Callable[[], bytes]) -> bool:
        if not self.control.snapshot_start(lsn):
            return False
        self._trace.add(self._now(), "journal", f"snapshot at lsn {lsn} started")
        delay = self._rng.uniform(*self._plan.fsync_latency)
        self._schedule(delay, SnapshotWrite(self.generation, lsn, produce))
        return True

    # -- the steps, one clock event each ------------------------------------------------------

    def on_write(self) -> None:
        """Write the queued batch with one ``write``."""
        batch, _closing = self.control.take_batch()
        if not batch:
            self._busy = False
            return
        self._maybe_inject_write(sum(len(p) for _, p in batch))
        result = self.control.write(batch)
        if result is None:  # failed: the control failed the batch and fail-stopped
            self._busy = False
            self._trace.add(self._now(), "journal", "FAULT write failed; fail-stop")
            return
        self.last_write_size = result.nbytes
        last = result.first_lsn + result.count - 1
        text = f"write lsn {result.first_lsn}..{last} ({result.nbytes} bytes, not yet durable)"
        self._trace.add(self._now(), "journal", text)
        delay = self._rng.uniform(*self._plan.fsync_latency)
        self._schedule(delay, JournalSynced(self.generation, batch, result))

    def on_synced(self, batch: list[Entry], result: BatchResult) -> None:
        """The batch's fdatasync returns: the control finishes the batch."""
        if self._rng.random() < self._plan.fsync_error_probability:
            self.fs.inject("fdatasync", errno.EIO)
        self.control.finish(batch, result)
        if self.control.failure is None:
            self.last_write_size = 0
            self._trace.add(self._now(), "journal", "fdatasync ok")
        else:
            self._trace.add(self._now(), "journal", "FAULT fdatasync failed; fail-stop")
        self._busy = False
        self._kick()

    def on_snapshot_write(self, event: SnapshotWrite, crash_at: int | None) -> None:
        """Serialise and write the snapshot (may raise CrashNow in the middle)."""
        payload = event.produce()
        try:
            self.control.snapshot_write(event.lsn, payload, fs=CrashingFS(self.fs, crash_at))
        except OSError as exc:
            self._trace.add(self._now(), "journal", f"snapshot at lsn {event.lsn} failed: {exc}")
            self.control.snapshot_done(event.lsn, exc)
            return
        what = f"snapshot at lsn {event.lsn} written ({len(payload)} bytes)"
        self._trace.add(self._now(), "journal", what)
        delay = self._rng.uniform(*self._plan.fsync_latency)
        self._schedule(delay, SnapshotCleanup(self.generation, event.lsn))

    def on_snapshot_cleanup(self, event: SnapshotCleanup, crash_at: int | None) -> None:
        """Remove what the snapshot made redundant (may raise CrashNow in the middle)."""
        try:
            removed = self.control.snapshot_cleanup(event.lsn, fs=CrashingFS(self.fs, crash_at))
        except OSError as exc:
            self._trace.add(self._now(), "journal", f"removing covered files failed: {exc}")
            self.control.snapshot_done(event.lsn, exc)
            return
        self.control.snapshot_done(event.lsn, None)
        names = ", ".join(sorted(removed)) or "nothing"
        self._trace.add(self._now(), "journal", f"snapshot at lsn {event.lsn}: removed {names}")

    # -- internals ------------------------------------------------------------------------

    def _kick(self) -> None:
        if not self._busy and self.control.queue:
            self._busy = True
            delay = self._rng.uniform(*self._plan.write_latency)
            self._schedule(delay, JournalWrite(self.generation))

    def _deliver(self, completions: Sequence[JournalCompletion]) -> None:
        now, trace = self._now(), self._trace
        for request, lsn, error in completions:
            result = f"lsn {lsn}" if error is None else f"ERROR {show_error(error)}"
            trace.add(now, "journal", f"#{request} appended: {result}")
        if self._sink is not None and completions:
            self._sink(completions)

    def _maybe_inject_write(self, size: int) -> None:
        rng, plan = self._rng, self._plan
        if rng.random() < plan.write_error_probability:
            self.fs.inject("write", errno.EIO)
        elif rng.random() < plan.enospc_probability:
            self.fs.inject("write", errno.ENOSPC, partial=rng.randrange(size + 1))
