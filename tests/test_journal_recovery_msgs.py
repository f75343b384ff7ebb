"""What recovery says when it refuses: the file, the offset or LSNs, what was expected, what to do.

Each data directory is written by hand (segments of one-record batches,
snapshots through :func:`write_snapshot`), damaged in one known way, and
recovered through :func:`open_journal` (what ``corosm.open`` and ``corosm
serve`` call) or ``corosm.open`` itself. A refusal must change nothing on
disk; following the remedy it names must work.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from pathlib import Path

import pytest

import corosm
from corosm.core import Machine
from corosm.errors import CorruptJournal, DataError
from corosm.io.journal import OSFileSystem, Recovered, open_journal, recover, write_snapshot
from corosm.io.journal.format import (
    HEADER_SIZE,
    JOURNAL_MAGIC,
    encode_frames,
    file_header,
    segment_name,
    snapshot_name,
)
from corosm.io.journal.lock import LOCK_NAME
from journal_damage import BOUND, Records, payload
from journal_helpers import ListMachine


def records(first: int, last: int) -> list[bytes]:
    """The payloads of records ``first..last``."""
    return [payload(lsn) for lsn in range(first, last + 1)]


def segment(directory: Path, first: int, last: int) -> Path:
    """Write the segment of records ``first..last``, each its own batch (all acknowledged)."""
    frames = b"".join(encode_frames([p], lsn) for lsn, p in enumerate(records(first, last), first))
    path = directory / segment_name(first)
    path.write_bytes(file_header(JOURNAL_MAGIC) + frames)
    return path


def snapshot(directory: Path, lsn: int) -> Path:
    """Write the snapshot of records ``1..lsn``."""
    return Path(
        write_snapshot(OSFileSystem(), str(directory), lsn, Records().snapshot(records(1, lsn)))
    )


def damage(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def files(directory: Path) -> dict[str, bytes | None]:
    """Every entry of ``directory`` but the journal's lock, and its bytes (None for a directory)."""
    return {
        p.name: p.read_bytes() if p.is_file() else None
        for p in directory.iterdir()
        if p.name != LOCK_NAME
    }


def refused(directory: Path, **options: bool) -> CorruptJournal:
    """The refusal of recovering ``directory``, which must leave every file as it was."""
    before = files(directory)
    with pytest.raises(CorruptJournal) as info:
        open_journal(directory, Records(), **options)
    assert files(directory) == before
    return info.value


def recovered(directory: Path, **options: bool) -> Recovered[list[bytes]]:
    """Recover ``directory``, then check the journal goes on after it."""
    journal, rec = open_journal(directory, Records(), **options)
    with journal:
        assert journal.append(b"next", timeout=BOUND) == rec.next_lsn
    assert recover(str(directory), Records()).state == [*rec.state, b"next"]
    return rec


# -- 1. a gap that a damaged snapshot held ------------------------------------------------


def gap_under_damaged_snapshot(directory: Path, damaged: int) -> None:
    """Snapshot 5 (good) and ``damaged``; segments 1..10 and 21..30; 11..20 were deleted."""
    segment(directory, 1, 10)
    segment(directory, 21, 30)
    snapshot(directory, 5)
    damage(snapshot(directory, damaged))


@pytest.mark.parametrize("truncate_corrupt", [False, True])
def test_a_gap_a_damaged_snapshot_held_names_the_snapshot_and_what_to_restore(
    tmp_path: Path, truncate_corrupt: bool
) -> None:
    # Segment 11 went (an operator trusted snapshot 20 to hold its records); then
    # snapshot 20 was damaged. The refusal used to name journal-21's start, not the
    # snapshot that explains it and that a backup can bring back.
    gap_under_damaged_snapshot(tmp_path, 20)
    err = refused(tmp_path, truncate_corrupt=truncate_corrupt)
    assert (err.path, err.cuttable) == (str(tmp_path / snapshot_name(20)), False)
    message = str(err)
    assert f"{snapshot_name(20)} is damaged at byte " in message
    assert "the next older starting point is snapshot lsn 5" in message
    assert (
        f"the journal has a gap after {segment_name(1)}: {segment_name(21)} starts at lsn 21, "
        "so records 11..20 exist nowhere else"
    ) in message
    assert f"(restore {snapshot_name(20)} from a backup, or the segment(s) that held" in message
    assert "truncate_corrupt does not skip a gap" in message


