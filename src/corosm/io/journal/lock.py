"""Opening a data directory: its path checked, the directory made, and one journal's lock.

A data directory's path is the caller's to give and the disk's to honour, so
opening one refuses with an error that says what was wrong and what was
expected, never with a bare ``FileExistsError``:

* a path that names no directory at all (empty, not a ``str`` or
  ``os.PathLike[str]``, a NUL in it) is a :class:`~corosm.errors.UsageError`
  (:func:`directory_path`);
* a path the disk will not let be a data directory (a file there or in the
  way of its parents, a dangling or looping symbolic link, no permission to
  write, a read-only file system, a name too long) is a
  :class:`~corosm.errors.DataError` (:func:`make_directory`), the
  ``OSError`` chained as its cause. Only the failure is examined: opening a
  good directory costs one ``makedirs``, as before.
  :func:`check_directory_path` says the same of what is in the way (a file,
  a link that leads nowhere) without making anything, for a caller that
  checks a path before it starts the processes that will open it.

A disk that is full or failing (ENOSPC, EIO) stays an ``OSError`` naming
its file: it is no fault of the path.

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
import stat
import sys

from corosm.errors import DataDirInUse, DataError, UsageError

if sys.platform != "win32":
    import fcntl

LOCK_NAME = "LOCK"

EXPECTED = "a data directory must be a directory, or a path where one can be created"
WRITABLE = "the journal needs a directory it may create and write files in"


class DirLock:
    """The exclusive lock on one data directory (see the module docs)."""

    __slots__ = ("_fd", "path")

    def __init__(self, path: str, fd: int | None) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def acquire(cls, directory: str) -> DirLock:
        """Lock ``directory`` (created if missing), or raise :class:`DataDirInUse`.

        A directory that cannot be made or written is a :class:`DataError`
        saying why (module docs).
        """
        make_directory(directory)
        path = os.path.join(directory, LOCK_NAME)
        if sys.platform == "win32":  # pragma: no cover - no flock there
            return cls(path, None)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            problem = _cannot_write(directory, exc)
            if problem is None:
                raise
            raise DataError(problem) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise DataDirInUse(directory, holder, this_process=holder == os.getpid()) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:  # a full disk: let the lock go, and name the file
            os.close(fd)
            raise OSError(exc.errno, exc.strerror, path) from exc
        return cls(path, fd)

    def release(self) -> None:
        """Unlock (idempotent). The file stays: removing it would race a new holder."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor drops the flock


def directory_path(data_dir: object) -> str:
    """``data_dir`` as a ``str``, or a :class:`UsageError` if it cannot name a directory.

    Empty is refused rather than read as the current directory (an unset
    variable would put the journal wherever the process happens to run).
    """
    path = os.fspath(data_dir) if isinstance(data_dir, (str, os.PathLike)) else None
    if not isinstance(path, str):
        got = f"{type(data_dir).__name__} {data_dir!r:.80}"
        raise UsageError(f"a data directory must be a str or os.PathLike[str] path, got {got}")
    if not path:
        raise UsageError("the data directory's path is empty: give one ('.' for the current one)")
    if "\0" in path:
        raise UsageError(f"the data directory's path {path!r:.200} holds a NUL character")
    return path


def make_directory(directory: str) -> None:
    """Create ``directory`` and its parents if missing; a :class:`DataError` if it cannot be one."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        problem = _cannot_make(directory, exc)
        if problem is None:
            raise
        raise DataError(problem) from exc


def check_directory_path(directory: str) -> None:
    """The :class:`DataError` :func:`make_directory` raises when something is in the way.

    Read-only: it creates nothing, and looks only for what is in the way of
    ``directory`` (itself or a parent that exists but is no directory). What
    only an attempt shows (no permission, a read-only file system) is left to
    :func:`make_directory`.
    """
    problem = _blocked(directory)
    if problem is not None:
        raise DataError(problem)


def _cannot_make(directory: str, exc: OSError) -> str | None:
    """Why ``makedirs(directory)`` failed, for the operator; None for a disk fault."""
    where = _where(directory)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"{where} cannot be created or entered: {exc.strerror} on {exc.filename!r}; {WRITABLE}"
        )
    if exc.errno == errno.EROFS:
        return (
            f"{where} cannot be created: {exc.filename!r} is on a read-only file system; {WRITABLE}"
        )
    if exc.errno == errno.ENAMETOOLONG:
        return f"{where}: a name in the path is too long for its file system ({exc.strerror})"
    if exc.errno not in (errno.EEXIST, errno.ENOTDIR, errno.ELOOP, errno.ENOENT):
        return None
    # With nothing in the way to name (it changed meanwhile), the system's word.
    return _blocked(directory) or f"{where} cannot be created: {exc.strerror}; {EXPECTED}"


def _blocked(directory: str) -> str | None:
    """What is in the way of ``directory`` being a directory, for the operator; None if nothing."""
    try:
        blocker, what = _in_the_way(directory)
    except OSError:  # it changed while we looked (a link removed): nothing to name
        return None
    if blocker is None:
        return None
    where = _where(directory)
    if blocker == directory.rstrip(os.sep):
        return f"{where} is {what}; {EXPECTED}"
    return f"{where} cannot be created: {blocker!r} is {what}, not a directory; {EXPECTED}"


def _where(directory: str) -> str:
    return f"data directory {directory!r}"


def _in_the_way(directory: str) -> tuple[str | None, str]:
    """The nearest of ``directory`` and its parents that exists but is no directory, and what it is.

    Walks up from the directory itself; stops, naming nothing, at the first
    real directory. Read-only (lstat, stat, readlink).
    """
    path = directory.rstrip(os.sep) or directory
    while True:
        what = _what_is(path)
        if what is not None:
            return (path, what) if what else (None, "")
        parent = os.path.dirname(path)
        if parent in ("", path):
            return None, ""
        path = parent


def _what_is(path: str) -> str | None:
    """What ``path`` is, if not a directory; "" for a directory; None if nothing is there."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:  # missing, or a parent is no directory or loops: look further up
        return None
    if stat.S_ISLNK(mode):
        try:
            target = os.stat(path).st_mode
        except FileNotFoundError:
            return f"a symbolic link to {os.readlink(path)!r}, which does not exist"
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return f"a symbolic link that loops ({exc.strerror})"
            return f"a symbolic link that cannot be followed ({exc.strerror})"
        return "" if stat.S_ISDIR(target) else f"a symbolic link to {_kind(target)}"
    return "" if stat.S_ISDIR(mode) else _kind(mode)


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a directory"


def _cannot_write(directory: str, exc: OSError) -> str | None:
    """Why the lock file cannot be opened, for the operator; None for a disk fault."""
    where = _where(directory)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{where} is not writable: {exc.strerror} creating {LOCK_NAME!r} in it; {WRITABLE}"
    if exc.errno == errno.EROFS:
        return f"{where} is on a read-only file system; {WRITABLE}"
    if exc.errno == errno.EISDIR:
        return (
            f"{where} holds a directory named {LOCK_NAME!r}, the name of corosm's lock file: "
            "move it away"
        )
    return None


def _read_holder(fd: int) -> int | None:
    """The pid the holder wrote into the lock file, if it reads as one."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None
