"""The file-system layer under the journal: a small protocol, a real and a faulty one.

Theory of operation
-------------------
The journal touches files only through :class:`FileSystem`, so tests and the
simulator can swap the operating system for :class:`FaultyFS`, an in-memory
model of what a POSIX file system promises about durability:

* Each file has its *visible* bytes (what ``read`` returns: the page cache)
  and its *durable* bytes (what survives a crash). ``fdatasync`` makes the
  visible bytes durable.
* A directory has visible and durable entries. Creating, renaming or
  removing a file changes the visible entries only; ``fsync_dir`` makes them
  durable. A file whose name was never made durable is gone after a crash,
  even if its data was synced.
* ``crash()`` throws away everything not durable. ``crash(tear=k)`` keeps the
  first ``k`` unsynced bytes of the most recent write, to model a write torn
  by power loss; ``crash(tear=k, hole=(a, n))`` loses ``n`` of them from the
  ``a``-th on (zeros there), a write over reserved space torn out of order.
* ``inject(op, errno)`` makes a later ``write``, ``fdatasync`` or
  ``fsync_dir`` fail with that errno (ENOSPC, EIO).

:class:`OSFileSystem` writes a journal segment (``create(path,
reserve=True)``) into space it filled with zeros ahead of the records, a
mebibyte at a time. ``fdatasync`` after an append that grows a file must
also commit its new size (on ext4, a second write, of the inode); over
blocks already written it flushes the data alone. Measured on this
project's VM (ext4 on virtio, a 600-byte record per sync): 62 us of CPU
and 180 us of wall time per fdatasync, against 89 us and 248 us for
appends. The zeros left at ``close`` are cut off; a crash leaves them after
the last record, where recovery reads them as the end of the log
(:func:`~corosm.io.journal.format.is_padding`). Over space already
allocated, a crash during a sync can keep a later page of what it was
syncing and lose an earlier one, a hole of zeros where an append can only
lose a suffix: the journal reserves only where at most its last batch is
unsynced (``fsync="always"``), and recovery tells that batch from
corruption by the mark on each batch's last frame (format version 2). The
other price: a disk about to fill fails a segment's writes (ENOSPC, a
fail-stop) up to a mebibyte sooner than appends would; that error names
the segment and says that a reserve of how many bytes failed. :class:`FaultyFS`
ignores ``reserve``: a file is its bytes, and ``crash(hole=...)`` makes
the out-of-order tear.

FaultyFS is deterministic: no threads, no clocks, no randomness. It holds a
lock only so that the journal's threads may share it in tests.

A file that recovery must read or remove but cannot stays an ``OSError``
naming it, as every disk fault does. Where the operator can fix it (no
permission, a directory under the file's name, or anything else that is
not a regular file: a named pipe, a socket, a device), :func:`raise_fixable`
says which of the journal's files it is and what to do. ``read`` refuses
what is not a regular file without waiting: a named pipe would otherwise
block it until something wrote to the pipe, and a device could be endless.

Snapshot retention deletes only what the journal wrote: regular files.
:meth:`FileSystem.is_regular_file` says whether a name is one (a directory,
a symbolic link, a pipe or a device is not); every name a :class:`FaultyFS`
holds is one.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from dataclasses import dataclass, field
from typing import Literal, Protocol

from corosm._mypyc import mypyc_attr

Op = Literal["write", "fdatasync", "fsync_dir", "create", "rename", "remove"]


class FileHandle(Protocol):
    """A file opened for appending."""

    def write(self, data: bytes) -> None:
        """Append all of ``data`` (raises OSError if it could not)."""

    def fdatasync(self) -> None:
        """Make everything written so far durable."""

    def close(self) -> None:
        """Release the handle (does not sync)."""


class FileSystem(Protocol):
    """What the journal needs from a file system. Paths are plain strings."""

    def makedirs(self, path: str) -> None:
        """Create directory ``path`` (and parents) if missing."""

    def listdir(self, path: str) -> list[str]:
        """Names of the entries of directory ``path``."""

    def is_regular_file(self, path: str) -> bool:
        """Whether ``path`` is a regular file (not a symbolic link to one, nor missing)."""

    def create(self, path: str, *, reserve: bool = False) -> FileHandle:
        """Create (or truncate) ``path`` and open it for appending.

        ``reserve``: the file will take many small appends, each synced (a
        journal segment). A file system may then set space aside ahead of
        the writes, as zeros that :meth:`FileHandle.close` cuts off again;
        after a crash they remain, after the last record.
        """

    def read(self, path: str) -> bytes:
        """The whole contents of ``path``.

        Anything but a regular file is refused at once: a directory with
        ``IsADirectoryError``, anything else (a named pipe, a socket, a
        device) with :class:`NotRegularFile`.
        """

    def truncate(self, path: str, size: int) -> None:
        """Cut ``path`` to ``size`` bytes and make that durable."""

    def rename(self, src: str, dst: str) -> None:
        """Atomically replace ``dst`` by ``src``."""

    def remove(self, path: str) -> None:
        """Delete ``path``."""

    def fsync_dir(self, path: str) -> None:
        """Make the entries of directory ``path`` durable."""


class _OSFile:
    """A real file descriptor opened with O_APPEND."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:  # os.write may write less than asked (signals, huge buffers)
            n = os.write(self._fd, view)
            view = view[n:]

    def fdatasync(self) -> None:
        # fdatasync skips metadata that is not needed to read the data back
        # (mtime), which is cheaper; file size changes are still flushed.
        _sync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