@pytest.mark.parametrize("restored", ["snapshot", "segment"])
def test_restoring_what_the_gap_refusal_names_recovers_everything(
    tmp_path: Path, restored: str
) -> None:
    gap_under_damaged_snapshot(tmp_path, 20)
    refused(tmp_path)
    if restored == "snapshot":
        snapshot(tmp_path, 20)  # from a backup
    else:
        segment(tmp_path, 11, 20)
    rec = recovered(tmp_path)
    assert rec.state == records(1, 30)
    assert rec.report.snapshot_lsn == (20 if restored == "snapshot" else 5)


def test_a_gap_through_corosm_open_names_the_damaged_snapshot(tmp_path: Path) -> None:
    gap_under_damaged_snapshot(tmp_path, 20)

    async def start() -> None:
        async with corosm.open(Records(), tmp_path):
            raise AssertionError("recovery should have refused")

    with pytest.raises(CorruptJournal, match=r"records 11\.\.20 exist nowhere else") as info:
        asyncio.run(start())
    assert info.value.path == str(tmp_path / snapshot_name(20))


def test_a_gap_a_damaged_snapshot_held_in_part_names_it_and_the_segments_to_restore(
    tmp_path: Path,
) -> None:
    # Snapshot 15 held records 11..15 of the gap, not 16..20: restoring it would
    # not bridge the gap, the deleted segment would.
    gap_under_damaged_snapshot(tmp_path, 15)
    err = refused(tmp_path)
    assert err.path == str(tmp_path / snapshot_name(15))
    message = str(err)
    assert "so records 11..20 exist nowhere else" in message
    assert "(restore the segment(s) that held them from a backup;" in message
    assert f"restore {snapshot_name(15)}" not in message


def test_a_gap_after_every_damaged_snapshot_names_the_segment_and_the_records(
    tmp_path: Path,
) -> None:
    gap_under_damaged_snapshot(tmp_path, 8)  # the journal holds all that 8 held
    err = refused(tmp_path, truncate_corrupt=True)
    assert (err.path, err.offset) == (str(tmp_path / segment_name(21)), 0)
    message = str(err)
    assert f"starts at lsn 21 but the journal continues at 11 after {segment_name(1)}" in message
    assert "records 11..20 are in no segment" in message
    assert "restore the segment(s) that held them from a backup" in message
    assert f"if {segment_name(21)} is not this journal's, move it out" in message


def test_a_gap_after_a_segment_that_ends_before_the_snapshot_counts_from_the_snapshot(
    tmp_path: Path,
) -> None:
    # Records 6..10 are in the snapshot: the journal continues at 11, not at 6.
    segment(tmp_path, 1, 5)
    snapshot(tmp_path, 10)
    segment(tmp_path, 15, 20)
    err = refused(tmp_path)
    assert err.path == str(tmp_path / segment_name(15))
    assert "the journal continues at 11" in str(err)
    assert "records 11..14 are in no segment" in str(err)


def test_overlapping_segments_name_both_and_what_to_do(tmp_path: Path) -> None:
    segment(tmp_path, 1, 10)
    segment(tmp_path, 5, 12)  # a copy from elsewhere
    err = refused(tmp_path)
    assert (err.path, err.offset) == (str(tmp_path / segment_name(5)), 0)
    message = str(err)
    assert "starts at lsn 5 but the journal continues at 11" in message
    assert f"{segment_name(1)} holds records 5..10 too" in message
    assert "move it out of the data directory" in message


# -- 2. every other refusal says what to do -------------------------------------------------


def test_corruption_before_the_end_says_where_replay_stops_and_what_to_do(
    tmp_path: Path,
) -> None:
    path = segment(tmp_path, 1, 10)
    segment(tmp_path, 11, 12)
    starts = [HEADER_SIZE]
    for p in records(1, 9):
        starts.append(starts[-1] + 20 + len(p))
    damage(path, starts[6] + 22)  # record 7's payload; 8..10 and a segment follow
    err = refused(tmp_path)
    assert (err.path, err.offset, err.cuttable) == (str(path), starts[6], True)
    message = str(err)
    assert "payload checksum mismatch (lsn 7)" in message
    assert f"replay stops at record lsn 7: restore {segment_name(1)} from a backup" in message
    assert "to accept losing records 7 on, copy the directory aside and recover with " in message
    assert "truncate_corrupt=True, which cuts the journal here and removes the 1 later" in message
    rec = recovered(tmp_path, truncate_corrupt=True)  # as it says
    assert rec.state == records(1, 6)


