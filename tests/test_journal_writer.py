"""The journal thread: group commit, ordering, one sink call per batch, the executor, modes."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from corosm.core.effects import Append, Sleep
from corosm.errors import JournalClosed, UsageError
from corosm.io.journal import (
    FaultyFS,
    FileHandle,
    Journal,
    JournalCompletion,
    JournalExecutor,
    JournalOptions,
    LogWriter,
)
from corosm.io.journal.files import OSFileSystem
from corosm.io.journal.format import segment_name
from journal_helpers import replay

BOUND = 10.0  # seconds: every wait in these tests is bounded


class GatedHandle:
    def __init__(self, inner: FileHandle, fs: GatedFS) -> None:
        self.inner, self.fs = inner, fs

    def write(self, data: bytes) -> None:
        self.inner.write(data)

    def fdatasync(self) -> None:
        self.fs.entered.set()
        assert self.fs.release.wait(BOUND), "test never released the fsync gate"
        self.inner.fdatasync()
        self.fs.synced.set()

    def close(self) -> None:
        self.inner.close()


class GatedFS(OSFileSystem):
    """Real files whose fdatasync waits until the test opens the gate."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.synced = threading.Event()

    def create(self, path: str, *, reserve: bool = False) -> FileHandle:
        return GatedHandle(super().create(path, reserve=reserve), self)


class Recorder:
    """A sink that keeps each call as one batch."""

    def __init__(self) -> None:
        self.calls: list[list[JournalCompletion]] = []
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)

    def __call__(self, batch: Sequence[JournalCompletion]) -> None:
        with self.cond:
            self.calls.append(list(batch))
            self.cond.notify_all()

    def wait_for(self, n: int) -> list[JournalCompletion]:
        with self.cond:
            ok = self.cond.wait_for(lambda: sum(map(len, self.calls)) >= n, BOUND)
            assert ok, f"only {sum(map(len, self.calls))} of {n} completions arrived"
            return [c for call in self.calls for c in call]


def test_group_commit_puts_everything_queued_during_an_fsync_into_one_batch(
    tmp_path: Path,
) -> None:
    fs = GatedFS()
    fs.release.set()  # let the segment header sync through
    sink = Recorder()
    j = Journal(str(tmp_path), fs=fs)
    j.start(sink)
    fs.release.clear()
    fs.entered.clear()
    j.submit([("w0", b"first")])
    assert fs.entered.wait(BOUND)  # the journal thread is now inside fsync of batch 1
    for w in range(1, 64):  # 63 more writers, each its own submit call
        j.submit([(f"w{w}", f"rec{w}".encode())])
    fs.release.set()
    done = sink.wait_for(64)
    j.close()
    stats = j.stats()
    assert stats.records == 64
    assert stats.batches == 2 and stats.fsyncs == 2  # 1 record, then 63 in one write+fsync
    assert stats.records / stats.fsyncs > 1
    assert [len(call) for call in sink.calls] == [1, 63]  # one sink call per batch
    assert [t for t, _, _ in done] == [f"w{w}" for w in range(64)]
    assert [lsn for _, lsn, _ in done] == list(range(1, 65))


def test_64_threads_blocking_appends_share_fsyncs(tmp_path: Path) -> None:
    fs = GatedFS()
    fs.release.set()
    j = Journal(str(tmp_path), fs=fs)
    j.start()
    barrier = threading.Barrier(65)
    got: dict[int, list[int]] = {}

    def writer(w: int) -> None:
        barrier.wait(BOUND)
        got[w] = [j.append(f"{w}:{i}".encode(), timeout=BOUND) for i in range(10)]

    fs.release.clear()  # hold the first fsync until every writer has started
    fs.entered.clear()
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(64)]
    for t in threads:
        t.start()
    barrier.wait(BOUND)
    assert fs.entered.wait(BOUND)
    fs.release.set()
    for t in threads:
        t.join(BOUND)
    j.close()
    stats = j.stats()
    assert stats.records == 640
    assert stats.records / stats.fsyncs > 1, stats
    assert sorted(lsn for lsns in got.values() for lsn in lsns) == list(range(1, 641))
    for lsns in got.values():  # each writer's appends complete in its own order
        assert lsns == sorted(lsns)
    rec = replay(str(tmp_path))
    for w, lsns in got.items():
        for i, lsn in enumerate(lsns):
            assert rec.state[lsn - 1] == f"{w}:{i}".encode()


def test_completions_are_in_lsn_order_one_sink_call_per_batch(tmp_path: Path) -> None:
    sink = Recorder()
    j = Journal(str(tmp_path))
    j.start(sink)
    n = 0
    for size in (1, 5, 17, 3, 40):
        j.submit([(n + i, f"r{n + i}".encode()) for i in range(size)])
        n += size
    done = sink.wait_for(n)
    j.close()
    assert [tok for tok, _, _ in done] == list(range(n))
    assert [lsn for _, lsn, _ in done] == list(range(1, n + 1))
    assert all(err is None for _, _, err in done)
    assert len(sink.calls) == j.stats().batches == j.stats().fsyncs
    assert replay(str(tmp_path)).state == [f"r{i}".encode() for i in range(n)]


