"""Rebuilding a machine's state from what survived on a (simulated) disk.

Theory of operation
-------------------
Load the newest valid snapshot (``machine.restore``), then replay every
journal record after its LSN through ``machine.apply``, the same function the
live machine ran when each append completed. A torn tail (what a crash in the
middle of the last write leaves) is cut off, durably, so that the next segment
can follow it; damage anywhere else stops recovery with
:class:`~corosm.errors.CorruptJournal`, naming the file and the byte offset.

This module reads the journal's own format (:mod:`corosm.io.journal.format`)
through the journal's :class:`~corosm.io.journal.files.FileSystem` protocol.
It is the simulator's recovery hook; a world can be given another one (the
tests give it deliberately broken ones).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from corosm.core.machine import Machine
from corosm.errors import CorruptJournal, DataError
from corosm.io.journal.files import FileSystem
from corosm.io.journal.format import (
    FRAME_HEADER,
    FRAME_SIZE,
    HEADER_SIZE,
    JOURNAL_MAGIC,
    check_header,
    classify_bad_frame,
    decode_snapshot,
    parse_segment_name,
    parse_snapshot_name,
)


@dataclass(frozen=True, slots=True)
class Recovered:
    """What recovery rebuilt: the state, the next LSN to write, and what it noticed."""

    state: Any
    next_lsn: int
    snapshot_lsn: int
    replayed: int
    notes: tuple[str, ...] = ()


RecoverFn = Callable[[FileSystem, str, Machine[Any, Any, Any]], Recovered]
"""``recover(fs, directory, machine) -> Recovered``: the world's recovery hook."""


def recover(fs: FileSystem, directory: str, machine: Machine[Any, Any, Any]) -> Recovered:
    """Newest snapshot, then every later journal record (see module docs)."""
    names = sorted(fs.listdir(directory))
    state, snap_lsn, notes = load_snapshot(fs, directory, machine, names)
    segments = sorted(
        (first, name) for name in names if (first := parse_segment_name(name)) is not None
    )
    next_lsn = snap_lsn + 1
    replayed = 0
    for index, (_, name) in enumerate(segments):
        path = os.path.join(directory, name)
        records, note = read_segment(fs, path, last=index == len(segments) - 1)
        if note:
            notes.append(note)
        for lsn, payload in records:
            if lsn <= snap_lsn:
                continue
            if lsn != next_lsn:
                raise DataError(f"{path}: record lsn {lsn} follows {next_lsn - 1}: a gap")
            state = machine.apply(state, machine.decode_record(payload))
            next_lsn = lsn + 1
            replayed += 1
    return Recovered(state, next_lsn, snap_lsn, replayed, tuple(notes))


def load_snapshot(
    fs: FileSystem, directory: str, machine: Machine[Any, Any, Any], names: list[str]
) -> tuple[Any, int, list[str]]:
    """The newest snapshot's state and LSN, or the initial state at LSN 0."""
    snaps = sorted(
        ((lsn, name) for name in names if (lsn := parse_snapshot_name(name)) is not None),
        reverse=True,
    )
    notes: list[str] = []
    for _, name in snaps:
        path = os.path.join(directory, name)
        try:
            lsn, payload = decode_snapshot(path, fs.read(path))
        except CorruptJournal as exc:  # a newer snapshot half-written: use an older one
            notes.append(f"skipped snapshot: {exc}")
            continue
        return machine.restore(payload), lsn, notes
    return machine.initial_state(), 0, notes


def read_segment(fs: FileSystem, path: str, last: bool) -> tuple[list[tuple[int, bytes]], str]:
    """The valid records of one segment; a torn tail of the last one is cut off."""
    data = fs.read(path)
    if len(data) < HEADER_SIZE and last:
        fs.truncate(path, 0)
        return [], f"{path}: incomplete header ({len(data)} bytes) cut off"
    check_header(path, data, JOURNAL_MAGIC)
    records: list[tuple[int, bytes]] = []
    offset = HEADER_SIZE
    crc32 = zlib.crc32
    while offset < len(data):
        end = offset + FRAME_SIZE
        ok = end <= len(data)
        if ok:
            n, lsn, pcrc, hcrc = FRAME_HEADER.unpack_from(data, offset)
            ok = crc32(data[offset : offset + 16]) == hcrc and end + n <= len(data)
            ok = ok and crc32(data[end : end + n]) == pcrc
        if not ok:
            bad = classify_bad_frame(data, offset)
            if not (bad.torn and last):
                raise CorruptJournal(path, offset, bad.reason)
            fs.truncate(path, offset)
            return records, f"{path}: torn tail at byte {offset} cut off ({bad.reason})"
        records.append((lsn, data[end : end + n]))
        offset = end + n
    return records, ""
