"""corosm's exceptions: one base class, three families kept apart.

Every exception corosm raises on purpose derives from :class:`CorosmError`::

    CorosmError
    ├── UsageError                  the caller used the API wrongly
    │   ├── HandlerMisuse           a machine's code used corosm wrongly (the machine's
    │   │   │                       bug, not its caller's: HTTP 500, not 400)
    │   │   └── ForeignAwaitError   a handler awaited something that is not a corosm
    │   │                           effect or future (also a TypeError)
    │   ├── Overloaded              the input queue is full; retry later
    │   ├── Stopped                 the runtime is not running
    │   └── LimitExceeded           an empty key, or a key or value over the store's limit
    ├── EffectError                 an I/O effect failed; raised at the handler's await,
    │   │                           with the original exception as __cause__
    │   ├── EffectTimeout           a deadline passed before the effect completed
    │   ├── EffectCancelled         the effect was cancelled (e.g. it lost an ``any``)
    │   └── JournalError            a journal write or fsync failed (or its thread crashed):
    │       │                       not acknowledged, though the record may still be found
    │       │                       on disk after a restart
    │       └── JournalClosed       the journal is fail-stopped or closed: no more appends
    ├── HandlerError                an exception escaped a handler; that input alone failed
    ├── ClientError                 a call through corosm.client failed (its own tree
    │                               is drawn in corosm/client/errors.py)
    ├── DataError                   stored data, or its directory, cannot be used
    │   ├── CorruptJournal          a damaged journal or snapshot, or records missing
    │   │                           from the journal (file, offset)
    │   ├── DataDirInUse            another open journal holds the data directory
    │   └── ApplyFailed             the machine's apply() raised on a journaled record:
    │                               the journal is intact, the live state parted from it
    └── InternalError               a bug in corosm itself; please report it

Caller errors, data errors and internal bugs are kept apart so that a front end
can map each family to a fitting reply (400, 500 with a hint, 500 with a bug
report) and an operator can tell "my request was wrong" from "my disk is bad".
"""

from __future__ import annotations

from typing import Literal


class CorosmError(Exception):
    """Base class of every exception corosm raises on purpose."""


class UsageError(CorosmError):
    """The caller used corosm's API in a way it does not support."""


class HandlerMisuse(UsageError):
    """A machine's own code used corosm wrongly: the machine's bug, not its caller's.

    E.g. a ``handle`` that is not an ``async def``, or a handler awaiting a
    future another machine started. The input fails; a front end answers it
    as a server error (HTTP 500), where a plain :class:`UsageError` a handler
    raises is the handler refusing its input (HTTP 400).
    """


class ForeignAwaitError(HandlerMisuse, TypeError):
    """A handler awaited an object that corosm cannot run (e.g. ``asyncio.sleep``).

    Handlers suspend only on corosm effects and futures; everything else would
    need another event loop. The message names the object.
    """


class Overloaded(UsageError):
    """The input queue is full. The caller should retry later (HTTP 503)."""


class Stopped(UsageError):
    """The runtime is not running (not started yet, or stopping)."""


class LimitExceeded(UsageError):
    """A key or value is outside the store's limits; nothing was stored.

    ``part`` is ``"key"`` or ``"value"``: which one is wrong. ``size`` is its
    length in bytes and ``limit`` the most allowed. An empty key is refused
    too (``part == "key"``, ``size == 0``: see :attr:`empty`). Front ends map
    it to their own reply (HTTP: 400 for an empty key, 414 for a long key,
    413 for a large value); the message says what was wrong and the limit.
    """

    def __init__(self, part: Literal["key", "value"], size: int, limit: int) -> None:
        if size == 0 and part == "key":
            message = f"empty key: a key must have 1 to {limit} bytes"
        elif part == "key":
            message = f"key too long: {size} bytes, at most {limit} allowed"
        else:
            message = f"{part} too large: {size} bytes, at most {limit} allowed"
        super().__init__(message)
        self.part = part
        self.size = size
        self.limit = limit

    @property
    def empty(self) -> bool:
        """True for an empty key (rather than one that is too long)."""
        return self.size == 0 and self.part == "key"

    # Pickle by the constructor's arguments (the default would pass the message).
    def __reduce__(self) -> tuple[type[LimitExceeded], tuple[Literal["key", "value"], int, int]]:
        return (type(self), (self.part, self.size, self.limit))