RESERVE_BYTES = 1 << 20
"""How far ahead of its records a reserved file is filled with zeros (see module docs)."""

_ZEROS = memoryview(bytes(RESERVE_BYTES))
_sync = getattr(os, "fdatasync", os.fsync)


class _ReservedFile:
    """A real file whose records overwrite zeros written ahead of them."""

    __slots__ = ("_end", "_fd", "_path", "_reserved")

    def __init__(self, fd: int, path: str) -> None:
        self._fd = fd
        self._path = path  # for the error of a reserve that does not fit
        self._end = 0  # where the next record goes
        self._reserved = 0  # where the zeros end

    def write(self, data: bytes) -> None:
        end = self._end + len(data)
        if end > self._reserved:
            self._reserve((end // RESERVE_BYTES + 1) * RESERVE_BYTES)
        view, pos = memoryview(data), self._end
        while view:  # pwrite may write less than asked (signals, huge buffers)
            n = os.pwrite(self._fd, view, pos)
            view, pos = view[n:], pos + n
        self._end = end

    def _reserve(self, target: int) -> None:
        """Fill the file with zeros from where they end up to ``target``."""
        start = pos = self._reserved
        try:
            while pos < target:
                pos += os.pwrite(self._fd, _ZEROS[: target - pos], pos)
        except OSError as exc:
            self._reserved = pos  # close() cuts what was written
            if exc.errno not in _NO_ROOM:
                raise
            raise OSError(exc.errno, _no_room(exc, start, target, pos), self._path) from exc
        self._reserved = target

    def fdatasync(self) -> None:
        _sync(self._fd)

    def close(self) -> None:
        try:
            if self._reserved > self._end:
                os.ftruncate(self._fd, self._end)
        finally:
            os.close(self._fd)


_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def _no_room(exc: OSError, start: int, target: int, pos: int) -> str:
    """The error of a reserve the disk has no room for: it says a reserve is what failed.

    Without it, a disk with hundreds of KiB free refusing a small write puzzles.
    """
    return (
        f"{exc.strerror}: the journal reserves {RESERVE_BYTES} bytes ahead of its records in "
        f"each segment (fsync='always'): asked for {target - start} bytes at offset {start}, "
        f"found room for {pos - start}"
    )


@mypyc_attr(native_class=False)  # mypyc compiles no subclass of OSError
class NotRegularFile(OSError):
    """Raised by ``read`` for what is not a regular file (nor a directory): a pipe, a device.

    Its errno is ENXIO, which the kernel gives for opening some of them (a
    socket); the class, not the errno, says what happened.
    """


def raise_fixable(exc: OSError, path: str, role: str) -> None:
    """Raise ``exc``, met using ``path`` (by its name the journal's ``role``), explained.

    Only what the operator can fix and the disk cannot (no permission, a
    directory or another file that is not a regular one under the file's
    name): the same errno (so the same ``OSError`` subclass, but for
    :class:`NotRegularFile`, which becomes a plain ``OSError``), naming
    ``path``, and what to do. Any other failure (EIO: the disk) returns,
    for the caller to decide on.
    """
    if exc.errno in (errno.EACCES, errno.EPERM):
        todo = "give the user corosm runs as read and write access to it"
    elif exc.errno == errno.EISDIR:
        todo = "it is a directory: move it out of the data directory"
    elif isinstance(exc, NotRegularFile):
        todo = "move it out of the data directory"
    else:
        return
    what = f"{exc.strerror} (the journal's {role}, by its name: {todo})"
    raise OSError(exc.errno, what, path) from exc


_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)

_KINDS = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
)