@pytest.mark.parametrize(
    ("header", "offset", "says"),
    [
        (b"NOTAJRNL" + bytes(8), 0, "not a corosm journal segment"),
        (JOURNAL_MAGIC + b"\x09\x00\x00\x00" + bytes(4), 8, "format version 9 is not supported"),
        (JOURNAL_MAGIC + b"\x02\x00\x00\x00\x00\x01\x00\x00", 12, "reserved journal segment"),
    ],
    ids=["magic", "version", "reserved"],
)
def test_a_damaged_segment_header_says_what_to_do(
    tmp_path: Path, header: bytes, offset: int, says: str
) -> None:
    path = segment(tmp_path, 1, 5)
    path.write_bytes(header + path.read_bytes()[HEADER_SIZE:])
    segment(tmp_path, 6, 8)
    err = refused(tmp_path, truncate_corrupt=True)
    assert (err.path, err.offset, err.cuttable) == (str(path), offset, False)
    message = str(err)
    assert says in message
    assert "recovery never cuts a file header, truncate_corrupt or not" in message
    assert f"restore {segment_name(1)} from a backup, or, if it is not this journal's" in message


class Strict(Records):
    """Records whose decode_record takes only the payloads this module writes."""

    def decode_record(self, data: bytes) -> bytes:
        if not data.startswith(b"r"):
            raise ValueError(f"not a record: {data!r}")
        return data


def test_a_record_that_does_not_decode_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / segment_name(1)
    frames = encode_frames([b"r001"], 1) + encode_frames([b"x002"], 2)
    path.write_bytes(file_header(JOURNAL_MAGIC) + frames)
    with pytest.raises(CorruptJournal) as info:
        recover(str(tmp_path), Strict())
    err = info.value
    assert (err.path, err.offset, err.cuttable) == (str(path), HEADER_SIZE + 24, False)
    message = str(err)
    assert "record lsn 2 could not be decoded: ValueError(" in message
    assert "open the directory with the machine that wrote it" in message
    assert "fix Strict.decode_record()" in message and "nothing was changed" in message


class NoSnapshots(ListMachine):
    """A machine that takes no snapshots: Machine.restore is its restore."""

    restore = Machine.restore


def test_a_snapshot_for_a_machine_without_snapshots_says_whose_it_may_be(tmp_path: Path) -> None:
    segment(tmp_path, 1, 5)
    snapshot(tmp_path, 5)
    with pytest.raises(DataError) as info:
        recover(str(tmp_path), NoSnapshots())
    message = str(info.value)
    assert message.startswith("NoSnapshots.restore() raised NotImplementedError: ")
    assert "open the directory with the machine that wrote it, or give NoSnapshots a " in message
    assert "fix restore()" not in message
    assert recover(str(tmp_path), Records()).state == records(1, 5)  # nothing was changed


# -- files recovery cannot read -------------------------------------------------------------


class Refusing(OSFileSystem):
    """The real file system, but reading ``path`` fails with ``err``."""

    def __init__(self, path: Path, err: int) -> None:
        self.path, self.err = str(path), err

    def read(self, path: str) -> bytes:
        if path == self.path:
            raise OSError(self.err, os.strerror(self.err), path)
        return super().read(path)


