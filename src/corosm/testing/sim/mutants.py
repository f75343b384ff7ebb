"""Planted bugs in the shipped host and journal, to prove the simulator finds them.

Theory of operation
-------------------
The simulator runs the code that ships (:class:`~corosm.runtime.host.Host`,
:class:`~corosm.io.journal.control.JournalControl`, the
:class:`~corosm.io.journal.log.LogWriter`, the
:class:`~corosm.io.journal.JournalExecutor`), so a test of the simulator
itself plants a bug *in that code*: each :class:`Mutant` overrides one method
of one shipped class for the duration of :func:`planted`, wrapping the
original where it can, so the bug is the smallest change that breaks one
rule durability or ordering rests on. Production never imports this module.

The bug goes into a subclass of the shipped class, which the world builds
instead of the shipped one while the bug is planted (its ``host_class``,
``executor_class``, ``control_class`` and ``log_writer_class``, see
:class:`~corosm.testing.sim.world.World`): these classes are compiled in the
compiled build, whose methods call each other directly rather than through
the class, so a patch of the class itself would not reach them, while a
subclass's methods do.

``corosm sim --mutant NAME --seed S --replay`` replays a seed with a mutant
planted; :data:`MUTANTS` lists them by name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from corosm.errors import UsageError
from corosm.io.journal.control import Entry, JournalControl
from corosm.io.journal.executor import JournalExecutor
from corosm.io.journal.files import FileSystem
from corosm.io.journal.log import BatchResult, LogWriter
from corosm.runtime.host import Host
from corosm.testing.sim.world import World

Wrap = Callable[[Callable[..., Any]], Callable[..., Any]]


@dataclass(frozen=True, slots=True)
class Mutant:
    """One planted bug: a subclass of ``cls`` whose ``attr`` is ``wrap(original)``."""

    name: str
    breaks: str
    cls: type
    attr: str
    wrap: Wrap


def _reply_before_fsync(original: Callable[..., Any]) -> Callable[..., Any]:
    def sync_due(self: JournalControl) -> bool:
        return False  # BUG: "always" acknowledges a batch without its fdatasync

    return sync_due


def _apply_before_durable(original: Callable[..., Any]) -> Callable[..., Any]:
    def submit(self: JournalExecutor, requests: Sequence[tuple[int, Any]]) -> None:
        # BUG: every append completes (is applied and answered) at once; the
        # records reach the journal with tokens nobody waits for.
        control: JournalControl = self.journal.control  # type: ignore[attr-defined]
        lsn = control.writer.next_lsn + len(control.queue)
        assert self._sink is not None
        self._sink([(request, lsn + i, None) for i, (request, _) in enumerate(requests)])
        original(self, [(-1, effect) for _, effect in requests])

    return submit


class _NoDirSync:
    """A file system whose ``fsync_dir`` does nothing."""

    def __init__(self, fs: FileSystem) -> None:
        self._fs = fs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fs, name)

    def fsync_dir(self, path: str) -> None:
        pass


def _no_dir_fsync_on_new_segment(original: Callable[..., Any]) -> Callable[..., Any]:
    def _start_segment(self: LogWriter) -> None:
        fs = self.fs
        self.fs = _NoDirSync(fs)  # BUG: the new name is not synced
        try:
            original(self)
        finally:
            self.fs = fs

    return _start_segment


def _failed_batch_acknowledged(original: Callable[..., Any]) -> Callable[..., Any]:
    def fail(self: JournalControl, batch: list[Entry], exc: OSError) -> None:
        lsn = self.committed_lsn + 1
        self.deliver([(token, lsn + i, None) for i, (token, _) in enumerate(batch)])  # BUG
        original(self, [], exc)

    return fail


def _snapshot_ahead_of_apply(original: Callable[..., Any]) -> Callable[..., Any]:
    def _snapshot_if_due(self: Host[Any, Any, Any]) -> None:
        stepper = self.stepper
        applied = stepper.last_append_value
        control = getattr(self._snapshots, "control", None)
        if control is not None and type(applied) is int:
            # BUG: the snapshot claims every committed record, applied or not.
            stepper.last_append_value = control.committed_lsn
        try:
            original(self)
        finally:
            stepper.last_append_value = applied

    return _snapshot_if_due


def _completions_out_of_log_order(original: Callable[..., Any]) -> Callable[..., Any]:
    def finish(self: JournalControl, batch: list[Entry], result: BatchResult) -> None:
        original(self, batch[::-1], result)  # BUG: the last record's waiter gets the first LSN

    return finish


def _admit_past_max_inflight(original: Callable[..., Any]) -> Callable[..., Any]:
    def _admit_inputs(self: Host[Any, Any, Any]) -> None:
        bound, self.max_inflight = self.max_inflight, 1 << 30  # BUG: no admission bound
        try:
            original(self)
        finally:
            self.max_inflight = bound

    return _admit_inputs


MUTANTS: dict[str, Mutant] = {
    m.name: m
    for m in (
        Mutant(
            "reply-before-fsync",
            "a write is acknowledged before its batch's fdatasync",
            JournalControl,
            "sync_due",
            _reply_before_fsync,
        ),
        Mutant(
            "apply-before-durable",
            "an append is applied and answered before the journal writes it",
            JournalExecutor,
            "submit",
            _apply_before_durable,
        ),
        Mutant(
            "no-dir-fsync-on-new-segment",
            "a new segment's directory entry is never made durable",
            LogWriter,
            "_start_segment",
            _no_dir_fsync_on_new_segment,
        ),
        Mutant(
            "failed-batch-acknowledged",
            "the waiters of a batch whose write or fsync failed are acknowledged",
            JournalControl,
            "fail",
            _failed_batch_acknowledged,
        ),
        Mutant(
            "snapshot-ahead-of-apply",
            "a snapshot covers committed records the state has not applied yet",
            Host,
            "_snapshot_if_due",
            _snapshot_ahead_of_apply,
        ),
        Mutant(
            "completions-out-of-log-order",
            "a batch's completions reach the machine out of log order",
            JournalControl,
            "finish",
            _completions_out_of_log_order,
        ),
        Mutant(
            "admit-past-max-inflight",
            "the host admits inputs past max_inflight",
            Host,
            "_admit_inputs",
            _admit_past_max_inflight,
        ),
    )
}


#: The attribute of :class:`World` that names the class it builds, by shipped class.
_BUILT_AS: dict[type, str] = {
    Host: "host_class",
    JournalExecutor: "executor_class",
    JournalControl: "control_class",
    LogWriter: "log_writer_class",
}


@contextlib.contextmanager
def planted(name: str | None) -> Iterator[Mutant | None]:
    """Plant the mutant ``name`` in the shipped code while the block runs (None: none)."""
    if name is None:
        yield None
        return
    mutant = MUTANTS.get(name)
    if mutant is None:
        known = ", ".join(sorted(MUTANTS))
        raise UsageError(f"no mutant named {name!r}; the mutants are: {known}")
    bug = mutant.wrap(mutant.cls.__dict__[mutant.attr])
    subclass = type(
        f"{mutant.cls.__name__}_{name.replace('-', '_')}", (mutant.cls,), {mutant.attr: bug}
    )
    hook = _BUILT_AS[mutant.cls]
    original = World.__dict__[hook]
    setattr(World, hook, subclass)
    try:
        yield mutant
    finally:
        setattr(World, hook, original)
