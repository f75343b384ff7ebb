"""Damaged data directories, for the fuzz tests of recovery: layouts, and what recovery must do.

A *layout* is a data directory written by the real :class:`Journal`
(``fsync="always"``) with every append acknowledged, and what is known of
it without reading it the way recovery does: which records it holds,
which frame of which segment holds each, and which batch (one write, one
sync) each frame was part of. :func:`expect` states the outcome of
``docs/journal-format.md``'s recovery rules for a copy of a layout damaged
in known ways. It looks only at which of the original bytes are still in
place (which frames are whole, whose headers are), never parses what
damage left behind: so it does not share recovery's blind spots.
"""

from __future__ import annotations

import queue
import shutil
import struct
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from corosm.io.journal import Journal, JournalCompletion, JournalOptions
from corosm.io.journal.format import (
    BATCH_END,
    FRAME_HEADER,
    FRAME_SIZE,
    HEADER_SIZE,
    JOURNAL_MAGIC,
    LSN_MASK,
    MAX_RECORD_BYTES,
    SNAPSHOT_MAGIC,
    segment_name,
    snapshot_name,
)
from journal_helpers import ListMachine

BOUND = 10.0


class Records(ListMachine):
    """The acknowledged payloads, in LSN order; snapshots are the payloads length-prefixed."""

    def snapshot(self, state: list[bytes]) -> bytes:
        return b"".join(struct.pack("<H", len(p)) + p for p in state)

    def restore(self, data: bytes) -> list[bytes]:
        out, pos = [], 0
        while pos < len(data):
            (n,) = struct.unpack_from("<H", data, pos)
            out.append(data[pos + 2 : pos + 2 + n])
            pos += 2 + n
        return out


# -- the data directories -----------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """Where record ``lsn`` lies in its segment, and which batch it was written in."""

    off: int
    end: int
    lsn: int
    batch: int
    ends_batch: bool


@dataclass(frozen=True)
class Segment:
    """A segment as the journal left it: its bytes and its frames."""

    name: str
    first: int
    data: bytes
    frames: tuple[Frame, ...]

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # Hypothesis: names are enough
        printer.text(self.name)

    def lsn_at(self, offset: int) -> int:
        """The first LSN whose frame holds byte ``offset`` or comes after it."""
        if offset < HEADER_SIZE:
            return self.first
        return next((f.lsn for f in self.frames if f.end > offset), self.first + len(self.frames))


@dataclass(frozen=True)
class Layout:
    """A data directory the journal wrote, and what it holds where."""

    path: Path
    records: tuple[bytes, ...]  # every one acknowledged; records[i] has LSN i + 1
    segments: tuple[Segment, ...]  # in LSN order
    snapshots: dict[int, bytes]  # LSN -> file contents

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(f"<{self.path.parent.name}>")


@dataclass(frozen=True)
class Spec:
    """How to write a layout."""

    batches: tuple[int, ...]  # records per batch (one submit each, acknowledged before the next)
    snapshot_after: frozenset[int]  # batch indexes after which a snapshot is written
    segment_bytes: int


SPECS = {
    "journal only": Spec((1, 3, 2, 1, 4, 1, 2, 3, 1, 3, 2, 3), frozenset(), 150),
    "two snapshots kept": Spec((2, 1, 3, 1, 2, 4, 1, 1, 3, 2, 3, 2), frozenset({2, 5, 7}), 110),
    "snapshot at the end": Spec((1, 2, 1, 3, 2, 2, 3, 2), frozenset({3, 7}), 120),
}


def payload(lsn: int) -> bytes:
    return b"r%03d" % lsn + b"." * (lsn % 5)


