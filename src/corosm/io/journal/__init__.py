"""The durable journal: framing, group commit, recovery, snapshots, fault injection.

Typical use by a host::

    rec = recover(directory, machine)                 # before serving
    journal = Journal(directory, next_lsn=rec.next_lsn,
                      records_since_snapshot=rec.report.records_replayed)
    executor = JournalExecutor(journal, machine.encode_record)
    executor.start(sink)                              # opens a segment, starts the thread
    ...
    if journal.snapshot_due():                        # on the loop, after applying lsn L
        copy = machine.copy_state(state)
        journal.start_snapshot(L, lambda: machine.snapshot(copy))

Modules: :mod:`.format` (bytes on disk), :mod:`.files` (file-system protocol,
``OSFileSystem``, ``FaultyFS``), :mod:`.log` (``LogWriter``, one batch's write and
sync), :mod:`.control` (``JournalControl``, the journal's decisions, thread-free),
:mod:`.writer` (``Journal``, the thread that drives them), :mod:`.snapshot`,
:mod:`.recovery`, :mod:`.executor`, :mod:`.lock` (one journal per directory).
The format is described in ``docs/journal-format.md``.
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

from corosm.core.machine import Machine
from corosm.io.journal.control import (
    FsyncMode,
    JournalCompletion,
    JournalControl,
    JournalOptions,
    JournalSink,
    JournalStats,
)
from corosm.io.journal.executor import JournalExecutor
from corosm.io.journal.files import FaultyFS, FileHandle, FileSystem, OSFileSystem
from corosm.io.journal.lock import DirLock, directory_path
from corosm.io.journal.log import BatchResult, LogWriter
from corosm.io.journal.recovery import Damage, Recovered, RecoveryReport, recover
from corosm.io.journal.snapshot import write_snapshot
from corosm.io.journal.writer import Journal

S = TypeVar("S")


def open_journal(
    directory: str | os.PathLike[str],
    machine: Machine[S, Any, Any],
    *,
    options: JournalOptions | None = None,
    fs: FileSystem | None = None,
    truncate_corrupt: bool = False,
) -> tuple[Journal, Recovered[S]]:
    """Recover ``directory`` and return a journal (not yet started) that continues it.

    On the real file system the directory is locked first (:mod:`.lock`):
    a directory another open journal holds raises
    :class:`~corosm.errors.DataDirInUse` before anything is read, and the
    journal keeps the lock until it is closed.

    This is where every data directory is opened (``corosm.open``, ``corosm
    serve``, a shard): a path that names no directory (empty, not a path) is
    a :class:`~corosm.errors.UsageError`, one the disk will not let be a
    data directory (a file, a dangling symbolic link, no write permission)
    a :class:`~corosm.errors.DataError` saying what was expected (:mod:`.lock`).
    """
    directory = directory_path(directory)
    lock = DirLock.acquire(directory) if fs is None or isinstance(fs, OSFileSystem) else None
    try:
        rec = recover(directory, machine, fs=fs, truncate_corrupt=truncate_corrupt)
        journal = Journal(
            directory,
            next_lsn=rec.next_lsn,
            options=options,
            fs=fs,
            records_since_snapshot=rec.report.records_replayed,
            snapshot_lsn=rec.report.snapshot_lsn,
            lock=lock,
        )
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return journal, rec


__all__ = [
    "BatchResult",
    "Damage",
    "DirLock",
    "FaultyFS",
    "FileHandle",
    "FileSystem",
    "FsyncMode",
    "Journal",
    "JournalCompletion",
    "JournalControl",
    "JournalExecutor",
    "JournalOptions",
    "JournalSink",
    "JournalStats",
    "LogWriter",
    "OSFileSystem",
    "Recovered",
    "RecoveryReport",
    "open_journal",
    "recover",
    "write_snapshot",
]
