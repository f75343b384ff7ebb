"""The journal as an executor of ``Append`` effects.

Theory of operation
-------------------
The runtime calls :meth:`JournalExecutor.submit` on the loop thread once per
loop iteration with every ``(request, Append(record))`` started in that
iteration. Records are encoded right there (the loop owns the record
objects; the journal thread only sees bytes) and the whole list goes to the
journal in one queue operation. The journal thread posts completions
``(request, lsn, None)`` or ``(request, None, JournalError)``, one sink call
per batch, in LSN order, which is the order of submission.

A record that cannot be encoded fails its own request with a
:class:`UsageError` (cause chained) and never reaches the log; so does one the
journal refuses (larger than the format allows), without failing the records
submitted beside it. Appends are never cancelled: once submitted a record is,
or will be, in the log.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from corosm._mypyc import mypyc_attr
from corosm.core.effects import Append, Effect
from corosm.errors import UsageError
from corosm.io.executor import Completion, CompletionSink
from corosm.io.journal.control import Entry, JournalSink, JournalStats


class JournalDriver(Protocol):
    """What the executor needs of a journal: the thread (production) or the simulator's."""

    def start(self, sink: JournalSink) -> None: ...

    def submit(self, entries: Sequence[Entry]) -> None:
        """Queue ``entries`` in order, or raise ``UsageError`` and queue none of them."""

    def close(self) -> None: ...

    @property
    def failure(self) -> BaseException | None: ...

    def stats(self) -> JournalStats: ...


@mypyc_attr(allow_interpreted_subclasses=True)  # the simulator's mutants subclass it
class JournalExecutor:
    """Runs ``Append`` effects on a journal; ``encode`` turns a record into bytes."""

    def __init__(self, journal: JournalDriver, encode: Callable[[Any], bytes]) -> None:
        self.journal = journal
        # Any object here: submit() checks what encode returns (mypyc would
        # refuse a bytearray at the call, before that check could copy it).
        self.encode: Callable[[Any], object] = encode
        self._sink: CompletionSink | None = None

    def start(self, sink: CompletionSink) -> None:
        self._sink = sink
        self.journal.start(sink)

    def submit(self, requests: Sequence[tuple[int, Effect[Any]]]) -> None:
        if self._sink is None:
            raise UsageError("JournalExecutor.submit() before start()")
        entries: list[tuple[Any, bytes]] = []
        failed: list[Completion] = []
        encode = self.encode
        for request, effect in requests:
            if not isinstance(effect, Append):
                failed.append(
                    (request, None, UsageError(f"the journal runs Append effects, not {effect!r}"))
                )
                continue
            try:
                payload = encode(effect.record)
                if type(payload) is not bytes:  # exact type first: isinstance on a union is slower
                    if not isinstance(payload, bytes | bytearray | memoryview):
                        raise TypeError(f"encode returned {type(payload).__name__}, expected bytes")
                    payload = bytes(payload)
            except Exception as exc:
                err = UsageError(f"journal record {effect.record!r} could not be encoded: {exc}")
                err.__cause__ = exc
                failed.append((request, None, err))
                continue
            entries.append((request, payload))
        if entries:
            try:
                self.journal.submit(entries)
            except UsageError:  # it queued none of them: find the ones it refuses
                for entry in entries:
                    try:
                        self.journal.submit((entry,))
                    except UsageError as exc:
                        failed.append((entry[0], None, exc))
        if failed:
            self._sink(failed)

    def cancel(self, request: int) -> None:
        """Appends are never cancelled: the record is, or will be, in the log."""

    def close(self) -> None:
        """Write and fsync everything queued, then join the journal thread."""
        self.journal.close()

    def stats(self) -> dict[str, float]:
        """The journal's counters, flat, for the runtime's ``stats()`` and /metrics."""
        s = self.journal.stats()
        return {
            "journal_batches": s.batches,
            "journal_records": s.records,
            "journal_bytes": s.bytes,
            "journal_fsyncs": s.fsyncs,
            "journal_fsync_seconds_sum": s.fsync_seconds_total,
            "journal_fsync_p50_seconds": s.fsync_recent_p50,
            "journal_fsync_p99_seconds": s.fsync_recent_p99,
            "journal_queued": s.queued,
            "journal_snapshots": s.snapshots,
        }

    def health(self) -> str | None:
        """None while the journal accepts appends, else why it stopped."""
        failure = self.journal.failure
        return None if failure is None else f"journal failed: {failure}"