def build(directory: Path, spec: Spec) -> Layout:
    """Write ``spec`` through the real journal; return what it acknowledged and where it lies."""
    acks: queue.Queue[JournalCompletion] = queue.Queue()

    def sink(completions: Sequence[JournalCompletion]) -> None:
        for c in completions:
            acks.put(c)

    machine, records, batch_of = Records(), list[bytes](), list[int]()
    options = JournalOptions(
        segment_bytes=spec.segment_bytes, snapshot_every_records=0, snapshot_every_bytes=0
    )
    journal = Journal(str(directory), options=options)
    journal.start(sink)
    try:
        for b, size in enumerate(spec.batches):
            batch = [payload(len(records) + k + 1) for k in range(size)]
            journal.submit([(None, p) for p in batch])
            for p in batch:  # one submit, waited for, is one batch
                _, lsn, error = acks.get(timeout=BOUND)
                assert error is None and lsn == len(records) + 1
                records.append(p)
                batch_of.append(b)
            if b in spec.snapshot_after:
                state = list(records)
                assert journal.start_snapshot(len(records), partial(machine.snapshot, state))
                assert journal.wait_snapshot(BOUND)
    finally:
        journal.close()
    segments = tuple(
        _parse_segment(p.name, p.read_bytes(), batch_of)
        for p in sorted(directory.glob("journal-*.log"))
    )
    snapshots = {int(p.name[9:29]): p.read_bytes() for p in directory.glob("snapshot-*.snap")}
    assert segments and all(s.frames for s in segments)
    assert segments[-1].frames[-1].lsn == len(records)
    return Layout(directory, tuple(records), segments, snapshots)


def _parse_segment(name: str, data: bytes, batch_of: list[int]) -> Segment:
    """The frames of an undamaged segment, checked against what was submitted."""
    first = lsn = int(name[8:28])
    assert data[:8] == JOURNAL_MAGIC
    frames, pos = [], HEADER_SIZE
    while pos < len(data):
        length, lsn_field, _, _ = FRAME_HEADER.unpack_from(data, pos)
        end = pos + FRAME_SIZE + (length & MAX_RECORD_BYTES)
        last = lsn == len(batch_of) or batch_of[lsn] != batch_of[lsn - 1]
        assert lsn_field & LSN_MASK == lsn and bool(length & BATCH_END) == last
        frames.append(Frame(pos, end, lsn, batch_of[lsn - 1], last))
        pos, lsn = end, lsn + 1
    assert pos == len(data)  # a segment closed in order ends with its last frame
    return Segment(name, first, data, tuple(frames))


@contextmanager
def damaged_copy(layout: Layout) -> Iterator[Path]:
    parent = Path(tempfile.mkdtemp(dir=layout.path.parent.parent))
    try:
        shutil.copytree(layout.path, parent / "data")
        yield parent / "data"
    finally:
        shutil.rmtree(parent)


# -- the expected outcome, from the documented rules ----------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What recovery must do: refuse (``error``), or recover so much and report so."""

    records: int = 0  # the state holds the first `records` acknowledged records
    snapshot_lsn: int = 0
    torn: tuple[str, int] | None = None  # (segment, offset) cut as a torn write
    dropped: tuple[str, int, tuple[str, ...]] | None = None  # truncate_corrupt's cut
    damaged: tuple[str, ...] = ()  # snapshots set aside
    error: tuple[str, int | None, bool] | None = None  # (file, offset, cuttable) refused


def snapshot_ok(layout: Layout, lsn: int, data: bytes) -> bool:
    """Whether a snapshot file still holds what was written under that name.

    Its header may say version 1 or 2 (the snapshot format is the same).
    """
    orig = layout.snapshots.get(lsn)
    return (
        orig is not None
        and len(data) == len(orig)
        and data[16:] == orig[16:]
        and data[:8] == SNAPSHOT_MAGIC
        and int.from_bytes(data[8:12], "little") in (1, 2)
        and data[12:16] == bytes(4)
    )


def header_error(data: bytes) -> int | None:
    """Where a segment's file header is refused (magic, version, reserved bytes), or None."""
    if len(data) < HEADER_SIZE or data[:8] != JOURNAL_MAGIC:
        return 0
    if int.from_bytes(data[8:12], "little") not in (1, 2):
        return 8
    return 12 if data[12:16] != bytes(4) else None


@dataclass(frozen=True)
class Read:
    """How replay of one segment ends, by the documented rules."""

    records: int  # valid frames read from its start
    stop: int | None = None  # where it stopped at damage; None: at its end, or at reserved zeros
    torn: bool = False  # no valid frame of another batch follows: a crash could have left it