def _require_regular(path: str, mode: int) -> None:
    """Refuse to read ``path``, of ``mode``, unless it is a regular file (``read``'s errors)."""
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    kind = next((name for is_kind, name in _KINDS if is_kind(mode)), "of an unknown kind")
    raise NotRegularFile(errno.ENXIO, f"Not a regular file but {kind}", path)


@mypyc_attr(allow_interpreted_subclasses=True)  # tests wrap the real file system
class OSFileSystem:
    """The real file system."""

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def is_regular_file(self, path: str) -> bool:
        """Whether ``path`` is a regular file, not a link to one (it is not followed)."""
        try:
            return stat.S_ISREG(os.lstat(path).st_mode)
        except FileNotFoundError:
            return False

    def create(self, path: str, *, reserve: bool = False) -> FileHandle:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
        if reserve and hasattr(os, "pwrite"):  # not on Windows: appended there
            return _ReservedFile(os.open(path, flags, 0o644), path)
        return _OSFile(os.open(path, flags | os.O_APPEND, 0o644))

    def read(self, path: str) -> bytes:
        # O_NONBLOCK: opening a named pipe returns at once (it is refused
        # below) rather than waiting for a writer; a regular file ignores it.
        try:
            fd = os.open(path, _READ_FLAGS)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # a socket (or a device without a driver)
                _require_regular(path, os.stat(path).st_mode)
            raise
        try:
            _require_regular(path, os.fstat(fd).st_mode)
            # One big read per file: replay then scans memory without syscalls.
            with open(fd, "rb", buffering=0, closefd=False) as f:
                return f.read()
        finally:
            os.close(fd)

    def truncate(self, path: str, size: int) -> None:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def remove(self, path: str) -> None:
        os.remove(path)

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass(slots=True, eq=False)  # identity matters: a file is its inode
class _Inode:
    visible: bytearray = field(default_factory=bytearray)
    durable: bytes = b""


@dataclass(slots=True)
class _Fault:
    op: Op
    errno: int
    after: int
    times: int
    partial: int


class _FaultyHandle:
    __slots__ = ("_fs", "_inode", "_path")

    def __init__(self, fs: FaultyFS, path: str, inode: _Inode) -> None:
        self._fs = fs
        self._path = path
        self._inode = inode

    def write(self, data: bytes) -> None:
        self._fs._write(self._path, self._inode, data)

    def fdatasync(self) -> None:
        self._fs._fdatasync(self._path, self._inode)

    def close(self) -> None:
        pass


