"""Recovery from real files: torn tails at every byte, bit flips, truncation, snapshots."""

from __future__ import annotations

import json
import logging
import os
import re
import struct
from pathlib import Path
from typing import Any

import pytest

from corosm.core.machine import Machine
from corosm.errors import CorruptJournal, UsageError
from corosm.io.journal import Journal, JournalOptions, recover, write_snapshot
from corosm.io.journal.files import OSFileSystem
from corosm.io.journal.format import (
    FRAME_SIZE,
    HEADER_SIZE,
    encode_frames,
    parse_segment_name,
    parse_snapshot_name,
    segment_name,
    snapshot_name,
)


class DictMachine(Machine[dict[str, str], Any, Any]):
    """Records are b"key=value"; the state is a dict."""

    def initial_state(self) -> dict[str, str]:
        return {}

    def apply(self, state: dict[str, str], record: Any) -> dict[str, str]:
        key, _, value = record.partition("=")
        state[key] = value
        return state

    def decode_record(self, data: bytes) -> Any:
        return data.decode()

    def snapshot(self, state: dict[str, str]) -> bytes:
        return json.dumps(state).encode()

    def restore(self, data: bytes) -> dict[str, str]:
        return dict(json.loads(data))


def records(n: int, start: int = 0) -> list[bytes]:
    # Keys repeat so that order matters: a record replayed out of order changes the state.
    return [f"k{i % 7}=v{i}".encode() for i in range(start, start + n)]


def expected_state(payloads: list[bytes]) -> dict[str, str]:
    m = DictMachine()
    state = m.initial_state()
    for p in payloads:
        state = m.apply(state, m.decode_record(p))
    return state


def write_journal(directory: Path, payloads: list[bytes], **opts: Any) -> None:
    with Journal(str(directory), options=JournalOptions(**opts)) as j:
        for p in payloads:
            j.append(p, timeout=10)


def only_segment(directory: Path) -> Path:
    segs = sorted(directory.glob("journal-*.log"))
    assert len(segs) == 1, segs
    return segs[0]


def test_roundtrip_replays_every_record_in_order(tmp_path: Path) -> None:
    payloads = records(50)
    write_journal(tmp_path, payloads)
    rec = recover(str(tmp_path), DictMachine())
    assert rec.state == expected_state(payloads)
    assert rec.next_lsn == 51
    assert rec.report.records_replayed == 50
    assert rec.report.torn_tail is None


