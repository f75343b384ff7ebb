"""The journal's control logic, thread-free: batches, durability, fail-stop, snapshots.

Theory of operation
-------------------
:class:`JournalControl` decides everything the journal decides; a driver
decides only *when* each step runs. Production's driver is one journal
thread (:class:`corosm.io.journal.writer.Journal`); the simulator's runs the
same steps as events of a virtual clock on a faulty disk. The steps::

    accept(entries)     queue appends, or refuse them once fail-stopped/closing
    take_batch()        everything queued (up to max_batch_records): one batch
    write(batch)        one write() of all its frames (LogWriter.flush_batch)
    finish(batch, r)    fdatasync as the mode says, then post the completions
                        in LSN order with one call: "always" posts only after
                        the fdatasync (persist first, acknowledge after)
    fail(batch, exc)    a write or fsync failed: the batch fails with
                        JournalError, then fail-stop: every queued and later
                        append fails with JournalClosed
    abort(exc)          the driver crashed mid-step (a bug): fail as above,
                        the batch being the one taken whose completions were
                        not yet posted (``in_flight``), so that each append
                        gets exactly one outcome
    snapshot_due()      the snapshot rule: enough records or bytes since the
                        last one, none running, journal healthy
    snapshot_start      a snapshot begins at an LSN (the segment rolls over)
    snapshot_write      its file: temp, fdatasync, rename, directory fsync
    snapshot_cleanup    drop the snapshots and segments it made redundant
    snapshot_done       it finished, or failed (which costs restart time only)

While a batch is written and synced, new appends queue and form the next
batch: the slower the disk, the bigger the batches (group commit).

The queue is the only state shared between threads in production: the
methods that touch it take ``lock`` (a ``threading.Lock`` there, nothing in
the simulator). Time comes from ``now`` (fsync latencies, the interval
mode): ``time.perf_counter`` in production, the virtual clock in simulation.
This module imports no threads, clocks or sockets (a test checks).
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from corosm._mypyc import mypyc_attr
from corosm.errors import JournalClosed, JournalError, UsageError
from corosm.io.journal.files import FileSystem
from corosm.io.journal.log import BatchResult, LogWriter
from corosm.io.journal.snapshot import remove_covered, write_snapshot

log = logging.getLogger("corosm.journal")

FsyncMode = Literal["always", "interval", "never"]
JournalCompletion = tuple[Any, int | None, BaseException | None]
JournalSink = Callable[[Sequence[JournalCompletion]], None]
Entry = tuple[Any, bytes]
"""``(token, payload)``: the token comes back in the completion."""


MAX_INTERVAL_MS: Final = 86_400_000
"""The longest ``fsync="interval"`` period: a day (far longer overflows a thread's wait)."""


@dataclass(frozen=True, slots=True)
class JournalOptions:
    """How the journal writes, syncs and snapshots. Checked when built."""

    fsync: FsyncMode = "always"
    interval_ms: int = 1000
    segment_bytes: int = 64 << 20
    max_batch_records: int = 65535  # a frame's index in its batch is exact below 65535 (format.py)
    snapshot_every_records: int = 1_000_000
    snapshot_every_bytes: int = 256 << 20

    @property
    def reserve(self) -> bool:
        """Whether segments are written over zeros reserved ahead (:mod:`~.files`).

        Only in ``always`` mode, where every batch is synced before the next
        is written: then a crash can tear only the last batch, in whatever
        order of its pages, which recovery tells from corruption (see
        :mod:`~.log` and :mod:`~.format`).
        """
        return self.fsync == "always"

    def __post_init__(self) -> None:
        if self.fsync not in ("always", "interval", "never"):
            raise UsageError(
                f"fsync mode must be 'always', 'interval' or 'never', got {self.fsync!r}"
            )
        for name in ("interval_ms", "segment_bytes", "max_batch_records"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"JournalOptions.{name} must be a positive int, got {value!r}")
        if self.interval_ms > MAX_INTERVAL_MS:  # longer, and the thread's wait overflows
            raise UsageError(
                f"JournalOptions.interval_ms must be at most {MAX_INTERVAL_MS} (a day), "
                f"got {self.interval_ms}"
            )
        for name in ("snapshot_every_records", "snapshot_every_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise UsageError(
                    f"JournalOptions.{name} must be an int >= 0 (0 turns this rule off), "
                    f"got {value!r}"
                )


@dataclass(frozen=True, slots=True)
class JournalStats:
    """Counters for /metrics and health. Latencies in seconds over recent fsyncs."""

    batches: int
    records: int
    bytes: int
    fsyncs: int
    fsync_seconds_total: float
    fsync_recent_p50: float
    fsync_recent_p99: float
    fsync_recent_max: float
    queued: int
    next_lsn: int
    snapshots: int
    failure: str | None


@mypyc_attr(allow_interpreted_subclasses=True)  # the simulator's mutants subclass it
class JournalControl:
    """The journal's decisions (see the module docs); ``deliver`` posts completions."""

    def __init__(
        self,
        writer: LogWriter,
        options: JournalOptions,
        deliver: JournalSink,
        *,
        now: Callable[[], float],
        lock: contextlib.AbstractContextManager[Any] | None = None,
        snapshot_lsn: int = 0,
        records_since_snapshot: int = 0,
    ) -> None:
        self.writer = writer
        self.options = options
        self.deliver = deliver
        self.now = now
        self.lock: contextlib.AbstractContextManager[Any] = lock or contextlib.nullcontext()
        self.queue: deque[Entry] = deque()
        # The batch taken whose completions are not posted yet: what abort() fails.
        self.in_flight: list[Entry] = []
        self.closing = False
        self.failure: BaseException | None = None
        self.committed_lsn = writer.next_lsn - 1
        # counters (written by the driver of the write steps only)
        self.batches = 0
        self.records = 0
        self.bytes = 0
        self.fsyncs = 0
        self.fsync_seconds_total = 0.0
        self.recent_fsyncs: deque[float] = deque(maxlen=1024)
        self.last_sync = 0.0
        # snapshots: the LSN of the newest one on disk, and what went by since it started
        self.snapshot_lsn = snapshot_lsn
        self.snapshot_running = False
        self.snapshots_written = 0
        self._snap_base_records = -records_since_snapshot
        self._snap_base_bytes = 0

    # -- lifecycle -------------------------------------------------------------------

    def open(self) -> None:
        """Start a fresh segment at the writer's next LSN; drop what the last snapshot covers."""
        self.writer.fs.makedirs(self.writer.directory)
        self.writer.open()
        self.last_sync = self.now()  # open() synced the new segment
        if self.snapshot_lsn:
            # A snapshot written just before the last stop could not drop the
            # segment being written then; now that a new one exists, it can.
            remove_covered(self.writer.fs, self.writer.directory, self.snapshot_lsn)

    def request_close(self) -> None:
        """Refuse new appends; the driver writes what is queued, then calls :meth:`close`."""
        with self.lock:
            self.closing = True

    def close(self) -> None:
        """Sync (unless failed) and close the segment."""
        try:
            self.writer.close(sync=self.failure is None)
        except OSError as exc:
            self.fail([], exc)

    # -- appending -------------------------------------------------------------------

    def accept(self, entries: Sequence[Entry]) -> bool:
        """Queue ``entries``; False (and each refused through ``deliver``) when closed."""
        with self.lock:
            if self.failure is None and not self.closing:
                self.queue.extend(entries)
                return True
        # One exception object per append: each is raised in its own handler.
        self.deliver([(token, None, self.refusal()) for token, _ in entries])
        return False

    def refusal(self) -> JournalClosed:
        """The error for an append that comes after a failure or a close."""
        directory = self.writer.directory
        if self.failure is not None:
            err = JournalClosed(f"journal {directory} failed earlier: {self.failure}")
            err.__cause__ = self.failure
            return err
        return JournalClosed(f"journal {directory} is closed")

    def take_batch(self) -> tuple[list[Entry], bool]:
        """The next batch (possibly empty) and whether the journal is closing."""
        limit = self.options.max_batch_records
        with self.lock:
            queue = self.queue
            if len(queue) <= limit:
                self.queue = deque()
                batch = list(queue)
            else:
                batch = [queue.popleft() for _ in range(limit)]
            self.in_flight = batch
            return batch, self.closing

    def commit(self, batch: list[Entry]) -> None:
        """Write ``batch`` and finish it: both steps at once, as the journal thread does."""
        result = self.write(batch)
        if result is not None:
            self.finish(batch, result)

    def write(self, batch: list[Entry]) -> BatchResult | None:
        """One write() of the batch's frames; None if it failed (and fail-stopped)."""
        try:
            return self.writer.flush_batch([payload for _, payload in batch], sync=False)
        except OSError as exc:
            self.fail(batch, exc)
            return None

    def finish(self, batch: list[Entry], result: BatchResult) -> None:
        """Make the batch as durable as the mode asks, then post its completions."""
        try:
            if self.sync_due():
                self.sync()
        except OSError as exc:
            self.fail(batch, exc)
            return
        self.committed_lsn = result.first_lsn + result.count - 1
        self.batches += 1
        self.records += result.count
        self.bytes += result.nbytes
        lsn = result.first_lsn
        self.in_flight = []  # posted now, even if deliver raises: abort() must not post again
        self.deliver([(token, lsn + i, None) for i, (token, _) in enumerate(batch)])

    def idle(self) -> None:
        """Nothing queued: in ``interval`` mode, sync what was written since the last sync."""
        if self.options.fsync != "interval":
            return
        try:
            self.sync()
        except OSError as exc:
            self.fail([], exc)  # acknowledged records may be lost: fail-stop

    def sync_due(self) -> bool:
        """Whether a batch just written must be synced before it is acknowledged."""
        mode = self.options.fsync
        if mode == "always":
            return True
        return mode == "interval" and self.now() - self.last_sync >= self.interval

    @property
    def interval(self) -> float:
        """Seconds between syncs in ``interval`` mode."""
        return self.options.interval_ms / 1000

    def wants_timed_sync(self) -> bool:
        """True when idle in ``interval`` mode with bytes not yet synced."""
        return self.options.fsync == "interval" and self.writer.unsynced_bytes > 0

    def sync(self) -> None:
        """fdatasync what was written, timing it for the metrics (raises OSError)."""
        if not self.writer.unsynced_bytes:
            return
        t0 = self.now()
        self.writer.sync()
        dt = self.now() - t0
        self.fsyncs += 1
        self.fsync_seconds_total += dt
        self.recent_fsyncs.append(dt)
        self.last_sync = t0 + dt

    def fail(self, batch: list[Entry], exc: OSError) -> None:
        """Fail ``batch`` with JournalError, then fail-stop: refuse everything after it."""
        self.in_flight = []  # its outcome is posted below
        with self.lock:
            first_failure = self.failure is None
            if first_failure:
                self.failure = exc
            leftover = list(self.queue)
            self.queue.clear()
            self.closing = True
        if first_failure:
            directory = self.writer.directory
            log.error("journal %s failed, refusing further appends: %s", directory, exc)
        errors: list[JournalCompletion] = []
        for token, _ in batch:
            err = JournalError(f"journal write failed, record not persisted: {exc}")
            err.__cause__ = exc
            errors.append((token, None, err))
        errors.extend((token, None, self.refusal()) for token, _ in leftover)
        if errors:
            self.deliver(errors)

    def abort(self, exc: BaseException) -> None:
        """The driver crashed on ``exc`` mid-step: fail the batch in flight, then fail-stop.

        The batch in flight is the one taken whose completions were not yet
        handed to ``deliver``; one whose completions were (``deliver``
        itself raised) is not failed again. Its appends get a
        :class:`JournalError` whose cause says the driver crashed on ``exc``.
        """
        crash = OSError(f"journal thread crashed: {exc!r}")
        crash.__cause__ = exc
        self.fail(self.in_flight, crash)

    # -- snapshots -------------------------------------------------------------------

    def snapshot_due(self) -> bool:
        """The snapshot rule: enough records or bytes since the last one, none running."""
        if self.failure is not None or self.snapshot_running:
            return False
        o = self.options
        records = self.records - self._snap_base_records
        nbytes = self.bytes - self._snap_base_bytes
        return (o.snapshot_every_records > 0 and records >= o.snapshot_every_records) or (
            o.snapshot_every_bytes > 0 and nbytes >= o.snapshot_every_bytes
        )

    def snapshot_start(self, lsn: int) -> bool:
        """A snapshot of the state as of ``lsn`` begins; False if one is running."""
        if lsn > self.committed_lsn:
            raise UsageError(
                f"snapshot at lsn {lsn} is ahead of the journal "
                f"(last committed {self.committed_lsn})"
            )
        if self.snapshot_running:
            return False
        self.snapshot_running = True
        self._snap_base_records = self.records
        self._snap_base_bytes = self.bytes
        self.writer.request_rotation()  # so that the segments before it can go sooner
        return True

    def snapshot_write(self, lsn: int, payload: bytes, fs: FileSystem | None = None) -> str:
        """Durably write the snapshot at ``lsn`` (temp, fsync, rename); return its path."""
        path = write_snapshot(fs or self.writer.fs, self.writer.directory, lsn, payload)
        self.snapshot_lsn = max(self.snapshot_lsn, lsn)
        self.snapshots_written += 1
        return path

    def snapshot_cleanup(self, lsn: int, fs: FileSystem | None = None) -> list[str]:
        """Remove the files the snapshot at ``lsn`` made redundant; return their names."""
        return remove_covered(fs or self.writer.fs, self.writer.directory, lsn)

    def snapshot_done(self, lsn: int, error: BaseException | None) -> None:
        """The snapshot at ``lsn`` is finished; ``error`` if it failed (costs time, not data)."""
        self.snapshot_running = False
        if error is not None:
            log.error("snapshot at lsn %d failed: %r", lsn, error)

    # -- metrics ---------------------------------------------------------------------

    def stats(self) -> JournalStats:
        recent = sorted(self.recent_fsyncs)

        def pct(p: float) -> float:
            return recent[min(len(recent) - 1, int(p * len(recent)))] if recent else 0.0

        return JournalStats(
            batches=self.batches,
            records=self.records,
            bytes=self.bytes,
            fsyncs=self.fsyncs,
            fsync_seconds_total=self.fsync_seconds_total,
            fsync_recent_p50=pct(0.5),
            fsync_recent_p99=pct(0.99),
            fsync_recent_max=recent[-1] if recent else 0.0,
            queued=len(self.queue),
            next_lsn=self.writer.next_lsn,
            snapshots=self.snapshots_written,
            failure=None if self.failure is None else str(self.failure),
        )
