"""One journal per data directory: an exclusive lock held while a journal is open.

Two journals appending to one directory overwrite each other's segments, and
both acknowledge writes that the other then destroys. So opening a journal
takes ``flock(LOCK_EX | LOCK_NB)`` on the directory's ``LOCK`` file before
recovery reads anything, and holds it until the journal is closed. The kernel
drops the lock when its process dies (``kill -9`` included), so no stale lock
is ever left behind to clean up; the file itself stays, holding the pid of
the last process that took it, which names the holder when a second open is
refused. The lock is per open file, so a second journal in the same process
is refused too.

Where ``fcntl`` does not exist (Windows), no lock is taken.
"""

from __future__ import annotations

import errno
import os
import sys

from corosm.errors import DataDirInUse

if sys.platform != "win32":
    import fcntl

LOCK_NAME = "LOCK"


class DirLock:
    """The exclusive lock on one data directory (see the module docs)."""

    __slots__ = ("_fd", "path")

    def __init__(self, path: str, fd: int | None) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def acquire(cls, directory: str) -> DirLock:
        """Lock ``directory`` (created if missing), or raise :class:`DataDirInUse`."""
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, LOCK_NAME)
        if sys.platform == "win32":  # pragma: no cover - no flock there
            return cls(path, None)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise DataDirInUse(directory, holder, this_process=holder == os.getpid()) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Unlock (idempotent). The file stays: removing it would race a new holder."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor drops the flock


def _read_holder(fd: int) -> int | None:
    """The pid the holder wrote into the lock file, if it reads as one."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None
