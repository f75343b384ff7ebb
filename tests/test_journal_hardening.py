"""Journal hardening: snapshot fallback, torn tail vs corruption, reserved header bytes.

Fuzz-like cases run with fixed seeds, so a failure repeats exactly; the seed
is in the test id.
"""

from __future__ import annotations

import json
import logging
import random
import struct
from pathlib import Path

import pytest

from corosm.errors import CorruptJournal, UsageError
from corosm.io.journal import (
    FaultyFS,
    Journal,
    JournalOptions,
    OSFileSystem,
    open_journal,
    recover,
    write_snapshot,
)
from corosm.io.journal.format import (
    FRAME_SIZE,
    HEADER_SIZE,
    JOURNAL_MAGIC,
    LSN_MASK,
    decode_snapshot,
    encode_frames,
    file_header,
    find_frame,
    segment_name,
    snapshot_name,
)
from corosm.io.journal.snapshot import remove_covered
from journal_helpers import ListMachine

BOUND = 10.0


class SnapListMachine(ListMachine):
    """ListMachine with snapshots: the list of payloads as JSON."""

    def snapshot(self, state: list[bytes]) -> bytes:
        return json.dumps([p.decode() for p in state]).encode()

    def restore(self, data: bytes) -> list[bytes]:
        return [p.encode() for p in json.loads(data)]


def payloads(n: int, start: int = 1) -> list[bytes]:
    return [f"r{i}".encode() for i in range(start, start + n)]


def segment_bytes(records: list[bytes], first_lsn: int = 1) -> bytes:
    """A segment of ``records``, each its own batch: all acknowledged, one by one."""
    frames = (encode_frames([r], first_lsn + i) for i, r in enumerate(records))
    return file_header(JOURNAL_MAGIC) + b"".join(frames)


def frame_starts(records: list[bytes]) -> list[int]:
    """Byte offset of each record's frame in a segment that holds ``records``."""
    starts = [HEADER_SIZE]
    for p in records[:-1]:
        starts.append(starts[-1] + FRAME_SIZE + len(p))
    return starts


