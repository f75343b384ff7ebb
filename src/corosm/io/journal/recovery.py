"""Recovery: rebuild the state from the newest snapshot and the journal after it.

Theory of operation
-------------------
1. Remove leftover ``*.tmp`` files (snapshots that never got renamed). A
   name that looks like a segment's or a snapshot's but is not one is left
   alone, and logged: it is not read. So is one whose LSN is above the
   largest a journal holds (:data:`~corosm.io.journal.format.LSN_MASK`):
   no journal wrote it (:func:`~corosm.io.journal.snapshot.segment_lsn`).
2. Load the newest snapshot that checks out (``machine.restore``), or start
   from ``machine.initial_state()``. Its LSN ``L`` says which records it holds.
   Damaged newer snapshots are skipped, but what they held must not be lost
   (:class:`_Fallback`): a snapshot at ``D`` is written only once records
   ``1..D`` were acknowledged, so the journal must hold every record from
   ``L + 1`` (checked before each segment is read: one that starts late or
   after a gap) on to the newest damaged one's ``D`` (checked where replay
   stops, before any record is cut). If it does not, recovery refuses with
   an error naming the damaged snapshot, the missing records and what to
   restore, not the gap or the end that shows they are missing.
3. Read the segments in LSN order, each with one big read, and replay every
   record with LSN > ``L`` through ``machine.apply_encoded``, whose effect
   is ``machine.apply(state, machine.decode_record(payload))`` for each
   record: the very function the live path runs when an append completes,
   so the rebuilt state is the live state.
4. Check as we go: headers and versions, both checksums of every frame, LSNs
   consecutive inside a segment and across segments (a gap means lost data,
   an overlap a segment that is not this journal's).
5. Once the state is rebuilt and the journal's end checked (step 2), cut
   the journal where replay stopped, if it did (below), and rename the
   damaged snapshots skipped in step 2 to ``*.damaged``, so that snapshot
   retention never mistakes one for the previous snapshot it keeps as a
   fallback.

Zeros from the end of a batch to the end of a segment are space reserved
for records (:mod:`~corosm.io.journal.files`) and not filled: they are cut
off, and are no damage. Damage in the last segment after which no valid
frame follows is what a crash in the middle of a write leaves, whatever the
damaged bytes are; so is damage after which only frames of the same batch
follow, the last one (see
:func:`~corosm.io.journal.format.classify_bad_frame`). In ``always`` mode
it was never acknowledged, so it is cut off and reported (logger
``corosm.journal``). Damage followed by a valid frame of a later batch, or
in any segment but the last (a segment is synced before the next one is
created, so a crash cannot tear it), raises :class:`CorruptJournal` naming
the file and byte offset, unless ``truncate_corrupt=True``, which cuts the
journal there, removes later segments and reports what was dropped. Either
cut is made only if the journal still reaches every damaged snapshot's LSN
(step 2): records a snapshot held were acknowledged, so the damage that
ends the journal before them is no crash, and recovery refuses instead,
``truncate_corrupt`` or not.

Every refusal names the file, the byte offset or the LSNs, what was
expected, and what the operator can do (restore a file from a backup, move
a stray one out, accept a loss by ``truncate_corrupt`` or a rename where
that is safe); no record is cut and no snapshot renamed before it. A file
that cannot be read at all is an ``OSError`` naming it; where the operator
can fix that (no permission, a directory, a named pipe or another file
that is not a regular one under a journal file's name) it says so
(:func:`~corosm.io.journal.files.raise_fixable`), without waiting on a
pipe. A snapshot the disk fails to read counts as damaged.

The hot loops avoid per-record syscalls and objects beyond the payload: the
file is one ``bytes``; :func:`~corosm.io.journal.format.read_frames` checks
a chunk of frames and collects their payloads, then one call to the
machine's ``apply_encoded`` applies them (see :func:`_replay`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from operator import length_hint
from typing import Any, Generic, NoReturn, TypeVar

from corosm.core.machine import Machine, fresh_state
from corosm.errors import ApplyFailed, CorruptJournal, DataError
from corosm.io.journal.files import FileSystem, OSFileSystem, raise_fixable
from corosm.io.journal.format import (
    BATCHES_MARKED,
    DAMAGED_SUFFIX,
    FRAME_HEAD16,
    FRAME_SIZE,
    HEADER_SIZE,
    JOURNAL_MAGIC,
    LSN_MASK,
    TEMP_SUFFIX,
    FrameError,
    check_header,
    classify_bad_frame,
    ends_batch,
    frame_offset,
    is_padding,
    parse_segment_name,
    parse_snapshot_name,
    read_frames,
    segment_name,
    snapshot_name,
)
from corosm.io.journal.snapshot import (
    load_newest_snapshot,
    segment_lsn,
    set_aside,
    snapshot_lsn,
)

log = logging.getLogger("corosm.journal")
S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Damage:
    """Bytes cut from the journal: ``dropped_bytes`` from ``offset`` of ``path`` on."""

    path: str
    offset: int
    reason: str
    dropped_bytes: int
    removed_segments: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What recovery did."""

    snapshot_path: str | None
    snapshot_lsn: int
    records_replayed: int
    segments_read: int
    next_lsn: int
    seconds: float
    torn_tail: Damage | None = None
    corruption_dropped: Damage | None = None
    damaged_snapshots: tuple[str, ...] = ()
    """Snapshots that failed their checks, as renamed aside (``*.damaged``)."""


