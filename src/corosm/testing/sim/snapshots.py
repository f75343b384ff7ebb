"""Snapshots in the simulated world, taken the way the real server takes them.

Theory of operation
-------------------
The server (``corosm.server``) checks ``journal.snapshot_due()`` (enough
records since the last snapshot), copies the state on the loop with
``machine.copy_state``, asks the journal to rotate its segment, and lets a
background job serialise the copy, ``write_snapshot`` it (temp file, fsync,
rename, directory fsync) and then ``remove_covered`` (older snapshots and
segments it makes redundant). The world does the same in three steps, each a
clock event, so a crash can fall between them: :class:`SnapshotJob` holds the
copy between the steps.

The file work runs the real functions of :mod:`corosm.io.journal.snapshot`
on :class:`CrashingFS`, a thin proxy of the world's ``FaultyFS`` that raises
:class:`CrashNow` just before its ``n``-th file-changing call: that is a
crash *in the middle* of writing the snapshot or of removing old files (after
the rename but before the directory fsync, say), which the world then turns
into a real crash of its disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from corosm.io.journal.files import FileHandle, FileSystem


class CrashNow(Exception):
    """Raised by :class:`CrashingFS` where the world must crash; ``what`` is the call."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


@dataclass(frozen=True, slots=True)
class SnapshotJob:
    """A snapshot in progress: the state as of ``lsn``, copied when it was started."""

    generation: int
    lsn: int
    state: Any


class CrashingFS:
    """``fs``, except that the ``crash_at``-th file-changing call raises :class:`CrashNow`."""

    def __init__(self, fs: FileSystem, crash_at: int | None) -> None:
        self._fs = fs
        self._left = crash_at

    def _tick(self, what: str, path: str) -> None:
        if self._left is None:
            return
        if self._left == 0:
            raise CrashNow(f"{what} {path}")
        self._left -= 1

    def makedirs(self, path: str) -> None:
        self._fs.makedirs(path)

    def listdir(self, path: str) -> list[str]:
        return self._fs.listdir(path)

    def create(self, path: str) -> FileHandle:
        self._tick("create", path)
        return _CrashingHandle(self, path, self._fs.create(path))

    def read(self, path: str) -> bytes:
        return self._fs.read(path)

    def truncate(self, path: str, size: int) -> None:
        self._tick("truncate", path)
        self._fs.truncate(path, size)

    def rename(self, src: str, dst: str) -> None:
        self._tick("rename", src)
        self._fs.rename(src, dst)

    def remove(self, path: str) -> None:
        self._tick("remove", path)
        self._fs.remove(path)

    def fsync_dir(self, path: str) -> None:
        self._tick("fsync_dir", path)
        self._fs.fsync_dir(path)


class _CrashingHandle:
    __slots__ = ("_fs", "_inner", "_path")

    def __init__(self, fs: CrashingFS, path: str, inner: FileHandle) -> None:
        self._fs, self._path, self._inner = fs, path, inner

    def write(self, data: bytes) -> None:
        self._fs._tick("write", self._path)
        self._inner.write(data)

    def fdatasync(self) -> None:
        self._fs._tick("fdatasync", self._path)
        self._inner.fdatasync()

    def close(self) -> None:
        self._inner.close()