def test_torn_tail_cut_at_every_byte_of_last_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    payloads = records(5)
    src = tmp_path / "src"
    write_journal(src, payloads)
    seg = only_segment(src)
    full = seg.read_bytes()
    last_len = FRAME_SIZE + len(payloads[-1])
    last_start = len(full) - last_len
    for cut in range(last_start + 1, len(full)):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / seg.name).write_bytes(full[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="corosm.journal"):
            rec = recover(str(d), DictMachine())
        assert rec.state == expected_state(payloads[:-1]), cut
        assert rec.next_lsn == 5
        torn = rec.report.torn_tail
        assert torn is not None and torn.offset == last_start
        assert torn.dropped_bytes == cut - last_start
        assert (d / seg.name).stat().st_size == last_start  # cut off on disk
        assert any("torn" in r.getMessage() for r in caplog.records)
        # the journal continues after the cut, and a second recovery sees everything
        with Journal(str(d), next_lsn=rec.next_lsn) as j:
            assert j.append(b"k0=after", timeout=10) == 5
        again = recover(str(d), DictMachine())
        assert again.state == expected_state([*payloads[:-1], b"k0=after"])
        assert again.report.torn_tail is None


def test_recovered_state_equals_live_state_for_every_prefix(tmp_path: Path) -> None:
    payloads = records(30)
    src = tmp_path / "src"
    write_journal(src, payloads)
    full = only_segment(src).read_bytes()
    boundaries = [HEADER_SIZE]
    for p in payloads:
        boundaries.append(boundaries[-1] + FRAME_SIZE + len(p))
    for k, end in enumerate(boundaries):
        d = tmp_path / f"p{k}"
        d.mkdir()
        (d / segment_name(1)).write_bytes(full[:end])
        rec = recover(str(d), DictMachine())
        assert rec.state == expected_state(payloads[:k])
        assert rec.next_lsn == k + 1
        assert rec.report.torn_tail is None


def corrupt_middle(tmp_path: Path, byte_in_record: int) -> tuple[Path, int, list[bytes]]:
    payloads = records(10)
    write_journal(tmp_path, payloads)
    seg = only_segment(tmp_path)
    data = bytearray(seg.read_bytes())
    offset = HEADER_SIZE + sum(FRAME_SIZE + len(p) for p in payloads[:4])  # record lsn 5
    data[offset + byte_in_record] ^= 0x10
    seg.write_bytes(bytes(data))
    return seg, offset, payloads


@pytest.mark.parametrize("where", [0, 2, 5, 12, 17, FRAME_SIZE, FRAME_SIZE + 3])
def test_bit_flip_in_middle_record_names_file_and_offset(tmp_path: Path, where: int) -> None:
    # `where` hits the length, lsn, both checksums and the payload of record 5.
    seg, offset, _ = corrupt_middle(tmp_path, where)
    with pytest.raises(CorruptJournal) as info:
        recover(str(tmp_path), DictMachine())
    assert info.value.path == str(seg)
    assert info.value.offset == offset
    assert str(offset) in str(info.value) and seg.name in str(info.value)
    assert seg.stat().st_size > offset  # nothing was cut without being asked


def test_truncate_corrupt_recovers_the_prefix(tmp_path: Path) -> None:
    seg, offset, payloads = corrupt_middle(tmp_path, FRAME_SIZE + 1)
    size = seg.stat().st_size
    rec = recover(str(tmp_path), DictMachine(), truncate_corrupt=True)
    assert rec.state == expected_state(payloads[:4])
    assert rec.next_lsn == 5
    dropped = rec.report.corruption_dropped
    assert dropped is not None
    assert (dropped.path, dropped.offset, dropped.dropped_bytes) == (
        str(seg),
        offset,
        size - offset,
    )
    assert seg.stat().st_size == offset


def test_unknown_format_version_is_a_clear_error(tmp_path: Path) -> None:
    write_journal(tmp_path, records(3))
    seg = only_segment(tmp_path)
    data = bytearray(seg.read_bytes())
    struct.pack_into("<I", data, 8, 99)
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptJournal, match=r"format version 99 is not supported.*version\(s\) 1"):
        recover(str(tmp_path), DictMachine())


def test_foreign_file_is_rejected_by_magic(tmp_path: Path) -> None:
    (tmp_path / segment_name(1)).write_bytes(b"hello, this is not a journal at all")
    with pytest.raises(CorruptJournal, match="not a corosm journal segment"):
        recover(str(tmp_path), DictMachine())


def test_lsn_gap_between_segments_is_corruption(tmp_path: Path) -> None:
    write_journal(tmp_path, records(3))
    # a second segment that claims to start at lsn 10: records 4..9 are missing
    (tmp_path / segment_name(10)).write_bytes(
        only_segment(tmp_path).read_bytes()[:HEADER_SIZE] + encode_frames([b"k1=x"], 10)
    )
    with pytest.raises(CorruptJournal, match="starts at lsn 10 but the journal continues at 4"):
        recover(str(tmp_path), DictMachine())


def test_snapshot_plus_tail(tmp_path: Path) -> None:
    payloads = records(40)
    write_journal(tmp_path, payloads)
    # snapshot of the first 25 records; recovery must replay only 26..40 on top
    write_snapshot(OSFileSystem(), str(tmp_path), 25, DictMachine().snapshot(
        expected_state(payloads[:25])
    ))  # fmt: skip
    rec = recover(str(tmp_path), DictMachine())
    assert rec.state == expected_state(payloads)
    assert rec.report.snapshot_lsn == 25
    assert rec.report.records_replayed == 15
    assert rec.next_lsn == 41


def test_damaged_snapshot_falls_back_to_the_journal(tmp_path: Path) -> None:
    payloads = records(12)
    write_journal(tmp_path, payloads)
    path = write_snapshot(OSFileSystem(), str(tmp_path), 6, b'{"k0": "wrong"}')
    data = bytearray(Path(path).read_bytes())
    data[-2] ^= 1
    Path(path).write_bytes(bytes(data))
    rec = recover(str(tmp_path), DictMachine())
    assert rec.state == expected_state(payloads)
    assert rec.report.snapshot_lsn == 0


