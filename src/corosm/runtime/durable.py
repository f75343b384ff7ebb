"""``corosm.open``: run any machine durably, on a journal in a data directory.

Theory of operation
-------------------
One call does what a durable host needs, in order: recover the directory
(the newest snapshot that checks out, then the journal after it, through the
machine's own ``apply``), open the group-commit journal after the last
record, and start a :class:`~corosm.runtime.Runtime` whose ``Append`` effects
go to that journal and whose state is the recovered one (there is no way to
start it on any other). The journal decides when a snapshot is due; the host
takes it as a phase of its turn. Leaving the block stops the runtime:
in-flight inputs finish, the journal writes and syncs what is queued.

::

    async with corosm.open(Bank(), "bank-data") as bank:
        await bank.submit(Deposit("alice", 100))

:func:`open_blocking` is the same for scripts without an event loop: the
runtime runs on a loop thread of its own, and ``submit`` blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import Future as ThreadFuture
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from corosm.core.effects import Append, Effect
from corosm.core.machine import Machine
from corosm.errors import UsageError
from corosm.io.executor import Executor
from corosm.io.journal import (
    FileSystem,
    FsyncMode,
    Journal,
    JournalExecutor,
    JournalOptions,
    Recovered,
    open_journal,
)
from corosm.runtime import loop_factory
from corosm.runtime.host import DEFAULT_MAX_INFLIGHT, DEFAULT_MAX_QUEUE
from corosm.runtime.runtime import Runtime

S = TypeVar("S")
I = TypeVar("I")
O = TypeVar("O")
T = TypeVar("T")

log = logging.getLogger("corosm.runtime")


def recover(
    machine: Machine[S, Any, Any],
    data_dir: str | os.PathLike[str],
    options: JournalOptions,
    *,
    fs: FileSystem | None = None,
    truncate_corrupt: bool = False,
) -> tuple[Journal, Recovered[S]]:
    """Recover ``data_dir`` (blocking); return the unstarted journal that continues it.

    A path that cannot be a data directory is refused here, before anything
    is read, with a :class:`~corosm.errors.UsageError` or
    :class:`~corosm.errors.DataError` that says why
    (:func:`~corosm.io.journal.open_journal`).
    """
    journal, recovered = open_journal(
        data_dir, machine, options=options, fs=fs, truncate_corrupt=truncate_corrupt
    )
    report = recovered.report
    log.info(
        "recovered %s: snapshot at lsn %d, %d records replayed in %.3f s",
        journal.directory,
        report.snapshot_lsn,
        report.records_replayed,
        report.seconds,
    )
    return journal, recovered


@dataclass(frozen=True, slots=True)
class DurableOptions:
    """How a durable runtime journals and queues: ``corosm.open``'s options and defaults.

    The one place they are spelled out: :func:`open` and :func:`open_blocking`
    take them as keywords, the server builds them from its configuration, and
    a shard's spec carries them to the process that runs the shard (plain
    values, so they pickle). A snapshot is due after ``snapshot_every``
    records or ``snapshot_every_bytes`` bytes of journal, whichever comes
    first; 0 turns that rule off (both 0: never).
    """

    fsync: FsyncMode = "always"
    fsync_interval_ms: int = 1000
    snapshot_every: int = 1_000_000
    snapshot_every_bytes: int = 256 << 20
    max_queue: int = DEFAULT_MAX_QUEUE
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    truncate_corrupt: bool = False

    def __post_init__(self) -> None:
        # The types only (ranges are checked where each is used): a string
        # "no" for truncate_corrupt would read as true and cut the journal.
        for f in dataclasses.fields(self):
            value, wanted = getattr(self, f.name), _OPTION_TYPES.get(f.name)
            if wanted is not None and type(value) is not wanted:
                raise UsageError(f"{f.name} must be {_TYPE_NAMES[wanted]}, got {value!r}")

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> DurableOptions:
        """The options passed to :func:`open` by name; an unknown name is a UsageError."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise UsageError(f"unknown option {unknown[0]!r}; expected one of {', '.join(names)}")
        return cls(**options)


_OPTION_TYPES: dict[str, type] = {
    "fsync_interval_ms": int,
    "snapshot_every": int,
    "snapshot_every_bytes": int,
    "max_queue": int,
    "max_inflight": int,
    "truncate_corrupt": bool,
}
_TYPE_NAMES = {int: "an int", bool: "True or False"}