@mypyc_attr(allow_interpreted_subclasses=True)  # tests watch its calls in a subclass
class FaultyFS:
    """An in-memory file system that fails and crashes on demand (see module docs).

    Directories are implicit: a path's directory is its part before the last
    ``/``. Counters ``writes``, ``fdatasyncs`` and ``dir_syncs`` count calls.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: dict[str, _Inode] = {}
        self._durable_names: dict[str, _Inode] = {}
        self._dirs: set[str] = set()
        self._faults: list[_Fault] = []
        self._last_write: tuple[_Inode, int] | None = None  # inode, length before the write
        self.writes = 0
        self.fdatasyncs = 0
        self.dir_syncs = 0

    # -- fault control ---------------------------------------------------------
    def inject(
        self, op: Op, err: int = errno.EIO, *, after: int = 0, times: int = 1, partial: int = 0
    ) -> None:
        """Make the ``after+1``-th next call of ``op`` (and ``times-1`` more) raise ``err``.

        For ``write``, ``partial`` bytes of the data are appended before the error,
        like a short write that then hit a full disk.
        """
        self._faults.append(_Fault(op, err, after, times, partial))

    def crash(self, tear: int = 0, hole: tuple[int, int] = (0, 0)) -> None:
        """Lose everything that is not durable; keep ``tear`` bytes of the last unsynced write.

        ``hole=(a, n)``: of those, the ``n`` bytes from the ``a``-th on are
        lost all the same (zeros: the write went over reserved space, and a
        later page of it reached the disk while an earlier one did not).
        """
        with self._lock:
            last = self._last_write
            for inode in set(self._names.values()) | set(self._durable_names.values()):
                if last is not None and inode is last[0] and tear > 0:
                    start = len(inode.durable)
                    kept = bytearray(inode.visible[start : start + tear])
                    a, n = hole
                    kept[a : a + n] = bytes(len(kept[a : a + n]))
                    inode.durable = inode.durable + bytes(kept)
                inode.visible = bytearray(inode.durable)
            self._names = dict(self._durable_names)
            self._last_write = None

    def _check_fault(self, op: Op, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.op != op:
                continue
            if fault.after > 0:
                fault.after -= 1
                return None
            fault.times -= 1
            if fault.times <= 0:
                self._faults.remove(fault)
            return fault
        return None

    @staticmethod
    def _raise(fault: _Fault, path: str) -> None:
        raise OSError(fault.errno, f"{os.strerror(fault.errno)} (injected)", path)

    # -- FileSystem ----------------------------------------------------------------
    def makedirs(self, path: str) -> None:
        with self._lock:
            self._dirs.add(path.rstrip("/"))

    def listdir(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        with self._lock:
            if path.rstrip("/") not in self._dirs:
                raise FileNotFoundError(errno.ENOENT, "No such directory", path)
            return [p[len(prefix) :] for p in self._names if p.startswith(prefix)]

    def is_regular_file(self, path: str) -> bool:
        """Whether ``path`` is a file: every name this file system holds is a regular file."""
        with self._lock:
            return path in self._names

    def create(self, path: str, *, reserve: bool = False) -> FileHandle:
        with self._lock:
            fault = self._check_fault("create", path)
            if fault:
                self._raise(fault, path)
            inode = self._names.get(path)
            if inode is None:
                inode = _Inode()
                self._names[path] = inode
            else:  # O_TRUNC: the same inode, emptied
                inode.visible.clear()
            return _FaultyHandle(self, path, inode)

    def _write(self, path: str, inode: _Inode, data: bytes) -> None:
        with self._lock:
            self.writes += 1
            fault = self._check_fault("write", path)
            self._last_write = (inode, len(inode.visible))
            if fault:
                inode.visible += data[: fault.partial]
                self._raise(fault, path)
            inode.visible += data

    def _fdatasync(self, path: str, inode: _Inode) -> None:
        with self._lock:
            self.fdatasyncs += 1
            fault = self._check_fault("fdatasync", path)
            if fault:
                self._raise(fault, path)
            inode.durable = bytes(inode.visible)
            if self._last_write is not None and self._last_write[0] is inode:
                self._last_write = None

    def read(self, path: str) -> bytes:
        with self._lock:
            inode = self._names.get(path)
            if inode is None:
                raise FileNotFoundError(errno.ENOENT, "No such file", path)
            return bytes(inode.visible)

    def truncate(self, path: str, size: int) -> None:
        with self._lock:
            inode = self._names[path]
            del inode.visible[size:]
            inode.durable = inode.durable[:size]

    def rename(self, src: str, dst: str) -> None:
        with self._lock:
            fault = self._check_fault("rename", src)
            if fault:
                self._raise(fault, src)
            self._names[dst] = self._names.pop(src)

    def remove(self, path: str) -> None:
        with self._lock:
            fault = self._check_fault("remove", path)
            if fault:
                self._raise(fault, path)
            del self._names[path]

    def fsync_dir(self, path: str) -> None:
        prefix = path.rstrip("/") + "/"
        with self._lock:
            self.dir_syncs += 1
            fault = self._check_fault("fsync_dir", path)
            if fault:
                self._raise(fault, path)
            # Only this directory's entries become durable.
            kept = {p: i for p, i in self._durable_names.items() if not p.startswith(prefix)}
            kept.update({p: i for p, i in self._names.items() if p.startswith(prefix)})
            self._durable_names = kept

    def durable_size(self, path: str) -> int:
        """Bytes of ``path`` that would survive a crash now (for tests)."""
        with self._lock:
            return len(self._names[path].durable)