def test_automatic_snapshot_drops_old_segments_and_bounds_replay(tmp_path: Path) -> None:
    m = DictMachine()
    opts = JournalOptions(segment_bytes=256, snapshot_every_records=20)
    payloads = records(100)
    state = m.initial_state()
    with Journal(str(tmp_path), options=opts) as j:
        for p in payloads:
            lsn = j.append(p, timeout=10)
            state = m.apply(state, m.decode_record(p))
            if j.snapshot_due():
                copy = dict(state)
                assert j.start_snapshot(lsn, lambda c=copy: m.snapshot(c))  # type: ignore[misc]
                assert j.wait_snapshot(10)
        assert j.stats().snapshots == 5
    # the newest snapshot and the previous one (the fallback) are kept
    snaps = sorted(tmp_path.glob("snapshot-*.snap"))
    assert [s.name for s in snaps] == [snapshot_name(80), snapshot_name(100)]
    rec = recover(str(tmp_path), m)
    assert rec.state == expected_state(payloads)
    assert rec.report.snapshot_lsn == 100
    assert rec.report.records_replayed == 0
    # old segments are gone: what is left starts right after the previous snapshot
    firsts = [int(p.name[8:28]) for p in tmp_path.glob("journal-*.log")]
    assert min(firsts) == 81
    # ...so a damaged newest snapshot costs replay time, not data
    damaged = bytearray(snaps[1].read_bytes())
    damaged[-1] ^= 1
    snaps[1].write_bytes(bytes(damaged))
    fallback = recover(str(tmp_path), m)
    assert fallback.state == expected_state(payloads)
    assert (fallback.report.snapshot_lsn, fallback.report.records_replayed) == (80, 20)


def test_snapshot_ahead_of_the_journal_is_refused(tmp_path: Path) -> None:
    with Journal(str(tmp_path)) as j:
        j.append(b"k=v", timeout=10)
        with pytest.raises(UsageError, match="ahead of the journal"):
            j.start_snapshot(5, lambda: b"{}")


def test_bad_options_are_explained() -> None:
    with pytest.raises(UsageError, match="fsync mode must be"):
        JournalOptions(fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="segment_bytes must be a positive int"):
        JournalOptions(segment_bytes=0)
    # Longer, and the journal thread's wait overflowed: every later write failed.
    with pytest.raises(UsageError, match=r"interval_ms must be at most 86400000 \(a day\)"):
        JournalOptions(fsync="interval", interval_ms=10_000_000_000_000)


def test_empty_directory_recovers_to_initial_state(tmp_path: Path) -> None:
    rec = recover(os.fspath(tmp_path / "new"), DictMachine())
    assert rec.state == {} and rec.next_lsn == 1


# -- reserved space: a segment written over zeros -------------------------------------


def test_a_segment_is_written_over_zeros_ahead_and_closed_to_its_records(tmp_path: Path) -> None:
    from corosm.io.journal.files import RESERVE_BYTES

    path = str(tmp_path / "seg")
    f = OSFileSystem().create(path, reserve=True)
    f.write(b"a" * 100)
    f.fdatasync()
    assert os.path.getsize(path) == RESERVE_BYTES  # zeros ahead of the record
    big = b"b" * (RESERVE_BYTES + 5)  # a write past the zeros reserves more
    f.write(big)
    assert os.path.getsize(path) == 2 * RESERVE_BYTES  # to the next whole reserve
    with open(path, "rb") as r:
        data = r.read()
    assert data[: 100 + len(big)] == b"a" * 100 + big
    assert not data[100 + len(big) :].strip(b"\x00")
    f.close()
    assert os.path.getsize(path) == 100 + len(big)  # the zeros left are cut off
    plain = str(tmp_path / "plain")
    g = OSFileSystem().create(plain)  # a snapshot, say: no reserve
    g.write(b"x" * 10)
    assert os.path.getsize(plain) == 10
    g.close()


def crashed_journal(tmp_path: Path, payloads: list[bytes]) -> Path:
    """The segment a crash leaves after ``payloads`` were appended: copied while open."""
    src, dst = tmp_path / "src", tmp_path / "crash"
    dst.mkdir()
    with Journal(str(src)) as j:
        for p in payloads:
            j.append(p, timeout=10)
        for seg in src.glob("journal-*.log"):
            (dst / seg.name).write_bytes(seg.read_bytes())
    return only_segment(dst)