def damage(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def snapshot_journal(directory: Path, n: int, every: int) -> None:
    """Append ``n`` records through a Journal that snapshots every ``every`` records."""
    m = SnapListMachine()
    opts = JournalOptions(segment_bytes=64, snapshot_every_records=every)
    state = m.initial_state()
    with Journal(str(directory), options=opts) as j:
        for p in payloads(n):
            lsn = j.append(p, timeout=BOUND)
            state = m.apply(state, p)
            if j.snapshot_due():
                copy = list(state)
                assert j.start_snapshot(lsn, lambda c=copy: m.snapshot(c))  # type: ignore[misc]
                assert j.wait_snapshot(BOUND)


def names(directory: Path, pattern: str) -> list[str]:
    return sorted(p.name for p in directory.glob(pattern))


# -- 1. no snapshot is a single point of failure ---------------------------------------


def test_newest_snapshot_damaged_recovery_uses_the_previous_one(tmp_path: Path) -> None:
    snapshot_journal(tmp_path, 50, every=20)  # snapshots at 20 and 40
    assert names(tmp_path, "*.snap") == [snapshot_name(20), snapshot_name(40)]
    damage(tmp_path / snapshot_name(40), -1)
    rec = recover(str(tmp_path), SnapListMachine())
    assert rec.state == payloads(50)
    assert (rec.report.snapshot_lsn, rec.report.records_replayed) == (20, 30)
    assert rec.report.damaged_snapshots == (str(tmp_path / snapshot_name(40)) + ".damaged",)


def test_journal_start_keeps_the_previous_snapshot_and_its_segments(tmp_path: Path) -> None:
    # Two snapshots whose cleanup never ran (a stop right after each was written).
    fs, m = OSFileSystem(), SnapListMachine()
    with Journal(str(tmp_path), options=JournalOptions(segment_bytes=64)) as j:
        for p in payloads(30):
            lsn = j.append(p, timeout=BOUND)
            if lsn in (10, 20):
                write_snapshot(fs, str(tmp_path), lsn, m.snapshot(payloads(lsn)))
    journal, rec = open_journal(str(tmp_path), m)
    assert rec.report.snapshot_lsn == 20
    journal.start()  # drops what the snapshot before the loaded one covers, no more
    journal.close()
    assert names(tmp_path, "*.snap") == [snapshot_name(10), snapshot_name(20)]
    firsts = [int(n[8:28]) for n in names(tmp_path, "journal-*.log")]
    assert min(firsts) <= 11 < firsts[1]  # the segment holding record 11 is kept...
    assert min(firsts) > 1  # ...and the ones wholly covered by snapshot 10 are gone
    damage(tmp_path / snapshot_name(20), -1)
    again = recover(str(tmp_path), m)
    assert again.state == payloads(30)
    assert again.report.snapshot_lsn == 10


def test_remove_covered_at_start_follows_the_same_rule_as_after_a_snapshot() -> None:
    def layout() -> FaultyFS:
        fs = FaultyFS()
        fs.makedirs("/j")
        for name in [*map(segment_name, (1, 6, 11, 16, 21)), *map(snapshot_name, (5, 12, 20))]:
            f = fs.create(f"/j/{name}")
            f.close()
        return fs

    after_snapshot, at_start = layout(), layout()
    removed = remove_covered(after_snapshot, "/j", 20)  # as a snapshot's cleanup calls it
    journal = Journal("/j", fs=at_start, next_lsn=22, snapshot_lsn=20)
    journal.start()  # calls remove_covered(fs, "/j", 20) itself
    journal.close()
    assert sorted(removed) == [segment_name(1), segment_name(6), snapshot_name(5)]
    assert sorted(at_start.listdir("/j")) == sorted(
        [*after_snapshot.listdir("/j"), segment_name(22)]
    )


@pytest.mark.parametrize("older", ["damaged", "none"])
def test_no_usable_snapshot_and_journal_too_short_names_the_damaged_snapshots(
    tmp_path: Path, older: str
) -> None:
    snapshot_journal(tmp_path, 50, every=20)  # snapshots at 20 and 40, journal from 21
    damage(tmp_path / snapshot_name(40), -1)
    if older == "damaged":
        damage(tmp_path / snapshot_name(20), -1)
    else:
        (tmp_path / snapshot_name(20)).unlink()
    with pytest.raises(CorruptJournal) as info:
        recover(str(tmp_path), SnapListMachine())
    err = info.value
    assert err.path == str(tmp_path / snapshot_name(40))
    assert "journal-" not in err.path
    assert snapshot_name(40) in str(err)
    assert (snapshot_name(20) in str(err)) == (older == "damaged")
    assert "records 1..20 exist nowhere else" in str(err)
    assert names(tmp_path, "*.damaged") == []  # nothing renamed when recovery fails


def test_fallback_snapshot_whose_journal_is_gone_names_the_damaged_one(tmp_path: Path) -> None:
    snapshot_journal(tmp_path, 50, every=20)
    damage(tmp_path / snapshot_name(40), -1)
    segments = sorted(tmp_path.glob("journal-*.log"))
    assert segments[0].name == segment_name(21)
    segments[0].unlink()  # lose the segment that holds record 21
    first = int(segments[1].name[8:28])
    with pytest.raises(CorruptJournal, match=f"lsn 20, but the journal starts at lsn {first}") as e:
        recover(str(tmp_path), SnapListMachine())
    assert e.value.path == str(tmp_path / snapshot_name(40))


def end_journal_early(directory: Path, how: str, lsn: int) -> int:
    """Make the journal of ``directory`` end before ``lsn`` as ``how`` says; return its last LSN.

    ``lsn``'s segment ends with it (a snapshot at ``lsn`` rolled the segment over).
    """
    segments = sorted(directory.glob("journal-*.log"))
    firsts = [int(p.name[8:28]) for p in segments]
    at = max(i for i, first in enumerate(firsts) if first <= lsn)  # the segment holding lsn
    assert firsts[at + 1] == lsn + 1 and firsts[at - 1] < firsts[at] - 1
    keep = at if how in ("segments lost", "torn while created") else at + 1
    for path in segments[keep:]:
        path.unlink()
    if how == "segments lost":  # what is left reads as a whole journal
        return firsts[at] - 1
    if how == "torn while created":  # a last segment shorter than its header
        (directory / segment_name(firsts[at])).write_bytes(b"CSMJ")
        return firsts[at] - 1
    if how == "torn":  # the last segment's last payload: nothing valid follows it
        damage(segments[at], segments[at].stat().st_size - 1)
        return lsn - 1
    # "corrupt": the last payload of the segment before: a whole segment follows it
    damage(segments[at - 1], segments[at - 1].stat().st_size - 1)
    return firsts[at] - 2


@pytest.mark.parametrize("how", ["segments lost", "torn", "corrupt", "torn while created"])
def test_damaged_snapshot_newer_than_the_end_of_the_journal_is_refused_before_any_cut(
    tmp_path: Path, how: str
) -> None:
    # Records 1..40 were acknowledged before snapshot 40 was written. With it
    # damaged, the fallback (snapshot 20) and a journal that ends before 40
    # cannot rebuild them: recovery used to succeed with fewer records, and
    # cut the journal (torn tail, truncate_corrupt, unborn segment) to get there.
    snapshot_journal(tmp_path, 50, every=20)  # snapshots at 20 and 40
    damage(tmp_path / snapshot_name(40), -1)
    end = end_journal_early(tmp_path, how, 40)
    assert 20 < end < 40
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for truncate_corrupt in (False, True):  # it does not accept this loss either
        with pytest.raises(CorruptJournal) as info:
            recover(str(tmp_path), SnapListMachine(), truncate_corrupt=truncate_corrupt)
        err = info.value
        assert (err.path, err.cuttable) == (str(tmp_path / snapshot_name(40)), False)
        message = str(err)
        assert f"the journal ends at lsn {end}" in message
        assert f"records {end + 1}..40, which {snapshot_name(40)} held," in message
        assert "restore the snapshot from a backup" in message
        rename = f"rename {snapshot_name(40)} to {snapshot_name(40)}.damaged"
        assert rename in message and f"rebuilds the state up to lsn {end}" in message
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files  # nothing cut
    # the operator accepts the loss as the message says (copy aside, rename)
    (tmp_path / snapshot_name(40)).rename(tmp_path / (snapshot_name(40) + ".damaged"))
    rec = recover(str(tmp_path), SnapListMachine(), truncate_corrupt=True)
    assert (rec.state, rec.next_lsn, rec.report.snapshot_lsn) == (payloads(end), end + 1, 20)


def test_damaged_snapshot_newer_than_a_journal_that_ends_before_the_fallback_is_refused(
    tmp_path: Path,
) -> None:
    # Segments wholly before the fallback: the state reaches the fallback's
    # LSN (15), not the damaged snapshot's (30).
    (tmp_path / segment_name(1)).write_bytes(segment_bytes(payloads(10)))
    fs, m = OSFileSystem(), SnapListMachine()
    write_snapshot(fs, str(tmp_path), 15, m.snapshot(payloads(15)))
    write_snapshot(fs, str(tmp_path), 30, m.snapshot(payloads(30)))
    damage(tmp_path / snapshot_name(30), -1)
    with pytest.raises(CorruptJournal) as info:
        recover(str(tmp_path), m)
    assert info.value.path == str(tmp_path / snapshot_name(30))
    message = str(info.value)
    assert "the next older starting point is snapshot lsn 15" in message
    assert "the journal ends at lsn 10, so records 16..30" in message
    assert "rebuilds the state up to lsn 15" in message
    assert names(tmp_path, "*.damaged") == []


def test_damaged_snapshot_is_set_aside_so_retention_keeps_a_good_one(tmp_path: Path) -> None:
    m = SnapListMachine()
    snapshot_journal(tmp_path, 50, every=20)  # snapshots at 20 and 40
    damage(tmp_path / snapshot_name(40), -1)
    journal, _ = open_journal(str(tmp_path), m, options=JournalOptions(segment_bytes=64))
    journal.start()
    for p in payloads(10, start=51):
        journal.append(p, timeout=BOUND)
    assert journal.start_snapshot(60, lambda: m.snapshot(payloads(60)))
    assert journal.wait_snapshot(BOUND)
    journal.close()
    # snapshot 20 is the previous good one: kept, with its journal; 40 is set aside
    assert names(tmp_path, "*.snap") == [snapshot_name(20), snapshot_name(60)]
    assert names(tmp_path, "*.damaged") == [snapshot_name(40) + ".damaged"]
    damage(tmp_path / snapshot_name(60), -1)
    again = recover(str(tmp_path), m)
    assert again.state == payloads(60)
    assert again.report.snapshot_lsn == 20


def test_snapshot_whose_name_and_header_disagree_counts_as_damaged(tmp_path: Path) -> None:
    (tmp_path / segment_name(1)).write_bytes(segment_bytes(payloads(5)))
    path = write_snapshot(OSFileSystem(), str(tmp_path), 3, b'["x"]')
    Path(path).rename(tmp_path / snapshot_name(4))  # retention would trust the name
    rec = recover(str(tmp_path), SnapListMachine())
    assert rec.state == payloads(5)
    assert rec.report.snapshot_lsn == 0
    assert rec.report.damaged_snapshots == (str(tmp_path / snapshot_name(4)) + ".damaged",)


# -- 2. torn tail vs corruption ----------------------------------------------------------


@pytest.mark.parametrize(("seed", "size"), [(1, 37), (2, 37), (3, 1), (4, 19), (5, 20), (6, 4099)])
def test_random_bytes_appended_after_a_crash_are_a_torn_tail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, seed: int, size: int
) -> None:
    with Journal(str(tmp_path)) as j:
        for p in payloads(5):
            j.append(p, timeout=BOUND)
    seg = tmp_path / segment_name(1)
    clean = seg.stat().st_size
    seg.write_bytes(seg.read_bytes() + random.Random(seed).randbytes(size))
    with caplog.at_level(logging.WARNING, logger="corosm.journal"):
        rec = recover(str(tmp_path), ListMachine())
    assert rec.state == payloads(5)
    torn = rec.report.torn_tail
    assert torn is not None and (torn.offset, torn.dropped_bytes) == (clean, size)
    assert seg.stat().st_size == clean
    assert any("torn" in r.getMessage() for r in caplog.records)
    journal, _ = open_journal(str(tmp_path), ListMachine())
    with journal:
        assert journal.append(b"r6", timeout=BOUND) == 6
    assert recover(str(tmp_path), ListMachine()).state == payloads(6)