class EffectError(CorosmError):
    """An effect failed. Raised at the await point inside the handler.

    The exception that the executor saw is chained as ``__cause__``.
    """


class EffectTimeout(EffectError):
    """A deadline passed before the effect completed."""


class EffectCancelled(EffectError):
    """The effect was cancelled before it completed."""


class JournalError(EffectError):
    """A journal write or fsync failed: the record was neither acknowledged nor applied.

    It may still be on disk (written, its fsync failed), and a restart then recovers it.
    """


class JournalClosed(JournalError):
    """The journal accepts no more appends (it failed earlier, or it is closed)."""


class HandlerError(CorosmError):
    """An exception escaped a handler; the input that ran it failed, nothing else did.

    The handler's exception is chained as ``__cause__``.
    """


class DataError(CorosmError):
    """Stored data (a journal, a snapshot) is not valid, or its data directory cannot be used.

    The latter: a path the disk will not let be a data directory (a file, a
    dangling symbolic link, no permission), with the ``OSError`` as the cause.
    """


class DataDirInUse(DataError):
    """Another open journal (another process, or another runtime in this one) holds the directory.

    Two journals in one directory would overwrite each other's records, so
    the second open is refused. ``pid`` is the holder's, as it wrote it in
    the directory's ``LOCK`` file (None if unknown).
    """

    def __init__(self, directory: str, pid: int | None, *, this_process: bool = False) -> None:
        holder = "another process" if pid is None else f"process {pid}"
        if this_process:
            holder = "another journal in this process"
        super().__init__(
            f"data directory {directory!r} is in use by {holder}: one journal at a time "
            "may hold it; stop that one first, or use another data directory"
        )
        self.directory = directory
        self.pid = pid


class CorruptJournal(DataError):
    """A journal or snapshot file is damaged, or the journal lacks records, at a known place.

    ``path`` names the file and ``offset`` the byte offset of the damage (a
    bad record, a bad header; 0 for a segment that starts after a gap).
    ``reason`` says what is wrong there (a record's begins "corrupt
    record") and what to do. ``cuttable``: recovery with
    ``truncate_corrupt`` would cut the journal there (and drop what
    follows) rather than refuse again.
    """

    def __init__(self, path: str, offset: int, reason: str, *, cuttable: bool = False) -> None:
        super().__init__(f"{path} at byte offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason
        self.cuttable = cuttable


class ApplyFailed(DataError):
    """The machine's ``apply`` raised on a record that is already in the journal.

    The journal is intact, but the state can no longer follow it: live, the
    host fail-stops (writes are refused, reads go on, health says why); at
    start, recovery stops. Fix ``apply`` (it must not raise: validate before
    you append) and restart; the journal replays through the fixed code.
    ``lsn`` is the record's, ``machine`` the machine's class name, and the
    exception ``apply`` raised is chained as ``__cause__``.
    """

    def __init__(self, lsn: int | None, machine: str, error: BaseException) -> None:
        where = "a record" if lsn is None else f"the record at lsn {lsn}"
        super().__init__(
            f"{machine}.apply() raised {type(error).__name__}: {error} on {where}; the journal "
            "is intact but the state cannot follow it: fix apply() (it must not raise; "
            "validate before you append) and restart"
        )
        self.lsn = lsn
        self.machine = machine
        self.error = error

    def __reduce__(self) -> tuple[type[ApplyFailed], tuple[int | None, str, BaseException]]:
        return (type(self), (self.lsn, self.machine, self.error))


class InternalError(CorosmError):
    """A bug in corosm: an invariant did not hold. Please report it."""