class RefusingRemove(OSFileSystem):
    """The real file system, but removing ``path`` fails with EACCES (as in a read-only dir)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def remove(self, path: str) -> None:
        if path == self.path:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        super().remove(path)


def unreadable(path: Path) -> OSFileSystem:
    """Make ``path`` unreadable; return the file system to recover with.

    chmod 000, and the real file system; where that does not stop reads (as
    root), one that refuses to read ``path``.
    """
    path.chmod(0)
    try:
        path.read_bytes()
    except PermissionError:
        return OSFileSystem()
    return Refusing(path, errno.EACCES)


@pytest.mark.parametrize("kind", ["snapshot", "segment", "snapshot temp file"])
@pytest.mark.parametrize("how", ["a directory", "no permission"])
def test_a_journal_file_recovery_cannot_read_is_named_with_what_to_do(
    tmp_path: Path, kind: str, how: str
) -> None:
    segment(tmp_path, 1, 5)
    segment(tmp_path, 6, 8)
    snapshot(tmp_path, 4)
    name = {
        "snapshot": snapshot_name(6),  # the newest: read first
        "segment": segment_name(6),
        "snapshot temp file": snapshot_name(7) + ".tmp",  # removed by recovery
    }[kind]
    path = tmp_path / name
    fs = OSFileSystem()
    if how == "a directory":
        path.unlink(missing_ok=True)
        path.mkdir()
        (path / "inside").write_bytes(b"x")
    elif kind == "snapshot temp file":  # as in a directory it may not write in
        path.write_bytes(b"half a snapshot")
        fs = RefusingRemove(path)
    else:
        if kind == "snapshot":
            snapshot(tmp_path, 6)
        fs = unreadable(path)
    before = files(tmp_path) if how == "a directory" else None
    try:
        with pytest.raises(OSError) as info:
            open_journal(tmp_path, Records(), fs=fs)
    finally:
        if path.is_file():
            path.chmod(0o600)
    err = info.value
    assert err.filename == str(path)
    assert f"the journal's {kind}, by its name" in str(err)
    if how == "a directory":
        assert err.errno == errno.EISDIR
        assert "it is a directory: move it out of the data directory" in str(err)
        assert files(tmp_path) == before
    else:
        assert err.errno == errno.EACCES
        assert "give the user corosm runs as read and write access to it" in str(err)
        assert (tmp_path / name).exists()  # nothing set aside or removed


@pytest.mark.parametrize("journal_reaches_it", [True, False])
def test_a_snapshot_the_disk_cannot_read_counts_as_damaged(
    tmp_path: Path, journal_reaches_it: bool
) -> None:
    segment(tmp_path, 1, 5)
    if journal_reaches_it:
        segment(tmp_path, 6, 8)
    snapshot(tmp_path, 4)
    path = snapshot(tmp_path, 6)
    fs = Refusing(path, errno.EIO)
    if not journal_reaches_it:
        with pytest.raises(CorruptJournal) as info:
            recover(str(tmp_path), Records(), fs=fs)
        assert info.value.path == str(path)
        assert f"{snapshot_name(6)} is damaged at byte 0 (cannot be read: " in str(info.value)
        assert "records 6..6, which" in str(info.value) and path.exists()
        return
    rec = recover(str(tmp_path), Records(), fs=fs)
    assert (rec.state, rec.report.snapshot_lsn) == (records(1, 8), 4)
    assert rec.report.damaged_snapshots == (str(path) + ".damaged",)


# -- names, sizes and LSNs that are not what recovery expects ------------------------------


def test_names_like_the_journals_are_left_alone_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    segment(tmp_path, 1, 5)
    snapshot(tmp_path, 3)
    copy = (tmp_path / segment_name(1)).read_bytes()
    strays = {"snapshot-abc.snap": b"x", "snapshot--1.snap": b"", "journal-6.log": copy}
    for name, body in strays.items():
        (tmp_path / name).write_bytes(body)
    (tmp_path / "snapshot-9.snap").mkdir()
    (tmp_path / "journal-abc.log").mkdir()
    (tmp_path / "notes.txt").write_bytes(b"not like the journal's")
    with caplog.at_level(logging.WARNING, logger="corosm.journal"):
        rec = recovered(tmp_path)
    assert rec.state == records(1, 5)
    warned = {r.args[0] for r in caplog.records if "is not read" in str(r.msg)}
    assert warned == {*strays, "snapshot-9.snap", "journal-abc.log"}
    for name, body in strays.items():
        assert (tmp_path / name).read_bytes() == body
    assert (tmp_path / "snapshot-9.snap").is_dir() and (tmp_path / "journal-abc.log").is_dir()


@pytest.mark.parametrize("journal_reaches_it", [True, False])
def test_a_zero_length_snapshot_is_damaged(tmp_path: Path, journal_reaches_it: bool) -> None:
    segment(tmp_path, 1, 5)
    if journal_reaches_it:
        segment(tmp_path, 6, 8)
    snapshot(tmp_path, 4)
    (tmp_path / snapshot_name(7)).write_bytes(b"")
    if not journal_reaches_it:
        err = refused(tmp_path)
        assert err.path == str(tmp_path / snapshot_name(7))
        assert "file is 0 bytes, shorter than the 16-byte header" in str(err)
        assert "records 6..7, which" in str(err)
        return
    rec = recovered(tmp_path)
    assert (rec.state, rec.report.snapshot_lsn) == (records(1, 8), 4)
    assert rec.report.damaged_snapshots == (str(tmp_path / snapshot_name(7)) + ".damaged",)


def test_a_sound_snapshot_newer_than_the_end_of_the_journal_loses_nothing(
    tmp_path: Path,
) -> None:
    # fsync="interval": the snapshot was synced, the journal's last records were not.
    segment(tmp_path, 1, 5)
    snapshot(tmp_path, 9)
    rec = recovered(tmp_path)
    assert (rec.state, rec.next_lsn, rec.report.snapshot_lsn) == (records(1, 9), 10, 9)
    assert rec.report.torn_tail is None and rec.report.corruption_dropped is None