def test_executor_runs_appends_and_explains_bad_requests(tmp_path: Path) -> None:
    sink = Recorder()
    ex = JournalExecutor(Journal(str(tmp_path)), lambda r: r.encode())
    ex.start(sink)
    ex.submit([(1, Append("a")), (2, Sleep(1.0)), (3, Append(42)), (4, Append("b"))])
    done = {req: (lsn, err) for req, lsn, err in sink.wait_for(4)}
    ex.cancel(1)  # a no-op: appends are never cancelled
    ex.close()
    assert done[1] == (1, None) and done[4] == (2, None)
    assert isinstance(done[2][1], UsageError) and "Append effects" in str(done[2][1])
    err3 = done[3][1]
    assert isinstance(err3, UsageError) and "could not be encoded" in str(err3)
    assert isinstance(err3.__cause__, AttributeError)
    assert replay(str(tmp_path)).state == [b"a", b"b"]


def test_a_record_that_is_not_bytes_is_refused_and_the_journal_goes_on(tmp_path: Path) -> None:
    # It used to reach the journal thread, whose framing failed: the thread
    # crashed and the journal refused every append after it.
    sink = Recorder()
    j = Journal(str(tmp_path))
    j.start(sink)
    assert j.append(b"first", timeout=BOUND) == 1
    for bad in ("text", 12, None):
        with pytest.raises(UsageError, match=f"bytes, not {type(bad).__name__}"):
            j.append(bad, timeout=BOUND)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="bytes, not str"):
        j.submit([(1, b"fine"), (2, "text")])  # type: ignore[list-item]
    assert j.append(bytearray(b"array"), timeout=BOUND) == 2
    assert j.append(memoryview(b"view"), timeout=BOUND) == 3
    j.submit([(4, b"last")])
    assert sink.wait_for(1) == [(4, 4, None)]
    assert j.failure is None
    j.close()
    # None of the refused submit's entries was queued, not even its good one.
    assert replay(str(tmp_path)).state == [b"first", b"array", b"view", b"last"]


def test_close_flushes_and_syncs_what_is_queued(tmp_path: Path) -> None:
    fs = FaultyFS()
    sink = Recorder()
    ex = JournalExecutor(Journal("/j", fs=fs), lambda r: r)
    ex.start(sink)
    ex.submit([(i, Append(f"r{i}".encode())) for i in range(200)])
    ex.close()  # returns only after everything queued is written and synced
    assert sum(map(len, sink.calls)) == 200
    fs.crash()  # so only durable data counts
    assert len(replay("/j", fs).state) == 200
    with pytest.raises(JournalClosed, match="closed"):
        ex.journal.append(b"late", timeout=BOUND)


def test_never_mode_acknowledges_before_sync_and_a_crash_loses_it() -> None:
    fs = FaultyFS()
    j = Journal("/j", fs=fs, options=JournalOptions(fsync="never"))
    j.start()
    assert j.append(b"x", timeout=BOUND) == 1
    path = f"/j/{segment_name(1)}"
    assert fs.durable_size(path) < len(fs.read(path))  # acknowledged, not on disk
    assert j.stats().fsyncs == 0
    fs.crash()  # power loss before the OS flushed: the acknowledged record is gone
    j.close()
    assert replay("/j", fs).state == []


class SyncWatchFS(FaultyFS):
    """FaultyFS that signals every fdatasync."""

    def __init__(self) -> None:
        super().__init__()
        self.synced = threading.Event()

    def _fdatasync(self, path: str, inode: Any) -> None:
        super()._fdatasync(path, inode)
        self.synced.set()


@pytest.mark.parametrize("interval_ms", [5, 60_000])
def test_interval_mode_acks_after_write_and_syncs_when_idle(interval_ms: int) -> None:
    fs = SyncWatchFS()
    j = Journal("/j", fs=fs, options=JournalOptions(fsync="interval", interval_ms=interval_ms))
    j.start()
    fs.synced.clear()  # ignore the segment header's sync
    j.append(b"x", timeout=BOUND)
    path = f"/j/{segment_name(1)}"
    if interval_ms == 5:
        # the idle journal thread syncs within about 5 ms: wait for that sync
        assert fs.synced.wait(BOUND)
        assert fs.durable_size(path) == len(fs.read(path))
    else:
        # acknowledged after write(), not yet synced: that is the risk of this mode
        assert fs.durable_size(path) < len(fs.read(path))
        assert not fs.synced.is_set()
    j.close()  # close syncs in every mode
    assert fs.durable_size(path) == len(fs.read(path))


def test_log_writer_is_usable_without_a_thread() -> None:
    fs = FaultyFS()
    fs.makedirs("/j")
    w = LogWriter(fs, "/j", next_lsn=1, segment_bytes=64)
    w.open()
    r1 = w.flush_batch([b"a" * 30, b"b" * 30], sync=True)
    r2 = w.flush_batch([b"c"], sync=False)  # segment is full: rotates first
    assert (r1.first_lsn, r1.count, r2.first_lsn) == (1, 2, 3)
    assert sorted(fs.listdir("/j")) == [segment_name(1), segment_name(3)]
    fs.crash()  # the unsynced record 3 is lost, 1 and 2 stay
    assert replay("/j", fs).state == [b"a" * 30, b"b" * 30]


def test_start_twice_and_sinkless_submit_are_usage_errors(tmp_path: Path) -> None:
    j = Journal(str(tmp_path))
    j.start()
    with pytest.raises(UsageError, match="twice"):
        j.start()
    with pytest.raises(UsageError, match="needs a sink"):
        j.submit([("token", b"x")])
    j.close()
