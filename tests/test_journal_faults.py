"""Failures with FaultyFS: a failed write or fsync fails its batch, then fail-stop; crashes.

And on real files, a disk too small for a segment's reserve: its ENOSPC says so.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from corosm.errors import JournalClosed, JournalError
from corosm.io.journal import (
    FaultyFS,
    Journal,
    JournalCompletion,
    JournalOptions,
    LogWriter,
    OSFileSystem,
)
from corosm.io.journal.files import RESERVE_BYTES
from corosm.io.journal.format import FRAME_SIZE, HEADER_SIZE, segment_name
from corosm.io.journal.recovery import Recovered
from journal_helpers import replay as replay_dir

BOUND = 10.0


def replay(fs: FaultyFS) -> Recovered[list[bytes]]:
    return replay_dir("/j", fs)


class Collect:
    def __init__(self) -> None:
        self.items: list[JournalCompletion] = []
        self.calls = 0
        self.cond = threading.Condition()

    def __call__(self, batch: Sequence[JournalCompletion]) -> None:
        with self.cond:
            self.items.extend(batch)
            self.calls += 1
            self.cond.notify_all()

    def wait_for(self, n: int) -> list[JournalCompletion]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.items) >= n, BOUND)
            return list(self.items)


@pytest.mark.parametrize(("op", "err"), [("write", errno.ENOSPC), ("fdatasync", errno.EIO)])
def test_failed_write_or_fsync_fails_the_batch_then_fail_stop(op: Any, err: int) -> None:
    fs = FaultyFS()
    j = Journal("/j", fs=fs)
    j.start()
    assert j.append(b"ok", timeout=BOUND) == 1
    fs.inject(op, err)
    with pytest.raises(JournalError) as info:
        j.append(b"lost", timeout=BOUND)
    assert not isinstance(info.value, JournalClosed)
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == err
    assert "not persisted" in str(info.value)
    # fail-stop: later appends are refused at once, and health can say why
    with pytest.raises(JournalClosed, match="failed earlier"):
        j.append(b"later", timeout=BOUND)
    assert isinstance(j.failure, OSError) and j.failure.errno == err
    assert j.stats().failure is not None
    j.close()
    fs.crash()
    assert replay(fs).state == [b"ok"]  # what was acknowledged, nothing else


def test_everything_queued_behind_a_failed_batch_is_refused() -> None:
    fs = FaultyFS()
    sink = Collect()
    j = Journal("/j", fs=fs)
    j.start(sink)
    fs.inject("fdatasync", errno.EIO)
    j.submit([(i, b"r") for i in range(50)])
    for i in range(50, 100):
        j.submit([(i, b"r")])
    done = sink.wait_for(100)
    j.close()
    assert sorted(tok for tok, _, _ in done) == list(range(100))
    assert all(lsn is None and isinstance(e, JournalError) for _, lsn, e in done)
    assert j.stats().records == 0  # nothing was counted as committed
    fs.crash()
    assert replay(fs).state == []


def test_partial_write_then_error_leaves_a_torn_tail_that_recovery_cuts() -> None:
    fs = FaultyFS()
    j = Journal("/j", fs=fs)
    j.start()
    j.append(b"a" * 10, timeout=BOUND)
    fs.inject("write", errno.ENOSPC, partial=FRAME_SIZE + 3)
    with pytest.raises(JournalError):
        j.append(b"b" * 10, timeout=BOUND)
    j.close()
    rec = replay(fs)
    assert rec.state == [b"a" * 10]
    assert rec.report.torn_tail is not None
    assert rec.report.torn_tail.offset == HEADER_SIZE + FRAME_SIZE + 10
    assert rec.next_lsn == 2


@pytest.mark.parametrize("tear", range(0, 3 * (FRAME_SIZE + 4) + 1, 5))
def test_crash_tearing_an_unsynced_batch_recovers_whole_records_only(tear: int) -> None:
    fs = FaultyFS()
    j = Journal("/j", fs=fs, options=JournalOptions(fsync="never"))
    j.start()
    for rec in (b"syn1", b"syn2"):
        j.append(rec, timeout=BOUND)
    j.control.writer.sync()  # white-box: make the first two durable, as an fsync would
    unsynced = [b"uns3", b"uns4", b"uns5"]
    for rec in unsynced:
        j.append(rec, timeout=BOUND)
    fs.crash(tear=tear)
    j.close()  # stop the thread; nothing is left to write after the crash
    whole = tear // (FRAME_SIZE + 4)
    rec2 = replay(fs)
    assert rec2.state == [b"syn1", b"syn2", *unsynced[:whole]]
    assert (rec2.report.torn_tail is not None) == (tear % (FRAME_SIZE + 4) != 0)


def test_a_crash_may_lose_a_stretch_of_the_torn_write_before_bytes_it_kept() -> None:
    # What a sync over reserved zeros may leave: a later page kept, an earlier one not.
    fs = FaultyFS()
    fs.makedirs("/d")
    f = fs.create("/d/x")
    fs.fsync_dir("/d")
    f.write(b"synced")
    f.fdatasync()
    f.write(b"0123456789")
    fs.crash(tear=8, hole=(2, 3))
    assert fs.read("/d/x") == b"synced01" + bytes(3) + b"567"


def test_segment_name_not_made_durable_is_lost_in_a_crash() -> None:
    fs = FaultyFS()
    fs.makedirs("/d")
    f = fs.create("/d/x")
    f.write(b"data")
    f.fdatasync()
    fs.crash()  # the data was synced, the directory entry never was
    assert fs.listdir("/d") == []
    f = fs.create("/d/y")
    f.write(b"data")
    f.fdatasync()
    fs.fsync_dir("/d")
    f.write(b"more")
    fs.crash()
    assert fs.read("/d/y") == b"data"


def test_journal_survives_crash_right_after_segment_creation() -> None:
    fs = FaultyFS()
    j = Journal("/j", fs=fs)
    j.start()
    j.append(b"one", timeout=BOUND)
    j.close()
    fs.crash()
    rec = replay(fs)
    j2 = Journal("/j", fs=fs, next_lsn=rec.next_lsn)
    j2.start()  # a new segment at lsn 2, header synced and named durably
    fs.crash()
    j2.close()
    rec2 = replay(fs)
    assert rec2.state == [b"one"] and rec2.next_lsn == 2
    assert sorted(fs.listdir("/j")) == [segment_name(1), segment_name(2)]


def test_injected_fault_counts_down_before_firing() -> None:
    fs = FaultyFS()
    fs.makedirs("/d")
    f = fs.create("/d/x")
    fs.inject("write", errno.EIO, after=2)
    f.write(b"1")
    f.write(b"2")
    with pytest.raises(OSError, match="injected"):
        f.write(b"3")
    f.write(b"4")
    assert fs.read("/d/x") == b"124"


# --- real files: a disk with less room than the segment's reserve ---------------------


def disk_with_room(monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    """``os.pwrite`` as on a disk where a file has ``room`` bytes: a short write, then ENOSPC.

    A small file system cannot be mounted by a test; this is what one does to
    the reserve's ``pwrite`` of zeros (the real file system's, not FaultyFS's,
    which reserves nothing).
    """
    real = os.pwrite

    def pwrite(fd: int, data: Any, offset: int) -> int:
        if offset >= room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, memoryview(data)[: room - offset], offset)

    monkeypatch.setattr(os, "pwrite", pwrite)


def test_a_reserve_the_disk_has_no_room_for_says_it_was_a_reserve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A disk with 1.5 MiB free refused a 100 kB append with a bare ENOSPC.
    writer = LogWriter(OSFileSystem(), str(tmp_path), 1, reserve=True)
    disk_with_room(monkeypatch, RESERVE_BYTES + RESERVE_BYTES // 2)
    writer.open()
    with pytest.raises(OSError) as info:
        for _ in range(20):
            writer.flush_batch([bytes(100_000)])
    err = info.value
    assert err.errno == errno.ENOSPC and err.filename == writer.segment_path
    strerror = str(err.strerror)
    assert strerror.startswith("No space left on device: ")
    assert f"the journal reserves {RESERVE_BYTES} bytes ahead of its records" in strerror
    assert f"asked for {RESERVE_BYTES} bytes at offset {RESERVE_BYTES}" in strerror
    assert f"found room for {RESERVE_BYTES // 2}" in strerror
    with pytest.raises(JournalClosed, match="the journal reserves"):  # fail-stop, and why
        writer.flush_batch([b"later"])
    writer.close(sync=False)
    assert os.path.getsize(writer.segment_path) == writer.segment_size  # the zeros are cut


def test_a_segment_that_cannot_start_is_closed_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It kept its descriptor and the 600 KiB of zeros it did write, filling the disk.
    writer = LogWriter(OSFileSystem(), str(tmp_path), 1, reserve=True)
    disk_with_room(monkeypatch, 600 << 10)
    with pytest.raises(OSError) as info:
        writer.open()
    assert os.path.getsize(writer.segment_path) == 0
    assert f"asked for {RESERVE_BYTES} bytes at offset 0, found room for {600 << 10}" in str(
        info.value
    )
    monkeypatch.undo()
    assert replay_dir(str(tmp_path)).next_lsn == 1  # recovery drops the unborn segment