def test_zeros_after_the_last_record_are_the_end_not_damage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    payloads = records(20)
    seg = crashed_journal(tmp_path, payloads)
    file_bytes = seg.read_bytes()
    end = len(file_bytes) - len(file_bytes.rstrip(b"\x00"))
    assert end > 0  # the open segment ends in reserved zeros
    with caplog.at_level(logging.WARNING, logger="corosm.journal"):
        rec = recover(str(seg.parent), DictMachine())
    assert rec.state == expected_state(payloads)
    assert rec.next_lsn == 21
    assert rec.report.torn_tail is None and rec.report.corruption_dropped is None
    assert not caplog.records  # nothing to warn about
    assert seg.stat().st_size == len(file_bytes) - end  # the zeros are cut off
    with Journal(str(seg.parent), next_lsn=rec.next_lsn) as j:  # and the log goes on
        assert j.append(b"k0=after", timeout=10) == 21
    again = recover(str(seg.parent), DictMachine())
    assert again.state == expected_state([*payloads, b"k0=after"])


def test_a_record_torn_before_the_zeros_is_still_a_torn_tail(tmp_path: Path) -> None:
    payloads = records(5)
    seg = crashed_journal(tmp_path, payloads)
    data = bytearray(seg.read_bytes())
    end = len(data.rstrip(b"\x00"))
    last_start = end - FRAME_SIZE - len(payloads[-1])
    data[end - 3 : end] = bytes(3)  # the last record's payload only partly written
    seg.write_bytes(bytes(data))
    rec = recover(str(seg.parent), DictMachine())
    assert rec.state == expected_state(payloads[:-1])
    torn = rec.report.torn_tail
    assert torn is not None and torn.offset == last_start
    assert seg.stat().st_size == last_start


def test_a_segment_of_zeros_alone_was_torn_while_being_created(tmp_path: Path) -> None:
    payloads = records(3)
    write_journal(tmp_path, payloads)
    (tmp_path / segment_name(4)).write_bytes(bytes(4096))  # its header never reached the disk
    rec = recover(str(tmp_path), DictMachine())
    assert rec.state == expected_state(payloads)
    assert rec.next_lsn == 4
    torn = rec.report.torn_tail
    assert torn is not None and torn.reason == "incomplete segment header"
    assert not (tmp_path / segment_name(4)).exists()


def test_a_long_recovery_says_how_far_it_got(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    payloads = records(60)
    write_journal(tmp_path, payloads[:20], segment_bytes=256)
    write_snapshot(
        OSFileSystem(), str(tmp_path), 20, DictMachine().snapshot(expected_state(payloads[:20]))
    )
    with Journal(str(tmp_path), next_lsn=21, options=JournalOptions(segment_bytes=256)) as j:
        for p in payloads[20:]:
            j.append(p, timeout=10)
    segments = len(list(tmp_path.glob("journal-*.log")))
    with caplog.at_level(logging.INFO, logger="corosm.journal"):
        rec = recover(str(tmp_path), DictMachine(), progress_every=0.0)  # a line per segment
    assert rec.state == expected_state(payloads)
    said = [r.getMessage() for r in caplog.records]
    assert any("restored snapshot" in line and "(lsn 20," in line for line in said)
    progress = [line for line in said if "record(s) so far" in line]
    read = rec.report.segments_read
    assert 3 <= read <= segments  # segments wholly before the snapshot are not read
    assert len(progress) == read - 1  # every segment but the last: the summary line follows
    shown = [
        re.search(r"(\d+) record\(s\) so far, (\d+) of (\d+) segment", line) for line in progress
    ]
    figures = [tuple(int(n) for n in m.groups()) for m in shown if m is not None]
    assert [done for _, done, _ in figures] == list(range(1, read))  # segments read, in order
    assert {total for _, _, total in figures} == {read}
    counts = [records for records, _, _ in figures]
    assert counts == sorted(counts) and counts[-1] < rec.report.records_replayed == 40


@pytest.mark.parametrize(
    "name",
    [
        segment_name(1) + "\n",  # "$" matched before a trailing newline
        snapshot_name(1) + "\n",
        segment_name(1).replace("0", "\u0660"),  # "\d" matched any script's digits
        snapshot_name(1).replace("0", "\u0660"),
    ],
)
def test_a_stray_file_whose_name_only_resembles_the_journal_s_is_not_read_as_one(
    name: str,
) -> None:
    # Such a file was taken for a segment (or snapshot) of its LSN.
    assert parse_segment_name(name) is None
    assert parse_snapshot_name(name) is None
    assert parse_segment_name(segment_name(1)) == 1
    assert parse_snapshot_name(snapshot_name(1)) == 1
