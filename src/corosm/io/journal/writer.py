"""The journal: one thread that group-commits appends, plus snapshot scheduling.

Theory of operation
-------------------
Callers hand ``(token, payload)`` pairs to :meth:`Journal.submit`; one lock
operation puts the whole list in the inbox. The journal thread loops:

1. take *everything* in the inbox (waiting if it is empty);
2. ``LogWriter.flush_batch``: one write and, in ``always`` mode, one
   fdatasync for all of it; LSNs are given in inbox order, so appends
   complete in the order they were submitted;
3. post the batch's completions ``(token, lsn, None)`` with one sink call.

While step 2 runs, new appends pile up in the inbox and form the next batch:
the slower the disk, the bigger the batches (group commit, as in Redis's
``beforeSleep``: persist first, acknowledge after).

Modes: ``always`` acknowledges after fdatasync; ``interval`` acknowledges
after write() and fsyncs at most every ``interval_ms`` (also when idle);
``never`` leaves flushing to the OS. A write or fsync error fails the batch
with :class:`JournalError` (cause chained) and makes the journal fail-stop:
every later append fails at once with :class:`JournalClosed`, and
:attr:`Journal.failure` says why (for health checks).

Tokens are opaque to the journal, except the internal waiters of the
blocking :meth:`Journal.append`, which are woken directly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from corosm.errors import JournalClosed, JournalError, UsageError
from corosm.io.journal.files import FileSystem, OSFileSystem
from corosm.io.journal.format import MAX_RECORD_BYTES
from corosm.io.journal.log import LogWriter
from corosm.io.journal.snapshot import SnapshotJob, remove_covered

log = logging.getLogger("corosm.journal")

FsyncMode = Literal["always", "interval", "never"]
JournalCompletion = tuple[Any, int | None, BaseException | None]
JournalSink = Callable[[Sequence[JournalCompletion]], None]


@dataclass(frozen=True, slots=True)
class JournalOptions:
    """How the journal writes, syncs and snapshots. Checked when built."""

    fsync: FsyncMode = "always"
    interval_ms: int = 1000
    segment_bytes: int = 64 << 20
    max_batch_records: int = 65536
    snapshot_every_records: int = 1_000_000
    snapshot_every_bytes: int = 256 << 20

    def __post_init__(self) -> None:
        if self.fsync not in ("always", "interval", "never"):
            raise UsageError(
                f"fsync mode must be 'always', 'interval' or 'never', got {self.fsync!r}"
            )
        for name in ("interval_ms", "segment_bytes", "max_batch_records"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"JournalOptions.{name} must be a positive int, got {value!r}")
        for name in ("snapshot_every_records", "snapshot_every_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise UsageError(
                    f"JournalOptions.{name} must be an int >= 0 (0 = never), got {value!r}"
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


class _Waiter:
    """The token of a blocking append."""

    __slots__ = ("error", "event", "lsn")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.lsn: int | None = None
        self.error: BaseException | None = None


class Journal:
    """A group-committing, fail-stop journal in ``directory`` (see module docs).

    Open it at the ``next_lsn`` that recovery returned; ``start(sink)`` opens a
    fresh segment and starts the thread.
    """

    def __init__(
        self,
        directory: str,
        *,
        next_lsn: int = 1,
        options: JournalOptions | None = None,
        fs: FileSystem | None = None,
        records_since_snapshot: int = 0,
        snapshot_lsn: int = 0,
    ) -> None:
        self.options = options or JournalOptions()
        self.snapshot_lsn = snapshot_lsn  # of the snapshot recovery loaded, 0 if none
        self.fs: FileSystem = fs or OSFileSystem()
        self.directory = directory
        self._writer = LogWriter(self.fs, directory, next_lsn, self.options.segment_bytes)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._inbox: deque[tuple[Any, bytes]] = deque()
        self._closing = False
        self._failure: BaseException | None = None
        self._sink: JournalSink | None = None
        self._thread: threading.Thread | None = None
        self._committed_lsn = next_lsn - 1
        # Blocking appends not yet woken (under _lock): while 0, _deliver has no
        # _Waiter to look for and hands a batch's completions to the sink as is.
        self._waiters = 0
        # counters (written by the journal thread only)
        self.batches = 0
        self.records = 0
        self.bytes = 0
        self.fsyncs = 0
        self.fsync_seconds_total = 0.0
        self.recent_fsyncs: deque[float] = deque(maxlen=1024)
        self._last_sync = 0.0
        # snapshot scheduling: counted since the last snapshot started
        self._snap_base_records = -records_since_snapshot
        self._snap_base_bytes = 0
        self._snapshot = SnapshotJob(self.fs, directory)

    # -- lifecycle -----------------------------------------------------------------
    def start(self, sink: JournalSink | None = None) -> None:
        """Open a new segment at ``next_lsn`` and start the journal thread."""
        if self._thread is not None:
            raise UsageError("Journal.start() was called twice")
        self._sink = sink
        self.fs.makedirs(self.directory)
        self._writer.open()
        self._last_sync = time.perf_counter()  # open() synced the new segment
        if self.snapshot_lsn:
            # A snapshot written just before the last stop could not drop the
            # segment being written then; now that a new one exists, it can.
            remove_covered(self.fs, self.directory, self.snapshot_lsn)
        self._thread = threading.Thread(target=self._run, name="corosm-journal", daemon=True)
        self._thread.start()

    def close(self, timeout: float | None = 30.0) -> None:
        """Write and sync what is queued, stop the thread, wait for a running snapshot."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        self._snapshot.wait(timeout)

    def __enter__(self) -> Journal:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def failure(self) -> BaseException | None:
        """Why the journal stopped accepting appends, or None while it is healthy."""
        return self._failure

    @property
    def committed_lsn(self) -> int:
        """LSN of the last record written (and synced, in ``always`` mode)."""
        return self._committed_lsn

    # -- appending -----------------------------------------------------------------
    def submit(self, entries: Sequence[tuple[Any, bytes]]) -> None:
        """Queue ``(token, payload)`` pairs, in order, with one lock operation."""
        self._check_entries(entries)
        with self._cond:
            if self._refusal() is None:
                self._inbox.extend(entries)
                self._cond.notify()
                return
        # One exception object per append: each is raised in its own handler.
        self._deliver([(token, None, self._refusal()) for token, _ in entries])

    def _check_entries(self, entries: Sequence[tuple[Any, bytes]]) -> None:
        if self._sink is None and not all(isinstance(t, _Waiter) for t, _ in entries):
            raise UsageError("Journal.submit() needs a sink: pass one to start(), or use append()")
        for _token, payload in entries:
            if len(payload) > MAX_RECORD_BYTES:
                raise UsageError(
                    f"journal record of {len(payload)} bytes exceeds {MAX_RECORD_BYTES}"
                )

    def append(self, payload: bytes, timeout: float | None = None) -> int:
        """Append one record and block until it is acknowledged; return its LSN."""
        waiter = _Waiter()
        with self._lock:  # counted before the waiter can reach the journal thread
            self._waiters += 1
        self.submit([(waiter, payload)])
        if not waiter.event.wait(timeout):
            raise JournalError(f"append not acknowledged within {timeout} s")
        if waiter.error is not None:
            raise waiter.error
        assert waiter.lsn is not None
        return waiter.lsn

    def _refusal(self) -> JournalClosed | None:
        if self._failure is not None:
            err = JournalClosed(f"journal {self.directory} failed earlier: {self._failure}")
            err.__cause__ = self._failure
            return err
        if self._closing:
            return JournalClosed(f"journal {self.directory} is closed")
        return None

    # -- the journal thread ----------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                batch, closing = self._take_batch()
                if batch:
                    self._commit(batch)
                elif self.options.fsync == "interval":
                    try:
                        self._timed_sync()
                    except OSError as exc:
                        self._fail([], exc)  # acknowledged records may be lost: fail-stop
                if closing and not batch:
                    break
        except BaseException as exc:  # a bug here must not leave appenders waiting forever
            log.exception("journal thread crashed")
            self._fail([], OSError(f"journal thread crashed: {exc!r}"))
            raise
        finally:
            try:
                self._writer.close(sync=self._failure is None)
            except OSError as exc:
                self._fail([], exc)

    def _take_batch(self) -> tuple[list[tuple[Any, bytes]], bool]:
        limit = self.options.max_batch_records
        with self._cond:
            while not self._inbox and not self._closing:
                if self.options.fsync == "interval" and self._writer.unsynced_bytes:
                    self._cond.wait(self.options.interval_ms / 1000)
                    break  # time for a periodic sync
                self._cond.wait()
            inbox = self._inbox
            if len(inbox) <= limit:
                self._inbox = deque()
                return list(inbox), self._closing
            return [inbox.popleft() for _ in range(limit)], self._closing

    def _commit(self, batch: list[tuple[Any, bytes]]) -> None:
        always = self.options.fsync == "always"
        payloads = [payload for _, payload in batch]
        try:
            t0 = time.perf_counter()
            result = self._writer.flush_batch(payloads, sync=False)
            if always:
                self._timed_sync()
            elif self.options.fsync == "interval":
                self._maybe_interval_sync(t0)
        except OSError as exc:
            self._fail(batch, exc)
            return
        self._committed_lsn = result.first_lsn + result.count - 1
        self.batches += 1
        self.records += result.count
        self.bytes += result.nbytes
        lsn = result.first_lsn
        self._deliver([(token, lsn + i, None) for i, (token, _) in enumerate(batch)])

    def _timed_sync(self) -> None:
        if not self._writer.unsynced_bytes:
            return
        t0 = time.perf_counter()
        self._writer.sync()
        dt = time.perf_counter() - t0
        self.fsyncs += 1
        self.fsync_seconds_total += dt
        self.recent_fsyncs.append(dt)
        self._last_sync = t0 + dt

    def _maybe_interval_sync(self, now: float) -> None:
        if now - self._last_sync >= self.options.interval_ms / 1000:
            self._timed_sync()

    def _fail(self, batch: list[tuple[Any, bytes]], exc: OSError) -> None:
        """Fail ``batch`` with JournalError, then fail-stop: refuse everything after it."""
        with self._cond:
            first_failure = self._failure is None
            if first_failure:
                self._failure = exc
            leftover = list(self._inbox)
            self._inbox.clear()
            self._closing = True
        if first_failure:
            log.error("journal %s failed, refusing further appends: %s", self.directory, exc)
        errors: list[JournalCompletion] = []
        for token, _ in batch:
            err = JournalError(f"journal write failed, record not persisted: {exc}")
            err.__cause__ = exc
            errors.append((token, None, err))
        errors.extend((token, None, self._refusal()) for token, _ in leftover)
        if errors:
            self._deliver(errors)

    def _deliver(self, completions: list[JournalCompletion]) -> None:
        """Wake blocking appenders; pass everything else to the sink in one call."""
        if not self._waiters:  # the runtime's case: no token to pick out
            if completions and self._sink is not None:
                self._sink(completions)
            return
        others: list[JournalCompletion] = []
        woken = 0
        for item in completions:
            token = item[0]
            if isinstance(token, _Waiter):
                token.lsn, token.error = item[1], item[2]
                token.event.set()
                woken += 1
            else:
                others.append(item)
        with self._lock:
            self._waiters -= woken
        if others and self._sink is not None:  # submit() refuses other tokens without a sink
            self._sink(others)

    # -- snapshots -----------------------------------------------------------------
    def snapshot_due(self) -> bool:
        """True when enough records or bytes went by since the last snapshot."""
        if self._failure is not None or self._snapshot.running:
            return False
        o = self.options
        recs = self.records - self._snap_base_records
        nbytes = self.bytes - self._snap_base_bytes
        return (o.snapshot_every_records > 0 and recs >= o.snapshot_every_records) or (
            o.snapshot_every_bytes > 0 and nbytes >= o.snapshot_every_bytes
        )

    def start_snapshot(self, lsn: int, produce: Callable[[], bytes]) -> bool:
        """Write a snapshot of the state as of ``lsn`` on a background thread.

        ``produce`` runs on that thread and returns the serialised state (call
        ``copy_state`` on the loop first, then let ``produce`` serialise the
        copy). Returns False if a snapshot is already being written.
        """
        if lsn > self._committed_lsn:
            raise UsageError(
                f"snapshot at lsn {lsn} is ahead of the journal "
                f"(last committed {self._committed_lsn})"
            )
        if self._snapshot.running:
            return False
        self._snap_base_records = self.records
        self._snap_base_bytes = self.bytes
        self._writer.request_rotation()  # so the segments before it can go sooner
        return self._snapshot.start(lsn, produce)

    def wait_snapshot(self, timeout: float | None = None) -> bool:
        """Wait for a running snapshot to finish; True if none is running afterwards."""
        return self._snapshot.wait(timeout)

    # -- metrics -------------------------------------------------------------------
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
            queued=len(self._inbox),
            next_lsn=self._writer.next_lsn,
            snapshots=self._snapshot.completed,
            failure=None if self._failure is None else str(self._failure),
        )