def durable_runtime(
    machine: Machine[S, I, O],
    data_dir: str | os.PathLike[str],
    options: DurableOptions = DurableOptions(),
    *,
    executors: Mapping[type[Effect[Any]], Executor] | None = None,
    fs: FileSystem | None = None,
) -> Runtime[S, I, O]:
    """Recover (blocking) and build, unstarted, a runtime on the journal that continues it.

    The one place that ties a machine to its journal: :func:`start_durable`
    (and so :func:`open`) runs it off the loop, a shard's host calls it as is.
    """
    if executors is not None and Append in executors:
        raise UsageError("corosm.open() runs Append effects on its own journal; drop Append")
    journal_options = JournalOptions(
        fsync=options.fsync,
        interval_ms=options.fsync_interval_ms,
        snapshot_every_records=options.snapshot_every,
        snapshot_every_bytes=options.snapshot_every_bytes,
    )
    journal, recovered = recover(
        machine, data_dir, journal_options, fs=fs, truncate_corrupt=options.truncate_corrupt
    )
    routes: dict[type[Effect[Any]], Executor] = dict(executors or {})
    routes[Append] = JournalExecutor(journal, machine.encode_record)
    try:
        runtime: Runtime[S, I, O] = Runtime(
            machine,
            state=recovered.state,
            executors=routes,
            snapshots=journal,
            max_queue=options.max_queue,
            max_inflight=options.max_inflight,
        )
    except BaseException:
        # A bound the runtime refuses (max_queue=0): the directory was
        # locked for nothing, and would stay so for the life of the process.
        journal.close()
        raise
    runtime.recovery = recovered.report
    return runtime


async def start_durable(
    machine: Machine[S, I, O],
    data_dir: str | os.PathLike[str],
    options: DurableOptions = DurableOptions(),
    *,
    executors: Mapping[type[Effect[Any]], Executor] | None = None,
    fs: FileSystem | None = None,
) -> Runtime[S, I, O]:
    """:func:`durable_runtime` off the loop, then start it; the caller stops it.

    :func:`open` is the same as a context manager; servers that manage the
    runtime's lifetime themselves call this.
    """
    loop = asyncio.get_running_loop()
    build = functools.partial(
        durable_runtime, machine, data_dir, options, executors=executors, fs=fs
    )
    runtime: Runtime[S, I, O] = await loop.run_in_executor(None, build)
    try:
        await runtime.start()
    except BaseException:
        # The journal could not start its segment (a full disk): close what
        # opened, or the directory stays locked until the process exits.
        await runtime.stop()
        raise
    return runtime


@contextlib.asynccontextmanager
async def open(
    machine: Machine[S, I, O],
    data_dir: str | os.PathLike[str],
    *,
    executors: Mapping[type[Effect[Any]], Executor] | None = None,
    **options: Any,
) -> AsyncIterator[Runtime[S, I, O]]:
    """Run ``machine`` durably in ``data_dir``: recover, journal, snapshots (module docs).

    Options (all keyword): those of :class:`DurableOptions` (``fsync``:
    ``"always"``, ``"interval"``, ``"never"``; ``fsync_interval_ms``,
    ``snapshot_every`` (records) and ``snapshot_every_bytes`` (a snapshot
    when either is reached; 0 turns that rule off), ``max_queue``,
    ``max_inflight``, ``truncate_corrupt``), and
    ``executors`` (for effects other than ``Append``).
    Yields the started :class:`~corosm.runtime.Runtime`: ``await
    host.submit(input)``, ``host.stats()``, ``host.health()``,
    ``host.recovery`` (what recovery found).
    """
    durable = DurableOptions.of(options)
    runtime: Runtime[S, I, O] = await start_durable(machine, data_dir, durable, executors=executors)
    try:
        yield runtime
    finally:
        await runtime.stop()


class BlockingHost(Generic[S, I, O]):
    """A durable runtime on a loop thread of its own, for code without an event loop."""

    def __init__(self, runtime: Runtime[S, I, O], loop: asyncio.AbstractEventLoop) -> None:
        self.runtime = runtime
        self._loop = loop

    def submit(self, input: I, timeout: float | None = None) -> O:
        """Run ``input`` and return its output (its error is raised here)."""
        future: ThreadFuture[O] = asyncio.run_coroutine_threadsafe(
            self.runtime.submit(input), self._loop
        )
        return future.result(timeout)

    def stats(self) -> dict[str, float]:
        """The runtime's counters, read on its loop thread."""
        return self._on_loop(self.runtime.stats)

    def health(self) -> str | None:
        """None while healthy, else why not (e.g. the journal failed)."""
        return self._on_loop(self.runtime.health)

    def _on_loop(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result()


@contextlib.contextmanager
def open_blocking(
    machine: Machine[S, I, O],
    data_dir: str | os.PathLike[str],
    *,
    executors: Mapping[type[Effect[Any]], Executor] | None = None,
    **options: Any,
) -> Iterator[BlockingHost[S, I, O]]:
    """:func:`open` for scripts: ``host.submit(input)`` blocks until the output is ready."""
    durable = DurableOptions.of(options)  # a bad name fails here, before a thread starts
    loop = loop_factory()()
    thread = threading.Thread(target=loop.run_forever, name="corosm-loop", daemon=True)
    thread.start()
    try:
        started = asyncio.run_coroutine_threadsafe(
            start_durable(machine, data_dir, durable, executors=executors), loop
        )
        runtime = started.result()
        try:
            yield BlockingHost(runtime, loop)
        finally:
            asyncio.run_coroutine_threadsafe(runtime.stop(), loop).result()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