@dataclass(frozen=True, slots=True)
class Recovered(Generic[S]):
    """The rebuilt state, the LSN the journal continues from, and the report."""

    state: S
    next_lsn: int
    report: RecoveryReport


@dataclass(slots=True)
class _Scan:
    """Where replay of one segment stopped."""

    state: Any
    pos: int
    lsn: int
    applied: int
    error: FrameError | None
    closed: bool
    """The last frame read ends a batch, or there was none: what follows starts afresh."""


_CHUNK = 4096
"""Frames read before they are applied: enough to make the per-chunk work
negligible, few enough that the chunk's payloads stay in the CPU caches."""


def _replay(
    data: bytes, *, lsn: int, skip_upto: int, state: Any, machine: Any, path: str, batches: bool
) -> _Scan:
    """Apply the frames of one segment; stop at the end or at the first bad frame.

    The segment's first frame should hold ``lsn``; frames up to ``skip_upto``
    (already in the snapshot) are checked but not applied. Frames are read
    :data:`_CHUNK` at a time by :func:`read_frames` and each chunk is handed
    to the machine in one call (:func:`_apply_chunk`), so the per-record work
    is two tight loops; the frame that stopped reading, if any, is explained
    by :func:`_frame_error`. ``batches``: the segment's frames mark the end
    of each batch (format version 2 on).
    """
    pos = HEADER_SIZE
    applied = 0
    last: int | None = None  # where the last frame read starts
    while True:
        payloads: list[bytes] = []
        after = read_frames(data, pos, lsn, _CHUNK, payloads)
        # The first `skip` of them (LSN <= skip_upto) are in the snapshot already.
        skip = min(max(skip_upto - lsn + 1, 0), len(payloads))
        if skip < len(payloads):
            state = _apply_chunk(
                machine,
                state,
                payloads[skip:] if skip else payloads,
                lsn=lsn + skip,
                data=data,
                pos=frame_offset(data, pos, skip),
                path=path,
            )
            applied += len(payloads) - skip
        lsn += len(payloads)
        if payloads:
            last = after - FRAME_SIZE - len(payloads[-1])
        pos = after
        if len(payloads) < _CHUNK:
            closed = last is None or ends_batch(data, last)
            return _Scan(state, pos, lsn, applied, _frame_error(data, pos, lsn, batches), closed)


def _apply_chunk(
    machine: Any, state: Any, payloads: list[bytes], *, lsn: int, data: bytes, pos: int, path: str
) -> Any:
    """Run ``machine.apply_encoded`` on one chunk; if it raises, raise what names the record.

    The chunk holds records ``lsn, lsn + 1, ...`` whose frames start at
    ``pos``. ``apply_encoded`` takes them one at a time from a list iterator,
    so when it raises, the iterator's remaining length (exact for a list
    iterator) says which payload it took last: the one that failed.
    """
    taken = iter(payloads)
    try:
        return _apply_encoded(machine, state, taken)
    except Exception as exc:
        index = max(len(payloads) - length_hint(taken) - 1, 0)
        offset = frame_offset(data, pos, index)
        failure = _record_failure(
            machine, payloads[index], lsn=lsn + index, path=path, offset=offset, exc=exc
        )
        raise failure from failure.__cause__


