"""Recovery: rebuild the state from the newest snapshot and the journal after it.

Theory of operation
-------------------
1. Remove leftover ``*.tmp`` files (snapshots that never got renamed).
2. Load the newest snapshot that checks out (``machine.restore``), or start
   from ``machine.initial_state()``. Its LSN ``L`` says which records it holds.
   Damaged newer snapshots are skipped; if the journal does not reach back to
   ``L + 1``, the error names them (they held what is missing).
3. Read the segments in LSN order, each with one big read, and replay every
   record with LSN > ``L`` through ``machine.apply(state,
   machine.decode_record(payload))``: the very function the live path runs
   when an append completes, so the rebuilt state is the live state.
4. Check as we go: headers and versions, both checksums of every frame, LSNs
   consecutive inside a segment and across segments (a gap means lost data).
5. Once the state is rebuilt, rename the damaged snapshots skipped in step 2
   to ``*.damaged``, so that snapshot retention never mistakes one for the
   previous snapshot it keeps as a fallback.

Damage in the last segment after which no valid frame follows is what a
crash in the middle of a write leaves, whatever the damaged bytes are (see
:func:`~corosm.io.journal.format.classify_bad_frame`); in ``always`` mode it
was never acknowledged, so it is cut off and reported (logger
``corosm.journal``). Damage followed by a valid frame, or in any segment but
the last (a segment is synced before the next one is created, so a crash
cannot tear it), raises :class:`CorruptJournal` naming the file and byte
offset, unless ``truncate_corrupt=True``, which cuts the journal there,
removes later segments and reports what was dropped.

The hot loop avoids per-record syscalls and objects beyond the payload: the
file is one ``bytes``, frames are read with ``struct.unpack_from`` and the
header CRC is checked as a residue (see :func:`_replay`).
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from corosm.core.machine import Machine
from corosm.errors import ApplyFailed, CorruptJournal
from corosm.io.journal.files import FileSystem, OSFileSystem
from corosm.io.journal.format import (
    CRC_RESIDUE,
    FRAME_HEAD16,
    FRAME_SIZE,
    HEADER_SIZE,
    JOURNAL_MAGIC,
    TEMP_SUFFIX,
    FrameError,
    check_header,
    classify_bad_frame,
    parse_segment_name,
)
from corosm.io.journal.snapshot import load_newest_snapshot, set_aside

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


def _replay(data: bytes, *, lsn: int, skip_upto: int, state: Any, machine: Any, path: str) -> _Scan:
    """Apply the frames of one segment; stop at the end or at the first bad frame.

    This loop is the restart time (about 10^6 records per minute of writes),
    so every step in it counts: names are bound to locals, the header CRC is
    checked as a residue over the whole 20-byte header (no stored CRC to
    unpack and compare), and the count of applied records is worked out from
    the LSNs afterwards instead of counted. Any frame this loop does not
    accept, it leaves to :func:`classify_bad_frame`.
    """
    unpack = FRAME_HEAD16.unpack_from
    crc32 = zlib.crc32
    residue = CRC_RESIDUE
    apply = machine.apply
    decode = machine.decode_record
    frame_size = FRAME_SIZE
    end = len(data)
    last = end - frame_size  # the last offset at which a whole frame header fits
    first = lsn
    pos = HEADER_SIZE
    try:
        while pos <= last:
            n, flsn, pcrc = unpack(data, pos)
            start = pos + frame_size
            stop = start + n
            if crc32(data[pos:start]) != residue or stop > end:
                break
            payload = data[start:stop]
            if crc32(payload) != pcrc:
                break
            if flsn != lsn:
                reason = f"record has lsn {flsn}, expected {lsn}"
                applied = _count_applied(first, lsn, skip_upto)
                return _Scan(state, pos, lsn, applied, FrameError(pos, reason, False))
            if flsn > skip_upto:
                record = decode(payload)
                try:
                    state = apply(state, record)
                except Exception as exc:
                    failure = ApplyFailed(lsn, type(machine).__name__, exc)
                    failure.__cause__ = exc
                    raise failure from exc
            lsn += 1
            pos = stop
    except ApplyFailed:
        raise
    except Exception as exc:  # the record's bytes check out, but they do not decode
        raise CorruptJournal(path, pos, f"record lsn {lsn} could not be decoded: {exc!r}") from exc
    applied = _count_applied(first, lsn, skip_upto)
    error = None if pos == end else classify_bad_frame(data, pos, lsn)
    return _Scan(state, pos, lsn, applied, error)


def _count_applied(first: int, stop: int, skip_upto: int) -> int:
    """How many of the records ``first .. stop - 1`` have an LSN above ``skip_upto``."""
    return max(0, stop - max(first, skip_upto + 1))


def _list_and_clean(fs: FileSystem, directory: str) -> list[str]:
    """Names in ``directory`` (created if missing), after removing leftover temp files."""
    fs.makedirs(directory)
    names = fs.listdir(directory)
    temps = [n for n in names if n.endswith(TEMP_SUFFIX)]
    for name in temps:
        fs.remove(os.path.join(directory, name))
    if temps:
        fs.fsync_dir(directory)
    return [n for n in names if not n.endswith(TEMP_SUFFIX)]


def _cut_damage(
    fs: FileSystem,
    directory: str,
    *,
    path: str,
    later: list[str],
    err: FrameError,
    size: int,
    truncate_corrupt: bool,
) -> Damage:
    """Cut a torn tail, or corruption when allowed (else raise); report what went."""
    lost = size - err.offset
    if err.torn and not later:  # nothing valid follows the damage: a torn write
        fs.truncate(path, err.offset)
        log.warning(
            "journal: torn last record cut off: %s at byte %d (%s, %d bytes dropped)",
            path, err.offset, err.reason, lost,
        )  # fmt: skip
        return Damage(path, err.offset, err.reason, lost)
    reason = err.reason
    if err.torn:  # nothing valid follows in this file, but later segments exist
        reason += f"; {len(later)} later segment(s) follow, so this is not a torn write"
    if not truncate_corrupt:
        raise CorruptJournal(path, err.offset, reason)
    fs.truncate(path, err.offset)
    for name in later:
        fs.remove(os.path.join(directory, name))
    if later:
        fs.fsync_dir(directory)
    log.error(
        "journal: corrupt record at %s byte %d (%s): truncated, %d bytes and %d later "
        "segment(s) dropped", path, err.offset, reason, lost, len(later),
    )  # fmt: skip
    return Damage(path, err.offset, reason, lost, tuple(later))


def _check_reaches_back(
    damaged: list[CorruptJournal], segments: list[tuple[int, str]], start: int, snap_lsn: int
) -> None:
    """Raise, naming the damaged snapshots, if the journal cannot replace them.

    The journal must hold record ``snap_lsn + 1`` (the first one the loaded
    snapshot, or the initial state, lacks). If it does not, the records
    before its first one were only in the damaged snapshots.
    """
    first = segments[start][0] if segments else None
    if not damaged or (first is not None and first <= snap_lsn + 1):
        return
    newest = damaged[0]
    which = "; ".join(
        f"{os.path.basename(e.path)} is damaged at byte {e.offset} ({e.reason})" for e in damaged
    )
    base = f"snapshot lsn {snap_lsn}" if snap_lsn else "an empty state (no usable snapshot)"
    if first is None:
        missing = f"the journal holds no segment, so the records after lsn {snap_lsn}"
    else:
        missing = f"the journal starts at lsn {first}, so records {snap_lsn + 1}..{first - 1}"
    raise CorruptJournal(
        newest.path,
        newest.offset,
        f"cannot recover: {which}; the next older starting point is {base}, but {missing} "
        "exist nowhere else (restore the snapshot from a backup)",
    )


def recover(
    directory: str,
    machine: Machine[S, Any, Any],
    *,
    fs: FileSystem | None = None,
    truncate_corrupt: bool = False,
) -> Recovered[S]:
    """Rebuild ``machine``'s state from ``directory`` (see module docs)."""
    t0 = time.perf_counter()
    fs = fs or OSFileSystem()
    names = _list_and_clean(fs, directory)
    damaged: list[CorruptJournal] = []
    snap = load_newest_snapshot(fs, directory, damaged=damaged)
    if snap is None:
        snap_path, snap_lsn, state = None, 0, machine.initial_state()
    else:
        snap_path, snap_lsn, payload = snap
        state = machine.restore(payload)

    segments = sorted((f, n) for n in names if (f := parse_segment_name(n)) is not None)
    # Segments wholly before the snapshot need not be read: start at the last
    # one that begins at or before the first record we need.
    start = max((i for i, (f, _) in enumerate(segments) if f <= snap_lsn + 1), default=0)
    _check_reaches_back(damaged, segments, start, snap_lsn)
    expected = snap_lsn + 1
    replayed = read = 0
    torn: Damage | None = None
    dropped: Damage | None = None
    for i in range(start, len(segments)):
        first, name = segments[i]
        path = os.path.join(directory, name)
        later = [n for _, n in segments[i + 1 :]]
        if first > max(expected, snap_lsn + 1) or (first < expected and i > start):
            raise CorruptJournal(
                path, 0, f"segment starts at lsn {first} but the journal continues at {expected}"
            )
        data = fs.read(path)
        read += 1
        if len(data) < HEADER_SIZE and not later:
            # A crash while the segment was being created: it holds no record.
            fs.remove(path)
            fs.fsync_dir(directory)
            torn = Damage(path, 0, "incomplete segment header", len(data))
            log.warning("journal: removed %s, torn while being created", path)
            expected = max(expected, first)
            break
        check_header(path, data, JOURNAL_MAGIC)
        scan = _replay(data, lsn=first, skip_upto=snap_lsn, state=state, machine=machine, path=path)
        state, expected = scan.state, scan.lsn
        replayed += scan.applied
        err = scan.error
        if err is None:
            continue
        damage = _cut_damage(
            fs,
            directory,
            path=path,
            later=later,
            err=err,
            size=len(data),
            truncate_corrupt=truncate_corrupt,
        )
        if err.torn and not later:
            torn = damage
        else:
            dropped = damage
        break
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
