"""The log writer: the single-threaded step of group commit, usable without a thread.

Theory of operation
-------------------
:class:`LogWriter` owns the open segment file. ``flush_batch(payloads)``
assigns the next LSNs, frames every payload into one buffer, appends it with
one ``write`` and, when asked, makes it durable with one ``fdatasync``: that
is the whole of group commit, minus the waiting. The journal thread
(:mod:`corosm.io.journal.writer`) calls it in a loop with everything that
queued meanwhile; the simulator can call it directly, step by step.

With ``reserve`` (the journal sets it in ``fsync="always"`` mode) a segment
is written over zeros set aside ahead of its records
(:mod:`~corosm.io.journal.files`): then a batch's sync flushes its data, not
the file's new size. Each batch is one write whose last frame is marked as
the end of the batch, and in ``always`` mode it is synced before the next
is written, so at most the last batch can be torn by a crash, in any order
of its pages; recovery knows the shape (:mod:`~corosm.io.journal.format`).

A new segment is started when the current one has grown past
``segment_bytes`` or when :meth:`request_rotation` was called (a snapshot
asks for that, so that older segments can be dropped sooner). Creating a
segment writes its header, syncs it and syncs the directory, so a record
acknowledged in a fresh segment cannot lose its file name in a crash.

Any OSError leaves the writer *broken*: the state of the file after a failed
write or fsync is unknown (after a failed fsync the page cache may already
have dropped the dirty pages), so it refuses further work. A segment that
could not even be started (:meth:`LogWriter.open`: a disk with no room for
its reserve) holds no record, so it is closed at once, its zeros cut, rather
than left for a close that a failed start never reaches.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

from corosm._mypyc import mypyc_attr
from corosm.errors import JournalClosed
from corosm.io.journal.files import FileHandle, FileSystem
from corosm.io.journal.format import JOURNAL_MAGIC, encode_frames, file_header, segment_name


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one ``flush_batch`` did: records ``first_lsn .. first_lsn+count-1``."""

    first_lsn: int
    count: int
    nbytes: int
    synced: bool


@mypyc_attr(allow_interpreted_subclasses=True)  # the simulator's mutants subclass it
class LogWriter:
    """Appends framed records to segment files in ``directory`` (see module docs)."""

    def __init__(
        self,
        fs: FileSystem,
        directory: str,
        next_lsn: int,
        segment_bytes: int = 64 << 20,
        *,
        reserve: bool = False,
    ) -> None:
        if next_lsn < 1:
            raise ValueError(f"next_lsn must be >= 1 (LSNs start at 1), got {next_lsn}")
        self.fs = fs
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.reserve = reserve
        self.next_lsn = next_lsn
        self.segment_first_lsn = next_lsn
        self.segment_size = 0
        self.unsynced_bytes = 0
        self.broken: OSError | None = None
        self._file: FileHandle | None = None
        self._rotate_requested = False

    @property
    def segment_path(self) -> str:
        return os.path.join(self.directory, segment_name(self.segment_first_lsn))

    def open(self) -> None:
        """Start the segment for ``next_lsn`` (replacing a record-less one of that name)."""
        self._guard()
        try:
            self._start_segment()
        except OSError as exc:
            self.broken = exc
            self._discard()  # nothing to sync: cut the reserved zeros, free the descriptor
            raise

    def request_rotation(self) -> None:
        """Start a new segment before the next batch (thread-safe: a flag)."""
        self._rotate_requested = True

    def flush_batch(self, payloads: Sequence[bytes], sync: bool = True) -> BatchResult:
        """Append ``payloads`` with one write (and one fdatasync if ``sync``)."""
        self._guard()
        first = self.next_lsn
        try:
            if self._rotate_requested or self.segment_size >= self.segment_bytes:
                self._rotate()
            data = encode_frames(payloads, first)
            assert self._file is not None
            self._file.write(data)
            self.next_lsn = first + len(payloads)
            self.segment_size += len(data)
            self.unsynced_bytes += len(data)
            if sync:
                self._sync()
        except OSError as exc:
            self.broken = exc
            raise
        return BatchResult(first, len(payloads), len(data), sync)

    def sync(self) -> None:
        """fdatasync the current segment if anything is unsynced."""
        self._guard()
        try:
            self._sync()
        except OSError as exc:
            self.broken = exc
            raise

    def close(self, sync: bool = True) -> None:
        """Sync (unless broken or told not to) and close the segment."""
        if self._file is None:
            return
        try:
            if sync and self.broken is None:
                self._sync()
        finally:
            self._file.close()
            self._file = None

    # -- internals -------------------------------------------------------------------
    def _discard(self) -> None:
        """Close the segment without a sync, ignoring a second failure (the first is raised)."""
        f, self._file = self._file, None
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()

    def _guard(self) -> None:
        if self.broken is not None:
            raise JournalClosed(f"journal writer failed earlier: {self.broken}") from self.broken

    def _sync(self) -> None:
        if self.unsynced_bytes and self._file is not None:
            self._file.fdatasync()
            self.unsynced_bytes = 0

    def _rotate(self) -> None:
        self._rotate_requested = False
        if self.next_lsn == self.segment_first_lsn:
            return  # the current segment is still empty: nothing to gain
        self.close(sync=True)
        self._start_segment()

    def _start_segment(self) -> None:
        self.segment_first_lsn = self.next_lsn
        f = self.fs.create(self.segment_path, reserve=self.reserve)
        self._file = f
        f.write(file_header(JOURNAL_MAGIC))
        f.fdatasync()
        self.fs.fsync_dir(self.directory)
        self.segment_size = len(file_header(JOURNAL_MAGIC))
        self.unsynced_bytes = 0