def read_segment(seg: Segment | None, data: bytes) -> Read:
    """Replay of ``data``, damaged bytes of ``seg``; None: a copy of another segment.

    A segment copied under another name holds frames of other LSNs: replay
    stops at its first frame, which is whole, so that is no torn write.
    """
    if seg is None:
        return Read(0, HEADER_SIZE)
    batches = int.from_bytes(data[8:12], "little") >= 2  # version 1 frames say no batch
    same = [data[f.off : f.end] == seg.data[f.off : f.end] for f in seg.frames]
    good = same.index(False) if False in same else len(same)
    bad = seg.frames[good] if good < len(seg.frames) else None
    stop = bad.off if bad else len(seg.data)
    closed = good == 0 or seg.frames[good - 1].ends_batch
    if len(data) == stop or ((closed or not batches) and not any(data[stop:])):
        return Read(good)  # the end, or zeros after a batch: space reserved, not filled
    # rule 5: the whole frame headers after the damage decide
    valid = [
        f
        for f in seg.frames[good + 1 :]
        if data[f.off : f.off + FRAME_SIZE] == seg.data[f.off : f.off + FRAME_SIZE]
    ]
    same_batch = batches and bad is not None and all(f.batch == bad.batch for f in valid)
    return Read(good, stop, not valid or same_batch)


def expect(
    layout: Layout,
    segs: dict[int, bytes],
    snaps: dict[int, bytes],
    truncate_corrupt: bool,
    copies: frozenset[int] = frozenset(),
) -> Outcome:
    """What recovery must do with these files (the rest are strays).

    ``segs`` and ``snaps`` hold every file named as a segment or a snapshot,
    by the LSN in its name; a segment is the layout's, perhaps damaged in
    place, unless its LSN is in ``copies`` (a copy of another segment).
    """
    damaged: list[int] = []
    snap_lsn = 0
    for lsn in sorted(snaps, reverse=True):  # rule 2: the newest that checks out
        if snapshot_ok(layout, lsn, snaps[lsn]):
            snap_lsn = lsn
            break
        damaged.append(lsn)
    firsts = sorted(segs)
    start = max((i for i, first in enumerate(firsts) if first <= snap_lsn + 1), default=0)
    if damaged and (not firsts or firsts[start] > snap_lsn + 1):
        return Outcome(error=(snapshot_name(damaged[0]), None, False))
    truth = {s.first: s for s in layout.segments}
    expected, torn, dropped, refused = snap_lsn + 1, None, None, None
    for i in range(start, len(firsts)):
        first, data = firsts[i], segs[firsts[i]]
        name, later = segment_name(first), tuple(map(segment_name, firsts[i + 1 :]))
        resume = max(expected, snap_lsn + 1)
        if first > resume and damaged and damaged[0] >= resume:
            return Outcome(error=(snapshot_name(damaged[0]), None, False))  # rule 2: it held them
        if first > resume or (first < expected and i > start):
            return Outcome(error=(name, 0, False))  # rule 4: a gap, or an overlap
        if (len(data) < HEADER_SIZE or not any(data)) and not later:
            torn = (name, 0)  # unborn: a crash while it was created
            expected = max(expected, first)
            break
        if (at := header_error(data)) is not None:
            return Outcome(error=(name, at, False))
        read = read_segment(None if first in copies else truth[first], data)
        expected = first + read.records
        if read.stop is None:
            continue
        if read.torn and not later:
            torn = (name, read.stop)
        elif not truncate_corrupt:
            refused = Outcome(error=(name, read.stop, True))
        else:
            dropped = (name, read.stop, later)
        break
    # rule 2: the journal must reach every damaged snapshot's LSN (those records were
    # acknowledged), else recovery refuses, before it cuts anything and before rule 6 refuses
    if damaged and max(expected - 1, snap_lsn) < damaged[0]:
        return Outcome(error=(snapshot_name(damaged[0]), None, False))
    if refused:
        return refused
    aside = tuple(snapshot_name(lsn) for lsn in damaged)
    return Outcome(max(expected - 1, snap_lsn), snap_lsn, torn, dropped, aside)


def files_of(directory: Path, layout: Layout) -> tuple[dict[int, bytes], dict[int, bytes]]:
    """Every file named as a segment, and as a snapshot, by the LSN in its name."""
    lsns = range(len(layout.records) + 4)
    segs = {n: p.read_bytes() for n in lsns if (p := directory / segment_name(n)).is_file()}
    snaps = {n: p.read_bytes() for n in lsns if (p := directory / snapshot_name(n)).is_file()}
    return segs, snaps
