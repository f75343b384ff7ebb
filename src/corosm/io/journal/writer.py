"""The journal's production driver: one thread that runs the group-commit steps.

Theory of operation
-------------------
What the journal decides (what a batch is, when it is durable, fail-stop,
when a snapshot is due) lives in :class:`~.control.JournalControl`, which has
no threads; the simulator drives the very same object. This module only
decides *when*. Callers hand ``(token, payload)`` pairs to
:meth:`Journal.submit`; the journal thread loops:

1. wait until something is queued (in ``interval`` mode, at most one interval
   while unsynced bytes are waiting, then sync them);
2. ``take_batch``: *everything* queued is the next batch;
3. ``commit``: one write and, in ``always`` mode, one fdatasync for all of
   it, then the batch's completions ``(token, lsn, None)`` in one sink call.

While step 3 runs, new appends pile up and form the next batch: the slower
the disk, the bigger the batches (group commit, as in Redis's
``beforeSleep``: persist first, acknowledge after). A snapshot is written on
a short-lived thread of its own, so that neither the loop nor the journal
thread waits for serialisation or for the snapshot's fsync.

Tokens are opaque to the journal, except the internal waiters of the
blocking :meth:`Journal.append`, which are woken directly.

An exception the steps do not handle (a bug, or a file system raising
something other than ``OSError``) crashes the thread, which logs it and
fail-stops (:meth:`~.control.JournalControl.abort`): the appends of the
batch it was writing fail with :class:`~corosm.errors.JournalError`, unless
their completions had already been handed to the sink (the sink raised),
and every queued or later one with :class:`~corosm.errors.JournalClosed`.
No caller is left waiting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from corosm.errors import JournalError, UsageError
from corosm.io.journal.control import (
    FsyncMode,
    JournalCompletion,
    JournalControl,
    JournalOptions,
    JournalSink,
    JournalStats,
)
from corosm.io.journal.files import FileSystem, OSFileSystem
from corosm.io.journal.format import check_records
from corosm.io.journal.lock import DirLock
from corosm.io.journal.log import LogWriter

log = logging.getLogger("corosm.journal")

__all__ = [
    "FsyncMode",
    "Journal",
    "JournalCompletion",
    "JournalOptions",
    "JournalSink",
    "JournalStats",
]


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
        lock: DirLock | None = None,
    ) -> None:
        self.options = options or JournalOptions()
        self._dir_lock = lock  # released by close(), once nothing can write any more
        self.fs: FileSystem = fs or OSFileSystem()
        self.directory = directory
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        options = self.options
        writer = LogWriter(
            self.fs, directory, next_lsn, options.segment_bytes, reserve=options.reserve
        )
        self.control = JournalControl(
            writer,
            self.options,
            self._deliver,
            now=time.perf_counter,
            lock=self._lock,
            snapshot_lsn=snapshot_lsn,
            records_since_snapshot=records_since_snapshot,
        )
        self._sink: JournalSink | None = None
        self._thread: threading.Thread | None = None
        self._snapshot_thread: threading.Thread | None = None
        # Blocking appends not yet woken (under _lock): while 0, _deliver has no
        # _Waiter to look for and hands a batch's completions to the sink as is.
        self._waiters = 0

    # -- lifecycle -----------------------------------------------------------------
    def start(self, sink: JournalSink | None = None) -> None:
        """Open a new segment at ``next_lsn`` and start the journal thread."""
        if self._thread is not None:
            raise UsageError("Journal.start() was called twice")
        self._sink = sink
        self.control.open()
        self._thread = threading.Thread(target=self._run, name="corosm-journal", daemon=True)
        self._thread.start()

    def close(self, timeout: float | None = 30.0) -> None:
        """Write and sync what is queued, stop the thread, wait for a running snapshot."""
        self.control.request_close()
        with self._cond:
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        snapshot_done = self.wait_snapshot(timeout)
        writing = self._thread is not None and self._thread.is_alive()
        # A thread still writing keeps the directory locked (until process exit).
        if self._dir_lock is not None and snapshot_done and not writing:
            self._dir_lock.release()

    def __enter__(self) -> Journal:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def failure(self) -> BaseException | None:
        """Why the journal stopped accepting appends, or None while it is healthy."""
        return self.control.failure

    @property
    def committed_lsn(self) -> int:
        """LSN of the last record written (and synced, in ``always`` mode)."""
        return self.control.committed_lsn

    @property
    def snapshot_lsn(self) -> int:
        """LSN of the newest snapshot on disk, 0 if none."""
        return self.control.snapshot_lsn

    # -- appending -----------------------------------------------------------------
    def submit(self, entries: Sequence[tuple[Any, bytes]]) -> None:
        """Queue ``(token, payload)`` pairs, in order; each payload is ``bytes``.

        Bad entries raise :class:`UsageError` here, in the caller's thread, and
        none of ``entries`` is queued: the journal thread only sees records it
        can write.
        """
        self._check_entries(entries)
        if self.control.accept(entries):
            with self._cond:
                self._cond.notify()

    def _check_entries(self, entries: Sequence[tuple[Any, bytes]]) -> None:
        """Refuse, in the caller's thread, records the journal thread could not write."""
        if self._sink is None and not all(isinstance(t, _Waiter) for t, _ in entries):
            raise UsageError("Journal.submit() needs a sink: pass one to start(), or use append()")
        check_records(entries)  # compiled: once per record, on the loop

    def append(self, payload: bytes | bytearray | memoryview, timeout: float | None = None) -> int:
        """Append one record and block until it is acknowledged; return its LSN.

        A ``bytearray`` or ``memoryview`` is copied to ``bytes`` first; anything
        else raises :class:`UsageError`.
        """
        if isinstance(payload, bytearray | memoryview):
            payload = bytes(payload)
        waiter = _Waiter()
        entries = [(waiter, payload)]
        self._check_entries(entries)  # before the waiter is counted
        with self._lock:  # counted before the waiter can reach the journal thread
            self._waiters += 1
        self.submit(entries)
        if not waiter.event.wait(timeout):
            raise JournalError(f"append not acknowledged within {timeout} s")
        if waiter.error is not None:
            raise waiter.error
        assert waiter.lsn is not None
        return waiter.lsn

    # -- the journal thread ----------------------------------------------------------
    def _run(self) -> None:
        control = self.control
        try:
            while True:
                self._wait_for_work()
                batch, closing = control.take_batch()
                if batch:
                    control.commit(batch)
                else:
                    control.idle()
                if closing and not batch:
                    break
        except BaseException as exc:  # a bug here must not leave appenders waiting forever
            # Logged with its traceback, and each append's error says it: not raised again.
            log.exception("journal thread crashed")
            control.abort(exc)
        finally:
            control.close()

    def _wait_for_work(self) -> None:
        control = self.control
        with self._cond:
            while not control.queue and not control.closing:
                if control.wants_timed_sync():
                    self._cond.wait(control.interval)
                    return  # time for a periodic sync
                self._cond.wait()

    def _deliver(self, completions: Sequence[JournalCompletion]) -> None:
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
        return self.control.snapshot_due()

    def start_snapshot(self, lsn: int, produce: Callable[[], bytes]) -> bool:
        """Write a snapshot of the state as of ``lsn`` on a background thread.

        ``produce`` runs on that thread and returns the serialised state (call
        ``copy_state`` on the loop first, then let ``produce`` serialise the
        copy). Returns False if a snapshot is already being written.
        """
        if not self.control.snapshot_start(lsn):
            return False
        self._snapshot_thread = threading.Thread(
            target=self._write_snapshot, args=(lsn, produce), name="corosm-snapshot", daemon=True
        )
        self._snapshot_thread.start()
        return True

    def _write_snapshot(self, lsn: int, produce: Callable[[], bytes]) -> None:
        control = self.control
        error: BaseException | None = None
        try:
            control.snapshot_write(lsn, produce())
            removed = control.snapshot_cleanup(lsn)
            log.info("snapshot at lsn %d written; removed %d old file(s)", lsn, len(removed))
        except Exception as exc:
            error = exc
        control.snapshot_done(lsn, error)

    def wait_snapshot(self, timeout: float | None = None) -> bool:
        """Wait for a running snapshot to finish; True if none is running afterwards."""
        thread = self._snapshot_thread
        if thread is not None:
            thread.join(timeout)
        return not self.control.snapshot_running

    # -- metrics -------------------------------------------------------------------
    def stats(self) -> JournalStats:
        return self.control.stats()
