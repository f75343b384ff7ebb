"""Crashes in the middle of a snapshot step, for the simulated world.

Theory of operation
-------------------
The host decides when a snapshot is due and copies the state; the journal's
control writes it and then removes what it covers (see
:mod:`corosm.io.journal.control`). The simulator runs those very steps as
clock events (:mod:`.journal`), so a crash can fall between them; to crash
*inside* one, the step runs on :class:`CrashingFS`, a thin proxy of the
world's ``FaultyFS`` that raises
:class:`CrashNow` just before its ``n``-th file-changing call: that is a
crash *in the middle* of writing the snapshot or of removing old files (after
the rename but before the directory fsync, say), which the world then turns
into a real crash of its disk.
"""

from __future__ import annotations

from corosm.io.journal.files import FileHandle, FileSystem


class CrashNow(Exception):
    """Raised by :class:`CrashingFS` where the world must crash; ``what`` is the call."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


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

    def is_regular_file(self, path: str) -> bool:
        return self._fs.is_regular_file(path)

    def create(self, path: str, *, reserve: bool = False) -> FileHandle:
        self._tick("create", path)
        return _CrashingHandle(self, path, self._fs.create(path, reserve=reserve))

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