def _apply_encoded(machine: Any, state: Any, payloads: Iterator[bytes]) -> Any:
    """``machine.apply_encoded``, or the default one for a look-alike machine.

    Recovery takes any object with ``apply`` and ``decode_record``, not only
    a :class:`Machine` subclass; the default needs nothing more.
    """
    hook = getattr(machine, "apply_encoded", None)
    if hook is None:
        return Machine.apply_encoded(machine, state, payloads)
    return hook(state, payloads)


def _record_failure(
    machine: Any, payload: bytes, *, lsn: int, path: str, offset: int, exc: Exception
) -> DataError:
    """The error for record ``lsn`` (frame at ``offset``), on which replay raised ``exc``.

    A record whose bytes check out but do not decode is a data error in the
    journal (:class:`CorruptJournal`); one that decodes is a record ``apply``
    refused (:class:`ApplyFailed`). Decoding is a pure function of the bytes,
    so decoding the payload again tells the two apart. The error's
    ``__cause__`` is the exception of the step that failed.
    """
    failure: DataError
    try:
        machine.decode_record(payload)
    except Exception as decode_exc:
        name = type(machine).__name__
        failure = CorruptJournal(
            path,
            offset,
            f"record lsn {lsn} could not be decoded: {decode_exc!r}; its checksums pass, so it "
            f"holds what encode_record() wrote: open the directory with the machine that wrote "
            f"it, or, if that is {name}, fix {name}.decode_record() (it must read every record "
            "encode_record() has written) and restart; nothing was changed",
        )
        failure.__cause__ = decode_exc
    else:
        failure = ApplyFailed(lsn, type(machine).__name__, exc)
        failure.__cause__ = exc
    return failure


def _read_segment(fs: FileSystem, path: str) -> bytes:
    """The bytes of segment ``path``; what the operator can fix is said (:func:`raise_fixable`)."""
    try:
        return fs.read(path)
    except OSError as exc:
        raise_fixable(exc, path, "segment")
        raise


def _segment_version(path: str, data: bytes) -> int:
    """The format version in segment ``path``'s header; if it is damaged, say what to do."""
    try:
        return check_header(path, data, JOURNAL_MAGIC)
    except CorruptJournal as exc:
        raise CorruptJournal(
            path,
            exc.offset,
            f"{exc.reason}; recovery never cuts a file header, truncate_corrupt or not: restore "
            f"{os.path.basename(path)} from a backup, or, if it is not this journal's, move it "
            "out of the data directory",
        ) from None


def _frame_error(data: bytes, pos: int, lsn: int, batches: bool) -> FrameError | None:
    """Why reading stopped at ``pos`` (where record ``lsn`` should be), or None at the end."""
    if pos == len(data):
        return None
    error = classify_bad_frame(data, pos, lsn, batches=batches)
    if error is None:  # both CRCs check: the frame holds another LSN
        flsn = FRAME_HEAD16.unpack_from(data, pos)[1] & LSN_MASK
        error = FrameError(pos, f"record has lsn {flsn}, expected {lsn}", False)
    return error


def _list_and_clean(fs: FileSystem, directory: str) -> list[str]:
    """Names in ``directory`` (created if missing), after removing leftover temp files.

    Only the journal's own (a snapshot's ``snapshot-<LSN>.snap.tmp``): the
    directory may hold other files, which are not recovery's to delete.
    Names that look like the journal's but are not are logged (:func:`_warn_lookalike`).
    """
    fs.makedirs(directory)
    names = fs.listdir(directory)
    temps = [n for n in names if _is_snapshot_temp(n)]
    for name in temps:
        path = os.path.join(directory, name)
        try:
            fs.remove(path)
        except OSError as exc:
            raise_fixable(exc, path, "snapshot temp file")
            raise
    if temps:
        fs.fsync_dir(directory)
    for name in names:
        _warn_lookalike(name)
    return [n for n in names if n not in temps]


def _is_snapshot_temp(name: str) -> bool:
    stem = name.removesuffix(TEMP_SUFFIX)
    return stem != name and snapshot_lsn(stem) is not None


_PREFIXES = tuple(name(0).partition("-")[0] + "-" for name in (segment_name, snapshot_name))
"""How the names of segments and snapshots begin ("journal-", "snapshot-")."""