@pytest.mark.parametrize("seed", range(12))
def test_garbage_from_inside_a_tail_record_to_the_end_is_torn(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    records = payloads(20)
    data = segment_bytes(records)
    starts = frame_starts(records)
    k = rng.randrange(12, 20)  # the first damaged record
    at = rng.randrange(starts[k], starts[k] + FRAME_SIZE + len(records[k]))
    tail = bytearray(rng.randbytes(rng.choice([1, 7, 64, 300, 5000])))
    if at < len(data):
        tail[0] = data[at] ^ 0xFF  # the first byte really changes
    (tmp_path / segment_name(1)).write_bytes(data[:at] + bytes(tail))
    rec = recover(str(tmp_path), ListMachine())
    assert rec.state == records[:k]
    assert rec.report.torn_tail is not None
    assert rec.report.torn_tail.offset == starts[k]


@pytest.mark.parametrize("seed", range(12))
def test_damage_followed_by_a_valid_frame_is_corruption(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    records = [f"r{i}-{'x' * rng.randrange(40)}".encode() for i in range(1, 31)]
    data = bytearray(segment_bytes(records))
    starts = frame_starts(records)
    k = rng.randrange(0, 26)
    at = rng.randrange(starts[k], starts[k] + FRAME_SIZE + len(records[k]))
    stop = min(at + rng.randrange(1, 80), starts[28])  # records 29 and 30 stay valid
    for i in range(at, stop):
        data[i] ^= rng.randrange(1, 256)
    seg = tmp_path / segment_name(1)
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptJournal) as info:
        recover(str(tmp_path), ListMachine())
    assert (info.value.path, info.value.offset) == (str(seg), starts[k])
    assert "a valid record" in str(info.value)
    assert seg.stat().st_size == len(data)  # nothing cut without being asked
    rec = recover(str(tmp_path), ListMachine(), truncate_corrupt=True)
    assert rec.state == records[:k]
    assert seg.stat().st_size == starts[k]


def test_zeroed_block_followed_by_valid_frames_is_corruption(tmp_path: Path) -> None:
    records = payloads(400)
    data = bytearray(segment_bytes(records))
    starts = frame_starts(records)
    assert starts[50] + 4096 < starts[-1]
    data[starts[50] : starts[50] + 4096] = bytes(4096)  # a lost page mid-file
    (tmp_path / segment_name(1)).write_bytes(bytes(data))
    with pytest.raises(CorruptJournal, match="frame header checksum mismatch; a valid record"):
        recover(str(tmp_path), ListMachine())


def test_garbage_at_the_end_of_a_segment_that_is_not_the_last_is_corruption(
    tmp_path: Path,
) -> None:
    first = segment_bytes(payloads(5))
    (tmp_path / segment_name(1)).write_bytes(first + random.Random(7).randbytes(37))
    (tmp_path / segment_name(6)).write_bytes(segment_bytes(payloads(3, start=6), 6))
    with pytest.raises(CorruptJournal, match="1 later segment") as info:
        recover(str(tmp_path), ListMachine())
    assert (info.value.path, info.value.offset) == (str(tmp_path / segment_name(1)), len(first))


def test_stale_frame_after_the_damage_does_not_count_as_valid(tmp_path: Path) -> None:
    # Reused disk blocks can hold frames of older LSNs: they prove nothing about the tail.
    records = payloads(10)
    data = segment_bytes(records)
    stale = data[frame_starts(records)[2] : frame_starts(records)[4]]  # records 3 and 4
    (tmp_path / segment_name(1)).write_bytes(data + b"\x07" * 13 + stale)
    rec = recover(str(tmp_path), ListMachine())
    assert rec.state == records
    assert rec.report.torn_tail is not None and rec.report.torn_tail.offset == len(data)


def test_find_frame_accepts_only_lsns_that_fit_their_distance() -> None:
    garbage = b"\x99" * 40
    for lsn, found in [(7, True), (8, True), (9, True), (10, False), (6, False)]:
        data = garbage + encode_frames([b"p"], lsn)
        # the frame that should be at offset 0 has lsn 7: at byte 40, lsns 7..9 fit
        assert (find_frame(data, 1, origin=0, lsn=7) == (40, lsn)) is found, lsn


def test_find_frame_scans_long_garbage_and_zero_runs() -> None:
    rng = random.Random(11)
    filler = rng.randbytes(1 << 20) + bytes(1 << 20) + (b"\x01" + bytes(7)) * (1 << 14)
    assert find_frame(filler, 0, origin=0, lsn=3) is None
    for payload in (b"", b"p" * 256, b"payload"):  # length bytes zero, partly, not at all
        frame = encode_frames([payload], 5)
        assert find_frame(filler + frame, 0, origin=0, lsn=3) == (len(filler), 5)
    # LSNs that share no high byte (no literal to search for), and a header whose
    # only non-zero bytes before its CRC are the batch mark and the top byte of its LSN
    frame = encode_frames([b""], 1 << 40)
    assert find_frame(bytes(99) + frame, 0, origin=0, lsn=(1 << 40) - 1) == (99, 1 << 40)
    with pytest.raises(UsageError, match="LSNs end at"):
        encode_frames([b"a", b"b"], LSN_MASK)  # the second would not fit in 48 bits


def test_damaged_payload_of_the_last_acknowledged_record_is_cut(tmp_path: Path) -> None:
    # The documented limit of the rule: nothing valid follows, so it reads as torn.
    with Journal(str(tmp_path)) as j:  # fsync=always: every append below was acknowledged
        for p in payloads(5):
            j.append(p, timeout=BOUND)
    seg = tmp_path / segment_name(1)
    damage(seg, seg.stat().st_size - 1)
    rec = recover(str(tmp_path), ListMachine())
    assert rec.state == payloads(4)
    assert rec.report.torn_tail is not None
    assert "payload checksum mismatch" in rec.report.torn_tail.reason


# -- 4. reserved header bytes must be zero -------------------------------------------------


def test_nonzero_reserved_byte_in_a_segment_header_is_corruption(tmp_path: Path) -> None:
    data = bytearray(segment_bytes(payloads(3)))
    data[14] = 1
    (tmp_path / segment_name(1)).write_bytes(bytes(data))
    with pytest.raises(CorruptJournal, match="reserved journal segment header bytes") as info:
        recover(str(tmp_path), ListMachine())
    assert info.value.offset == 12


def test_nonzero_reserved_byte_in_a_snapshot_header_is_damage(tmp_path: Path) -> None:
    (tmp_path / segment_name(1)).write_bytes(segment_bytes(payloads(3)))
    path = write_snapshot(OSFileSystem(), str(tmp_path), 2, b'["r1", "r2"]')
    data = bytearray(Path(path).read_bytes())
    struct.pack_into("<I", data, 12, 1 << 24)  # not covered by the snapshot's CRC
    Path(path).write_bytes(bytes(data))
    with pytest.raises(CorruptJournal, match="reserved snapshot header bytes") as info:
        decode_snapshot(path, bytes(data))
    assert info.value.offset == 12
    rec = recover(str(tmp_path), SnapListMachine())  # falls back to the journal
    assert (rec.state, rec.report.snapshot_lsn) == (payloads(3), 0)
