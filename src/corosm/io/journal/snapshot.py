"""Snapshots: write one safely off the loop, find the newest valid one, drop old files.

Theory of operation
-------------------
A snapshot of the state as of LSN ``L`` (every record <= ``L`` applied) is
written as ``snapshot-<L>.snap.tmp``, fsynced, renamed to
``snapshot-<L>.snap`` and the directory fsynced: a crash leaves either the
old set of files or the new one, never half a snapshot under the real name.
Only then are older snapshots removed, and every segment whose records are
all <= ``L`` (the *next* segment starts at or before ``L + 1``). Recovery
skips records <= ``L``, so a segment partly covered by the snapshot is kept
and read.

:class:`SnapshotJob` runs all of that on its own short-lived thread, so
neither the loop nor the journal thread waits for serialisation or for the
snapshot's fsync. One snapshot at a time.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Callable

from corosm.errors import CorruptJournal
from corosm.io.journal.files import FileSystem
from corosm.io.journal.format import (
    TEMP_SUFFIX,
    decode_snapshot,
    encode_snapshot,
    parse_segment_name,
    parse_snapshot_name,
    snapshot_name,
)

log = logging.getLogger("corosm.journal")


def write_snapshot(fs: FileSystem, directory: str, lsn: int, payload: bytes) -> str:
    """Durably write the snapshot of ``payload`` at ``lsn``; return its path."""
    final = os.path.join(directory, snapshot_name(lsn))
    temp = final + TEMP_SUFFIX
    f = fs.create(temp)
    try:
        f.write(encode_snapshot(lsn, payload))
        f.fdatasync()
    finally:
        f.close()
    fs.rename(temp, final)
    fs.fsync_dir(directory)
    return final


def remove_covered(fs: FileSystem, directory: str, lsn: int) -> list[str]:
    """Remove snapshots older than ``lsn`` and segments whose records are all <= ``lsn``.

    The last segment is never removed (it may be the one being written).
    Returns the names removed.
    """
    names = fs.listdir(directory)
    segments = sorted((first, n) for n in names if (first := parse_segment_name(n)) is not None)
    removed = [
        name
        for (_first, name), (next_first, _) in itertools.pairwise(segments)
        if next_first <= lsn + 1
    ]
    removed += [n for n in names if (s := parse_snapshot_name(n)) is not None and s < lsn]
    for name in removed:
        fs.remove(os.path.join(directory, name))
    if removed:
        fs.fsync_dir(directory)
    return removed


def load_newest_snapshot(fs: FileSystem, directory: str) -> tuple[str, int, bytes] | None:
    """``(path, lsn, payload)`` of the newest snapshot that checks out, or None.

    A damaged snapshot is reported and skipped in favour of an older one;
    whether the journal still covers the gap is checked by replay.
    """
    found = sorted(
        ((lsn, n) for n in fs.listdir(directory) if (lsn := parse_snapshot_name(n)) is not None),
        reverse=True,
    )
    for _lsn, name in found:
        path = os.path.join(directory, name)
        try:
            lsn, payload = decode_snapshot(path, fs.read(path))
        except CorruptJournal as exc:
            log.error("skipping damaged snapshot: %s", exc)
            continue
        return path, lsn, payload
    return None


class SnapshotJob:
    """Writes at most one snapshot at a time on a background thread."""

    def __init__(self, fs: FileSystem, directory: str) -> None:
        self.fs = fs
        self.directory = directory
        self.completed = 0
        self.last_error: BaseException | None = None
        self.last_path: str | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, lsn: int, produce: Callable[[], bytes]) -> bool:
        if self.running:
            return False
        self._thread = threading.Thread(
            target=self._run, args=(lsn, produce), name="corosm-snapshot", daemon=True
        )
        self._thread.start()
        return True

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def _run(self, lsn: int, produce: Callable[[], bytes]) -> None:
        try:
            payload = produce()
            self.last_path = write_snapshot(self.fs, self.directory, lsn, payload)
            removed = remove_covered(self.fs, self.directory, lsn)
        except Exception as exc:  # a failed snapshot costs restart time, not data
            self.last_error = exc
            log.error("snapshot at lsn %d failed: %r", lsn, exc)
            return
        self.completed += 1
        log.info("snapshot at lsn %d written; removed %d old file(s)", lsn, len(removed))