def _warn_lookalike(name: str) -> None:
    """Log ``name`` if it looks like a segment's or a snapshot's but is not: it is not read.

    Such a file is left alone (it may be anyone's), but a segment or a
    snapshot restored from a backup under a wrong name (``journal-6.log``)
    would be left out of recovery without a word. A name of the right shape
    whose LSN is above :data:`~corosm.io.journal.format.LSN_MASK` is no
    journal's either: taken at its word, it made a gap up to that LSN, or a
    snapshot recovery restored and the journal then could not go on from.
    """
    if not name.startswith(_PREFIXES) or _is_snapshot_temp(name):
        return
    named = [  # the LSN in the name, as a segment's, a (damaged) snapshot's or a temp's
        lsn
        for lsn in (
            parse_segment_name(name),
            parse_snapshot_name(name.removesuffix(DAMAGED_SUFFIX)),
            parse_snapshot_name(name.removesuffix(TEMP_SUFFIX)),
        )
        if lsn is not None
    ]
    if named and max(named) <= LSN_MASK:
        return
    if named:
        log.warning(
            "journal: %r is not read: the LSN in its name is above %d, the largest a journal "
            "holds, so no journal wrote it; move it out of the data directory",
            name, LSN_MASK,
        )  # fmt: skip
        return
    log.warning(
        "journal: %r is not read: not a journal file name (%s, %s or %s%s); if it is one, "
        "rename it", name, segment_name(1), snapshot_name(1), snapshot_name(1), DAMAGED_SUFFIX,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Stop:
    """Where replay stopped short of the end of the files: decided, not yet cut.

    At damage in ``path`` (``error``), or, when ``error`` is None, at a last
    segment that a crash left before its header was durable.
    """

    path: str
    size: int
    """The bytes in ``path``."""
    later: tuple[str, ...]
    """The segments after ``path``."""
    error: FrameError | None
    lsn: int
    """The record that should have come next: the first one not replayed."""

    @property
    def torn(self) -> bool:
        """Whether it is what a crash mid-write leaves: damage with nothing valid after it.

        That is, in the last segment (``later`` is empty) and with no valid
        frame of a later batch behind it (``FrameError.torn``).
        """
        return self.error is not None and self.error.torn and not self.later

    def describe(self) -> str:
        if self.error is None:
            return f"{self.path} holds no record, torn while being created"
        return f"{self.path} is damaged at byte {self.error.offset}: {self.error.reason}"


def _cut_padding(fs: FileSystem, path: str, offset: int, size: int) -> None:
    """Cut the zeros from ``offset`` on: space reserved for records and not filled.

    Only where the last frame read ended a batch (or the format does not
    say): :mod:`~corosm.io.journal.files` reserves it, and a crash leaves
    it. It is no damage: nothing was written there.
    """
    fs.truncate(path, offset)
    log.info("journal: %s: %d bytes of zeros after the last record cut off", path, size - offset)


def _cut(
    fs: FileSystem, directory: str, stop: _Stop, truncate_corrupt: bool
) -> tuple[Damage | None, Damage | None]:
    """Cut where replay stopped (else raise); return ``(torn, dropped)``, one of them None."""
    err = stop.error
    if err is None:
        return _remove_unborn(fs, directory, stop.path, stop.size), None
    damage = _cut_damage(fs, directory, stop, err, truncate_corrupt)
    return (damage, None) if stop.torn else (None, damage)


def _cut_damage(
    fs: FileSystem, directory: str, stop: _Stop, err: FrameError, truncate_corrupt: bool
) -> Damage:
    """Cut a torn tail at ``err``, or corruption when allowed (else raise); report what went."""
    path, later = stop.path, stop.later
    lost = stop.size - err.offset
    if stop.torn:
        fs.truncate(path, err.offset)
        log.warning(
            "journal: torn last record cut off: %s at byte %d (%s, %d bytes dropped)",
            path, err.offset, err.reason, lost,
        )  # fmt: skip
        return Damage(path, err.offset, err.reason, lost)
    reason = f"corrupt record: {err.reason}"
    if err.torn:  # nothing valid follows in this file, but later segments exist
        reason += f"; {len(later)} later segment(s) follow, so this is not a torn write"
    if not truncate_corrupt:
        raise CorruptJournal(path, err.offset, f"{reason}; {_cut_remedy(stop)}", cuttable=True)
    fs.truncate(path, err.offset)
    for name in later:
        fs.remove(os.path.join(directory, name))
    if later:
        fs.fsync_dir(directory)
    log.error(
        "journal: corrupt record at %s byte %d (%s): truncated, %d bytes and %d later "
        "segment(s) dropped", path, err.offset, reason, lost, len(later),
    )  # fmt: skip
    return Damage(path, err.offset, reason, lost, later)


def _cut_remedy(stop: _Stop) -> str:
    """What the operator can do about damage replay stopped at that a crash cannot have left."""
    removes = f" and removes the {len(stop.later)} later segment(s)" if stop.later else ""
    return (
        f"replay stops at record lsn {stop.lsn}: restore {os.path.basename(stop.path)} from a "
        f"backup; or, to accept losing records {stop.lsn} on, copy the directory aside and "
        f"recover with truncate_corrupt=True, which cuts the journal here{removes}"
    )


def _remove_unborn(fs: FileSystem, directory: str, path: str, size: int) -> Damage:
    """Remove a segment that a crash left before its header was durable; report it."""
    fs.remove(path)
    fs.fsync_dir(directory)
    log.warning("journal: removed %s, torn while being created", path)
    return Damage(path, 0, "incomplete segment header", size)


@dataclass(frozen=True, slots=True)
class _Fallback:
    """The starting point recovery fell back to, and what it owes the damaged snapshots.

    The rule: whatever a damaged snapshot held must be rebuilt all the same,
    or recovery refuses. A snapshot at LSN ``D`` is only written once records
    ``1..D`` were applied, and a record is applied only once its append was
    acknowledged (:meth:`~corosm.io.journal.control.JournalControl.snapshot_start`
    refuses an LSN beyond the last acknowledged one; in ``always`` mode that
    is the last synced one, so a batch a crash tore is never in a snapshot).
    Its name proves those records existed. So the journal must hold every
    record from ``snap_lsn + 1``, the first the fallback lacks, on: a
    journal that starts late, or leaves a gap, where a damaged snapshot
    held the missing records (:meth:`check_start`, :meth:`check_gap`, before
    the segment after the gap is read) is refused naming that snapshot, not
    the gap; and it must reach the newest damaged snapshot's LSN
    (:meth:`check_end`, where replay stops, before any record is cut). No
    check yields to ``truncate_corrupt``, which cuts the journal, not
    snapshots. To accept the loss of records the journal ends before, the
    operator renames the snapshots aside; a gap no rename repairs.
    """

    snap_lsn: int
    """The LSN of the snapshot loaded, 0 for the initial state."""
    damaged: tuple[CorruptJournal, ...]
    """The damaged snapshots skipped, newest first: all have LSNs above ``snap_lsn``."""

    def check_start(self, has_segments: bool) -> None:
        """Raise if the journal holds no segment at all; one that starts late: :meth:`check_gap`."""
        if self.damaged and not has_segments:
            missing = f"the journal holds no segment, so the records after lsn {self.snap_lsn}"
            self._refuse(missing, f"restore {self._newest} from a backup")

    def check_gap(self, resume: int, first: int, path: str, previous: str | None) -> None:
        """Raise if the records missing before segment ``path`` were in a damaged snapshot.

        The journal continues at ``resume``, but ``path`` starts at ``first``:
        records ``resume..first - 1`` are in no segment. ``previous`` is the
        segment read before it, or None when ``path`` is the first segment
        read (then ``resume`` is ``snap_lsn + 1``). Whether a gap no damaged
        snapshot held is an error is the caller's to say.
        """
        if not self.damaged or _lsn_of(self._newest) < resume:
            return
        name = os.path.basename(path)
        if previous is None:
            where = f"the journal starts at lsn {first} ({name})"
        else:
            where = f"the journal has a gap after {previous}: {name} starts at lsn {first}"
        # a damaged snapshot at first - 1 or later held them all: restoring it bridges the gap
        bridge = [n for e in self.damaged if _lsn_of(n := os.path.basename(e.path)) >= first - 1]
        segments = "the segment(s) that held them"
        restore = (
            f"{bridge[-1]} from a backup, or {segments}" if bridge else f"{segments} from a backup"
        )
        self._refuse(
            f"{where}, so records {resume}..{first - 1}",
            f"restore {restore}; truncate_corrupt does not skip a gap, and no rename repairs it",
        )

    def check_end(self, last: int, stop: _Stop | None) -> None:
        """Raise if the journal, whose last record is ``last``, ends before a damaged snapshot.

        ``stop``: where replay stopped short of the end of the files, if it did.
        """
        reached = max(last, self.snap_lsn)
        lost = [name for e in self.damaged if _lsn_of(name := os.path.basename(e.path)) > reached]
        if not lost:
            return
        where = f" ({stop.describe()})" if stop else ""
        missing = (
            f"the journal ends at lsn {last}{where}, so records {reached + 1}..{_lsn_of(lost[0])}, "
            f"which {lost[0]} held,"
        )
        renames = " and ".join(f"{name} to {name}{DAMAGED_SUFFIX}" for name in lost)
        self._refuse(
            missing,
            f"restore the snapshot from a backup; or, to accept losing them, copy the directory "
            f"aside, rename {renames} and start again, which rebuilds the state up to lsn "
            f"{reached}; truncate_corrupt does not accept this loss",
        )

    @property
    def _newest(self) -> str:
        """The name of the newest damaged snapshot (there is one)."""
        return os.path.basename(self.damaged[0].path)

    def _refuse(self, missing: str, remedy: str) -> NoReturn:
        newest = self.damaged[0]
        which = "; ".join(
            f"{os.path.basename(e.path)} is damaged at byte {e.offset} ({e.reason})"
            for e in self.damaged
        )
        base = (
            f"snapshot lsn {self.snap_lsn}"
            if self.snap_lsn
            else "an empty state (no usable snapshot)"
        )
        raise CorruptJournal(
            newest.path,
            newest.offset,
            f"cannot recover: {which}; the next older starting point is {base}, but {missing} "
            f"exist nowhere else ({remedy})",
        )


def _check_follows(
    fallback: _Fallback, path: str, first: int, expected: int, previous: str | None
) -> None:
    """Raise unless segment ``path``, which starts at ``first``, continues the journal.

    ``expected`` is the record after the last one read, in ``previous``
    (None: ``path`` is the first segment read). The journal continues at
    ``expected`` or after the snapshot, whichever is later; a segment that
    starts after that leaves a gap, one that starts before it (but for the
    first one read, which may start inside the snapshot) overlaps.
    """
    resume = max(expected, fallback.snap_lsn + 1)
    if first > resume:
        fallback.check_gap(resume, first, path, previous)
        after = f" after {previous}" if previous else ""
        raise CorruptJournal(
            path,
            0,
            f"segment starts at lsn {first} but the journal continues at {resume}{after}: "
            f"records {resume}..{first - 1} are in no segment (one deleted, or cut short?): "
            "restore the segment(s) that held them from a backup, or, if "
            f"{os.path.basename(path)} is not this journal's, move it out of the data "
            "directory; truncate_corrupt does not skip a gap",
        )
    if first < expected and previous is not None:
        raise CorruptJournal(
            path,
            0,
            f"segment starts at lsn {first} but the journal continues at {expected}: "
            f"{previous} holds records {first}..{expected - 1} too, so one of the two is not "
            "this journal's (a copy?): move it out of the data directory",
        )


def _lsn_of(snapshot: str) -> int:
    """The LSN in the name of the snapshot file ``snapshot`` (a damaged one's too)."""
    return snapshot_lsn(snapshot) or 0


def _restore(
    fs: FileSystem, directory: str, machine: Machine[S, Any, Any], damaged: list[CorruptJournal]
) -> tuple[str | None, int, S]:
    """The newest snapshot that checks out, restored, as ``(path, lsn, state)``; or none."""
    t0 = time.perf_counter()
    snap = load_newest_snapshot(fs, directory, damaged=damaged)
    if snap is None:
        return None, 0, fresh_state(machine)
    path, lsn, payload = snap
    try:
        state = machine.restore(payload)
    except Exception as exc:
        raise _restore_failure(machine, path, lsn, exc) from exc
    log.info(
        "journal: restored snapshot %s (lsn %d, %d bytes) in %.3f s",
        path, lsn, len(payload), time.perf_counter() - t0,
    )  # fmt: skip
    return path, lsn, state


def _restore_failure(machine: object, path: str, lsn: int, exc: Exception) -> DataError:
    """The error for ``machine.restore`` raising ``exc`` on the sound snapshot ``path``."""
    name = type(machine).__name__
    if isinstance(exc, NotImplementedError):  # Machine.restore's default: it takes no snapshots
        todo = (
            f"open the directory with the machine that wrote it, or give {name} a restore() "
            "that reads it"
        )
    else:
        todo = "fix restore() (it must read every version snapshot() has written)"
    return DataError(
        f"{name}.restore() raised {type(exc).__name__}: {exc} on snapshot {path} (lsn {lsn}), "
        f"which passed its checksums, so it holds what snapshot() wrote: {todo} and restart; "
        "nothing was changed"
    )


#: Seconds between two progress lines of a long replay (logger ``corosm.journal``).
PROGRESS_EVERY = 5.0


def recover(
    directory: str,
    machine: Machine[S, Any, Any],
    *,
    fs: FileSystem | None = None,
    truncate_corrupt: bool = False,
    progress_every: float = PROGRESS_EVERY,
) -> Recovered[S]:
    """Rebuild ``machine``'s state from ``directory`` (see module docs).

    It logs what it reads: the snapshot it restored, then, while segments are
    left and at most every ``progress_every`` seconds, the records replayed so far.
    """
    t0 = time.perf_counter()
    fs = fs or OSFileSystem()
    names = _list_and_clean(fs, directory)
    damaged: list[CorruptJournal] = []
    snap_path, snap_lsn, state = _restore(fs, directory, machine, damaged)

    segments = sorted((f, n) for n in names if (f := segment_lsn(n)) is not None)
    # Segments wholly before the snapshot need not be read: start at the last
    # one that begins at or before the first record we need.
    start = max((i for i, (f, _) in enumerate(segments) if f <= snap_lsn + 1), default=0)
    fallback = _Fallback(snap_lsn, tuple(damaged))
    fallback.check_start(bool(segments))
    expected = snap_lsn + 1
    replayed = read = 0
    shown = time.perf_counter()  # when a progress line was last logged
    stop: _Stop | None = None
    for i in range(start, len(segments)):
        first, name = segments[i]
        path = os.path.join(directory, name)
        later = tuple(n for _, n in segments[i + 1 :])
        _check_follows(fallback, path, first, expected, segments[i - 1][1] if i > start else None)
        data = _read_segment(fs, path)
        read += 1
        if (len(data) < HEADER_SIZE or is_padding(data, 0)) and not later:
            # A crash while the segment was being created (before its header
            # was synced, in space reserved as zeros): it holds no record.
            stop = _Stop(path, len(data), later, None, first)
            expected = max(expected, first)
            break
        batches = _segment_version(path, data) >= BATCHES_MARKED
        scan = _replay(
            data,
            lsn=first,
            skip_upto=snap_lsn,
            state=state,
            machine=machine,
            path=path,
            batches=batches,
        )
        state, expected = scan.state, scan.lsn
        replayed += scan.applied
        err = scan.error
        if err is None:
            if later and (now := time.perf_counter()) - shown >= progress_every:
                shown = now
                log.info(
                    "journal: replaying %s: %d record(s) so far, %d of %d segment(s) read, %.1f s",
                    directory, replayed, i + 1 - start, len(segments) - start, now - t0,
                )  # fmt: skip
            continue
        if (scan.closed or not batches) and is_padding(data, err.offset):
            _cut_padding(fs, path, err.offset, len(data))  # the end of the segment
            continue
        stop = _Stop(path, len(data), later, err, expected)
        break
    fallback.check_end(expected - 1, stop)
    torn, dropped = _cut(fs, directory, stop, truncate_corrupt) if stop else (None, None)
    aside = tuple(set_aside(fs, e.path) for e in damaged)
    next_lsn = max(expected, snap_lsn + 1)
    report = RecoveryReport(
        snap_path,
        snap_lsn,
        replayed,
        read,
        next_lsn,
        time.perf_counter() - t0,
        torn,
        dropped,
        aside,
    )
    log.info(
        "journal: recovered %d record(s) after snapshot lsn %d in %.3f s",
        replayed, snap_lsn, report.seconds,
    )  # fmt: skip
    return Recovered(state, next_lsn, report)
