"""Snapshots run off the journal thread, survive their own failures, and are versioned."""

from __future__ import annotations

import errno
import struct
import threading
from pathlib import Path

import pytest

from corosm.core import Machine
from corosm.errors import CorruptJournal
from corosm.io.journal import FaultyFS, Journal, JournalOptions, recover
from corosm.io.journal.files import Op, OSFileSystem
from corosm.io.journal.format import decode_snapshot, segment_name, snapshot_name
from corosm.io.journal.snapshot import covered_files, write_snapshot

BOUND = 10.0


class CountMachine:
    """State: number of records seen. Snapshots are the decimal count."""

    def initial_state(self) -> int:
        return 0

    def apply(self, state: int, record: bytes) -> int:
        return state + 1

    def decode_record(self, data: bytes) -> bytes:
        return data

    def snapshot(self, state: int) -> bytes:
        return str(state).encode()

    def restore(self, data: bytes) -> int:
        return int(data)


def test_appends_go_on_while_a_snapshot_is_being_produced(tmp_path: Path) -> None:
    j = Journal(str(tmp_path), options=JournalOptions(snapshot_every_records=3))
    j.start()
    for _ in range(3):
        lsn = j.append(b"r", timeout=BOUND)
    assert j.snapshot_due()
    entered, release = threading.Event(), threading.Event()

    def produce() -> bytes:
        entered.set()
        assert release.wait(BOUND)
        return b"3"

    assert j.start_snapshot(lsn, produce)
    assert entered.wait(BOUND)
    assert not j.snapshot_due()  # one at a time
    assert not j.start_snapshot(lsn, produce)
    # the snapshot is stuck in produce(); appends are still acknowledged
    assert [j.append(b"r", timeout=BOUND) for _ in range(5)] == [4, 5, 6, 7, 8]
    release.set()
    assert j.wait_snapshot(BOUND)
    j.close()
    rec = recover(str(tmp_path), CountMachine())  # type: ignore[arg-type]
    assert (rec.state, rec.report.snapshot_lsn, rec.report.records_replayed) == (8, 3, 5)


def test_a_failed_snapshot_does_not_stop_the_journal() -> None:
    fs = FaultyFS()
    j = Journal("/j", fs=fs)
    j.start()
    j.append(b"r", timeout=BOUND)
    fs.inject("fdatasync", errno.ENOSPC)
    assert j.start_snapshot(1, lambda: b"1")
    assert j.wait_snapshot(BOUND)
    assert j.failure is None
    assert j.append(b"r", timeout=BOUND) == 2
    j.close()
    fs.crash()
    rec = recover("/j", CountMachine(), fs=fs)  # type: ignore[arg-type]
    assert rec.state == 2 and rec.report.snapshot_lsn == 0  # temp file removed, journal used
    assert not [n for n in fs.listdir("/j") if n.endswith(".tmp")]


@pytest.mark.parametrize(
    ("op", "err"),
    [
        ("write", errno.ENOSPC),
        ("fdatasync", errno.ENOSPC),
        ("fdatasync", errno.EIO),
        ("rename", errno.EIO),
    ],
)
def test_a_failed_snapshot_removes_its_temp_file_at_once(op: Op, err: int) -> None:
    fs = FaultyFS()
    j = Journal("/j", fs=fs)
    j.start()
    j.append(b"r", timeout=BOUND)
    fs.inject(op, err, partial=100)  # a write that filled the disk halfway
    assert j.start_snapshot(1, lambda: b"x" * 1000)
    assert j.wait_snapshot(BOUND)
    # no temp file holds the space until the next start, and the journal goes on
    assert sorted(fs.listdir("/j")) == [segment_name(1)]
    assert j.failure is None
    assert j.append(b"r", timeout=BOUND) == 2
    j.close()
    before = sorted(fs.listdir("/j"))
    fs.inject(op, err)
    with pytest.raises(OSError) as info:  # the module function, on its own
        write_snapshot(fs, "/j", 2, b"y")
    assert info.value.errno == err
    assert sorted(fs.listdir("/j")) == before


def test_retention_keeps_the_previous_snapshot_and_the_journal_after_it() -> None:
    names = [
        *(segment_name(f) for f in (1, 8, 15, 25, 31)),
        *(snapshot_name(s) for s in (10, 20, 30)),
        "snapshot-00000000000000000005.snap.damaged",
    ]
    # Snapshot 20 is the previous one: segments 1 (records 1..7) and 8 (8..14)
    # hold nothing after it, 15 (15..24) does. Snapshot 10 is older: removed.
    assert sorted(covered_files(names, 30)) == [
        segment_name(1),
        segment_name(8),
        snapshot_name(10),
    ]
    # one snapshot: nothing to fall back to but the journal from LSN 1, so all stays
    assert covered_files([segment_name(1), segment_name(50), snapshot_name(60)], 60) == []
    # the last segment stays even when a snapshot covers it
    assert covered_files([segment_name(1), snapshot_name(5), snapshot_name(9)], 9) == []


def test_snapshot_with_unknown_version_is_refused_clearly(tmp_path: Path) -> None:
    path = write_snapshot(OSFileSystem(), str(tmp_path), 7, b"7")
    data = bytearray(Path(path).read_bytes())
    assert decode_snapshot(path, bytes(data)) == (7, b"7")
    struct.pack_into("<I", data, 8, 3)
    with pytest.raises(CorruptJournal, match="snapshot format version 3 is not supported"):
        decode_snapshot(path, bytes(data))


def test_copy_state_prefers_the_machine_method() -> None:
    class WithCopy(Machine[int, object, object]):
        def copy_state(self, state: int) -> int:
            return state + 1000

    assert WithCopy().copy_state(1) == 1001
    original = {"a": [1]}
    copied = Machine[dict[str, list[int]], object, object]().copy_state(original)
    assert copied == original and copied is not original


def test_snapshot_name_orders_by_lsn() -> None:
    names = [snapshot_name(n) for n in (9, 10, 100)]
    assert sorted(names) == names


def test_recovery_removes_its_own_temp_files_and_no_one_elses(tmp_path: Path) -> None:
    # Any *.tmp went: a data directory pointed at a folder with other files in
    # it (or '.') lost them to recovery.
    ours = tmp_path / "snapshot-00000000000000000003.snap.tmp"
    ours.write_bytes(b"half a snapshot")
    theirs = [tmp_path / "notes.tmp", tmp_path / "snapshot-3.snap.tmp"]
    for path in theirs:
        path.write_text("not the journal's")
    (tmp_path / "build.tmp").mkdir()
    rec = recover(str(tmp_path), CountMachine())  # type: ignore[arg-type]
    assert rec.next_lsn == 1
    assert not ours.exists()
    assert all(path.read_text() == "not the journal's" for path in theirs)
    assert (tmp_path / "build.tmp").is_dir()
