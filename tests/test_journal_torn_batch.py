"""A batch torn out of order: what a crash leaves in a segment written over reserved zeros.

In ``fsync="always"`` mode the journal writes a segment over zeros set aside
ahead of its records, and writes a batch only once the batch before it is
synced. A crash during a batch's sync may then keep any of the pages that
batch was written to and lose the others (zeros there), so a hole of zeros
may be followed by valid frames of the same batch. Format version 2 marks
which batch each frame is of: recovery cuts such a batch at its first damage
(it was never acknowledged) and still stops at damage that reaches back
into a batch before it.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corosm.errors import CorruptJournal
from corosm.io.journal import Journal, JournalOptions, recover
from corosm.io.journal.files import RESERVE_BYTES
from corosm.io.journal.format import (
    BATCH_END,
    FILE_HEADER,
    FRAME_HEAD16,
    FRAME_HEADER,
    FRAME_SIZE,
    HEADER_SIZE,
    JOURNAL_MAGIC,
    LSN_MASK,
    MAX_RECORD_BYTES,
    check_header,
    encode_frames,
    file_header,
    read_frames,
    segment_name,
)
from journal_helpers import ListMachine

PAGE = 512  # what a crash keeps or loses as a whole (small, so that batches span many)
RESERVE = 4096  # zeros after the last batch, as a crash leaves a reserved segment

payload = st.binary(min_size=0, max_size=300)
batches_st = st.lists(st.lists(payload, min_size=1, max_size=8), min_size=1, max_size=5)


def frames(data: bytes) -> list[tuple[int, int, int, int]]:
    """``(offset, length field, lsn field, end)`` of every frame of an undamaged segment."""
    out, pos = [], HEADER_SIZE
    while pos + FRAME_SIZE <= len(data) and data[pos : pos + FRAME_SIZE] != bytes(FRAME_SIZE):
        length, field, _, _ = FRAME_HEADER.unpack_from(data, pos)
        end = pos + FRAME_SIZE + (length & MAX_RECORD_BYTES)
        out.append((pos, length, field, end))
        pos = end
    return out


def build(batches: list[list[bytes]]) -> tuple[bytes, list[int]]:
    """A segment holding ``batches`` (LSNs from 1) then reserved zeros; where each batch starts."""
    data, starts, lsn = bytearray(file_header(JOURNAL_MAGIC)), [], 1
    for batch in batches:
        starts.append(len(data))
        data += encode_frames(batch, lsn)
        lsn += len(batch)
    return bytes(data) + bytes(RESERVE), starts


def write(tmp_path: Path, data: bytes) -> Path:
    for old in tmp_path.glob("journal-*"):
        old.unlink()
    seg = tmp_path / segment_name(1)
    seg.write_bytes(data)
    return seg


def test_a_batch_says_which_frames_are_its_own() -> None:
    data = encode_frames([b"a", b"bb", b"ccc"], 10)
    heads = []
    pos = 0
    while pos < len(data):
        length, field, _pcrc = FRAME_HEAD16.unpack_from(data, pos)
        heads.append((length, field & LSN_MASK, field >> 48))
        pos += FRAME_SIZE + (length & MAX_RECORD_BYTES)
    # the index in the batch above the LSN; the last frame marked as the end
    assert heads == [(1, 10, 0), (2, 11, 1), (3 | BATCH_END, 12, 2)]
    out: list[bytes] = []
    assert read_frames(data, 0, 10, 99, out) == len(data) and out == [b"a", b"bb", b"ccc"]
    # an index from 65535 on is written as 65535
    big = encode_frames([b""] * 65537, 1)
    fields = [FRAME_HEAD16.unpack_from(big, i * FRAME_SIZE)[1] for i in range(65533, 65537)]
    assert [(f & LSN_MASK, f >> 48) for f in fields] == [
        (65534, 65533),
        (65535, 65534),
        (65536, 0xFFFF),
        (65537, 0xFFFF),
    ]
    last = FRAME_HEAD16.unpack_from(big, len(big) - FRAME_SIZE)
    assert last == (BATCH_END, 65537 | (0xFFFF << 48), zlib.crc32(b""))


def test_new_segments_are_version_2_and_version_1_is_still_read(tmp_path: Path) -> None:
    with Journal(str(tmp_path / "new")) as j:
        j.append(b"x", timeout=10)
    (seg,) = (tmp_path / "new").glob("journal-*.log")
    assert check_header(str(seg), seg.read_bytes(), JOURNAL_MAGIC) == 2
    # a version 1 segment: no index, no mark
    v1 = bytearray(FILE_HEADER.pack(JOURNAL_MAGIC, 1, 0))
    for lsn, p in enumerate([b"a", b"b"], start=1):
        head = FRAME_HEAD16.pack(len(p), lsn, zlib.crc32(p))
        v1 += head + struct.pack("<I", zlib.crc32(head)) + p
    old = tmp_path / "old"
    old.mkdir()
    (old / segment_name(1)).write_bytes(bytes(v1))
    rec = recover(str(old), ListMachine())
    assert rec.state == [b"a", b"b"] and rec.next_lsn == 3


def test_a_hole_in_version_1_followed_by_a_valid_frame_is_still_corruption(
    tmp_path: Path,
) -> None:
    v1 = bytearray(FILE_HEADER.pack(JOURNAL_MAGIC, 1, 0))
    for lsn, p in enumerate([b"a" * 40, b"b" * 40, b"c" * 40], start=1):
        head = FRAME_HEAD16.pack(len(p), lsn, zlib.crc32(p))
        v1 += head + struct.pack("<I", zlib.crc32(head)) + p
    second = HEADER_SIZE + FRAME_SIZE + 40
    v1[second : second + FRAME_SIZE] = bytes(FRAME_SIZE)  # no batches to say it was torn
    write(tmp_path, bytes(v1))
    with pytest.raises(CorruptJournal, match="a valid record"):
        recover(str(tmp_path), ListMachine())


def test_zeros_after_part_of_the_last_batch_are_a_torn_batch(tmp_path: Path) -> None:
    data, _ = build([[b"a", b"b"], [b"c", b"d", b"e"]])
    third = frames(data)[3][0]  # "d": the last batch lost from here on
    seg = write(tmp_path, data[:third] + bytes(len(data) - third))
    rec = recover(str(tmp_path), ListMachine())
    assert rec.state == [b"a", b"b", b"c"] and rec.next_lsn == 4
    assert rec.report.torn_tail is not None and rec.report.torn_tail.offset == third
    assert seg.stat().st_size == third
    # while zeros after a whole batch are only the reserve, cut without a report
    seg = write(tmp_path, data)
    rec = recover(str(tmp_path), ListMachine())
    assert rec.state == [b"a", b"b", b"c", b"d", b"e"] and rec.report.torn_tail is None
    assert seg.stat().st_size == len(data) - RESERVE


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=batches_st, data=st.data())
def test_the_last_batch_torn_in_any_order_is_cut_and_nothing_before_it_is_lost(
    tmp_path: Path, batches: list[list[bytes]], data: st.DataObject
) -> None:
    segment, starts = build(batches)
    last_start, last_end = starts[-1], len(segment) - RESERVE
    pages = range(last_start // PAGE, (last_end - 1) // PAGE + 1)
    lost = data.draw(st.sets(st.sampled_from(pages)), label="pages lost")
    torn = bytearray(segment)
    for page in lost:  # the batch's bytes on a lost page are the reserve's zeros again
        lo, hi = max(last_start, page * PAGE), min(last_end, (page + 1) * PAGE)
        torn[lo:hi] = bytes(hi - lo)
    seg = write(tmp_path, bytes(torn))

    rec = recover(str(tmp_path), ListMachine())

    changed = next((i for i in range(len(torn)) if torn[i] != segment[i]), len(segment))
    kept = [(pos, end) for pos, _, _, end in frames(segment) if end <= changed]
    everything = [p for batch in batches for p in batch]
    assert rec.state == everything[: len(kept)]  # earlier batches whole, the last a prefix
    assert rec.next_lsn == len(kept) + 1
    cut = kept[-1][1] if kept else HEADER_SIZE
    assert seg.stat().st_size == cut
    # Reported as torn unless all that was cut is zeros after a batch's end:
    # the reserve, as far as anyone can tell (a batch lost whole looks the same).
    reserve_only = not any(torn[cut:]) and cut in (HEADER_SIZE, *starts, last_end)
    assert (rec.report.torn_tail is not None) == (not reserve_only)
    assert rec.report.corruption_dropped is None


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.lists(payload, min_size=1, max_size=6), min_size=2, max_size=5),
       data=st.data())  # fmt: skip
def test_damage_that_reaches_back_into_an_earlier_batch_stops_recovery(
    tmp_path: Path, batches: list[list[bytes]], data: st.DataObject
) -> None:
    segment, starts = build(batches)
    all_frames = frames(segment)
    last_frame = all_frames[-1][0]  # stays whole: something valid follows the damage
    earlier = [f for f in all_frames if f[0] < starts[-1]]
    at = data.draw(st.sampled_from(earlier), label="first damaged frame")[0]
    stop = data.draw(st.integers(at + FRAME_SIZE, last_frame), label="damage ends at")
    damaged = bytearray(segment)
    damaged[at:stop] = bytes(stop - at)  # its header at least: never all zeros
    write(tmp_path, bytes(damaged))
    with pytest.raises(CorruptJournal) as info:
        recover(str(tmp_path), ListMachine())
    assert info.value.offset == at
    assert "a valid record" in str(info.value)


def test_a_batch_torn_by_a_crash_of_the_journal_in_always_mode(tmp_path: Path) -> None:
    # The real writer: each append its own batch, over reserved zeros.
    directory = tmp_path / "j"
    with Journal(str(directory)) as j:
        for p in (b"one", b"two"):
            j.append(p, timeout=10)
        (seg,) = directory.glob("journal-*.log")
        crashed = seg.read_bytes()  # while open: the segment still has its reserve
    assert len(crashed) > os.path.getsize(seg)  # closing cut the reserve; the crash keeps it
    # a third batch of three records whose first page never reached the disk
    third = encode_frames([b"x" * 200, b"y" * 200, b"z" * 200], 3)
    end = len(crashed.rstrip(b"\x00"))
    torn = bytearray(crashed)
    torn[end : end + len(third)] = third
    torn[end : end + 300] = bytes(300)
    seg.write_bytes(bytes(torn))
    rec = recover(str(directory), ListMachine())
    assert rec.state == [b"one", b"two"] and rec.next_lsn == 3
    torn_tail = rec.report.torn_tail
    assert torn_tail is not None and torn_tail.offset == end
    assert "its own batch" in torn_tail.reason


def test_zeros_left_after_a_rotated_segment_are_the_reserve_not_damage(tmp_path: Path) -> None:
    # A rotation cuts the old segment's zeros without a sync: a crash may leave them.
    first, _ = build([[b"a", b"b"], [b"c"]])
    second = file_header(JOURNAL_MAGIC) + encode_frames([b"d", b"e"], 4)
    (tmp_path / segment_name(1)).write_bytes(first)
    (tmp_path / segment_name(4)).write_bytes(second)
    rec = recover(str(tmp_path), ListMachine())
    assert rec.state == [b"a", b"b", b"c", b"d", b"e"] and rec.next_lsn == 6
    assert rec.report.torn_tail is None and rec.report.corruption_dropped is None
    # but zeros after part of a batch, in a segment another follows, are damage
    third = frames(first)[1][0]  # "b": its batch lost from there on
    cut = first[:third] + bytes(len(first) - third)
    (tmp_path / segment_name(1)).write_bytes(cut)
    with pytest.raises(CorruptJournal, match="later segment"):
        recover(str(tmp_path), ListMachine())


@pytest.mark.parametrize("fsync", ["always", "interval", "never"])
def test_segments_are_reserved_ahead_in_always_mode_only(tmp_path: Path, fsync: str) -> None:
    # Only where each batch is synced before the next can a crash tear the last batch alone.
    options = JournalOptions(fsync=fsync)  # type: ignore[arg-type]
    assert options.reserve is (fsync == "always")
    with Journal(str(tmp_path), options=options) as j:
        assert j.control.writer.reserve is options.reserve
        j.append(b"x", timeout=10)
        size = os.path.getsize(tmp_path / segment_name(1))
        assert size == (RESERVE_BYTES if options.reserve else HEADER_SIZE + FRAME_SIZE + 1)
