"""Journal benchmark: fsync rate, group commit under N writers, replay and restart speed.

Prints every figure side by side in one run, on the disk that holds the
directory given (default: a fresh temporary directory). No asserts: these are
measurements, not tests.

    .venv/bin/python bench/journal_bench.py [--dir PATH] [--seconds 2] [--records 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

from corosm.io.journal import Journal, JournalOptions, LogWriter, OSFileSystem, recover

PAYLOAD = b"x" * 100


def raw_fdatasync_rate(directory: str, seconds: float) -> float:
    """write(100 bytes) + fdatasync in a loop: the disk's limit for durable writes."""
    path = os.path.join(directory, "raw.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    n = 0
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < seconds:
            os.write(fd, PAYLOAD)
            os.fdatasync(fd)
            n += 1
    finally:
        os.close(fd)
        os.remove(path)
    return n / (time.perf_counter() - t0)


def one_fsync_per_record(directory: str, seconds: float) -> float:
    """Framed appends, each written and fdatasynced alone (no group commit)."""
    fs = OSFileSystem()
    d = os.path.join(directory, "single")
    fs.makedirs(d)
    w = LogWriter(fs, d, next_lsn=1)
    w.open()
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        w.flush_batch([PAYLOAD], sync=True)
        n += 1
    w.close()
    shutil.rmtree(d)
    return n / (time.perf_counter() - t0)


def group_commit(directory: str, writers: int, seconds: float) -> tuple[float, float]:
    """Keep ``writers`` appends in flight, as the runtime's loop would.

    The sink hands each completed batch to a "loop" thread, which submits one
    new append per completion in a single submit call. Returns (appends/s,
    records per fsync).
    """
    d = os.path.join(directory, f"gc{writers}")
    done: queue.SimpleQueue[int] = queue.SimpleQueue()

    def sink(batch: Sequence[tuple[Any, int | None, BaseException | None]]) -> None:
        done.put(len(batch))

    j = Journal(d, options=JournalOptions(fsync="always"))
    j.start(sink)
    j.submit([(i, PAYLOAD) for i in range(writers)])
    completed = 0
    t0 = time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        k = done.get()
        completed += k
        j.submit([(0, PAYLOAD)] * k)
    rate = completed / elapsed
    j.close()
    stats = j.stats()
    shutil.rmtree(d)
    return rate, stats.records / max(1, stats.fsyncs)


def blocking_threads(directory: str, threads: int, seconds: float) -> float:
    """``threads`` OS threads each calling the blocking ``Journal.append`` in a loop."""
    d = os.path.join(directory, f"th{threads}")
    j = Journal(d)
    j.start()
    stop = threading.Event()
    counts = [0] * threads

    def run(i: int) -> None:
        while not stop.is_set():
            j.append(PAYLOAD, timeout=30)
            counts[i] += 1

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in pool:
        t.join()
    rate = sum(counts) / (time.perf_counter() - t0)
    j.close()
    shutil.rmtree(d)
    return rate


class DictMachine:
    """Records b"k<n>=<value>" into a dict: a small, realistic apply."""

    def initial_state(self) -> dict[bytes, bytes]:
        return {}

    def apply(self, state: dict[bytes, bytes], record: bytes) -> dict[bytes, bytes]:
        key, _, value = record.partition(b"=")
        state[key] = value
        return state

    def decode_record(self, data: bytes) -> bytes:
        return data

    def snapshot(self, state: dict[bytes, bytes]) -> bytes:
        return json.dumps({k.decode(): v.decode() for k, v in state.items()}).encode()

    def restore(self, data: bytes) -> dict[bytes, bytes]:
        return {k.encode(): v.encode() for k, v in json.loads(data).items()}


def small_records(n: int, start: int = 0) -> list[bytes]:
    return [b"k%d=%d" % (i % 10_000, i) for i in range(start, start + n)]


def replay_speed(directory: str, records: int) -> tuple[float, float, int]:
    """Write ``records`` small records, then time a full recovery. (records/s, s, bytes)."""
    fs = OSFileSystem()
    d = os.path.join(directory, "replay")
    fs.makedirs(d)
    w = LogWriter(fs, d, next_lsn=1)
    w.open()
    for start in range(0, records, 10_000):
        w.flush_batch(small_records(min(10_000, records - start), start), sync=False)
    w.close()
    size = sum(os.path.getsize(os.path.join(d, n)) for n in os.listdir(d))
    t0 = time.perf_counter()
    rec = recover(d, DictMachine())  # type: ignore[arg-type]
    dt = time.perf_counter() - t0
    assert rec.report.records_replayed == records  # a broken run must not print a figure
    shutil.rmtree(d)
    return records / dt, dt, size


def kv_replay_speed(directory: str, records: int) -> tuple[float, float]:
    """The same replay with the key-value machine's real records (``Put``), decode and apply.

    Returns (records/s, seconds), best of three runs (the first one also warms caches).
    """
    from corosm.apps.kv.machine import KVMachine
    from corosm.apps.kv.records import Put, encode_record

    fs = OSFileSystem()
    d = os.path.join(directory, "kvreplay")
    fs.makedirs(d)
    w = LogWriter(fs, d, next_lsn=1)
    w.open()
    for start in range(0, records, 10_000):
        puts = [Put(b"k%d" % (i % 10_000), b"%d" % i) for i in range(start, start + 10_000)]
        w.flush_batch([encode_record(p) for p in puts[: records - start]], sync=False)
    w.close()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        rec = recover(d, KVMachine())
        best = min(best, time.perf_counter() - t0)
        assert rec.report.records_replayed == records
        assert len(rec.state.data) == min(records, 10_000)
    shutil.rmtree(d)
    return records / best, best


def restart_with_snapshots(directory: str, records: int) -> tuple[float, int, int]:
    """A long run with automatic snapshots, then a restart. (seconds, snapshot lsn, replayed)."""
    d = os.path.join(directory, "snap")
    m = DictMachine()
    done: queue.SimpleQueue[int] = queue.SimpleQueue()
    opts = JournalOptions(fsync="never", snapshot_every_records=100_000, segment_bytes=4 << 20)
    j = Journal(d, options=opts)
    j.start(lambda batch: done.put(batch[-1][1] or 0))
    state = m.initial_state()
    records += 50_500  # end between two snapshots, so that restart replays a tail
    for start in range(0, records, 1000):
        batch = small_records(min(1000, records - start), start)
        j.submit([(None, p) for p in batch])
        lsn = done.get()
        for p in batch:  # the loop applies the completed records
            state = m.apply(state, p)
        if j.snapshot_due():
            copy = dict(state)
            j.start_snapshot(lsn, lambda c=copy: m.snapshot(c))  # type: ignore[misc]
    j.close()
    t0 = time.perf_counter()
    rec = recover(d, m)  # type: ignore[arg-type]
    dt = time.perf_counter() - t0
    assert rec.state == state
    shutil.rmtree(d)
    return dt, rec.report.snapshot_lsn, rec.report.records_replayed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", help="directory on the disk to measure (default: a temp dir)")
    ap.add_argument("--seconds", type=float, default=2.0, help="duration of each rate run")
    ap.add_argument("--records", type=int, default=1_000_000, help="records for replay")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="corosm-bench-", dir=args.dir)
    try:
        s = args.seconds
        raw = raw_fdatasync_rate(base, s)
        single = one_fsync_per_record(base, s)
        print(f"{'raw write(100 B)+fdatasync':42s} {raw:12,.0f} /s   (the disk's limit)")
        print(f"{'journal, one fsync per record':42s} {single:12,.0f} /s   1.0x")
        for n in (1, 16, 64, 256):
            rate, per = group_commit(base, n, s)
            label = f"group commit, {n} in flight"
            print(f"{label:42s} {rate:12,.0f} /s   {rate / single:5.1f}x  {per:6.1f} rec/fsync")
        for n in (16, 64):
            rate = blocking_threads(base, n, s)
            label = f"group commit, {n} blocking threads"
            print(f"{label:42s} {rate:12,.0f} /s   {rate / single:5.1f}x")
        rps, dt, size = replay_speed(base, args.records)
        print(
            f"{f'replay {args.records:,} small records':42s} {rps:12,.0f} rec/s "
            f"({dt:.2f} s, {size / 1e6:.1f} MB)"
        )
        rps, dt = kv_replay_speed(base, args.records)
        print(
            f"{f'replay {args.records:,} key-value Put records':42s} {rps:12,.0f} rec/s "
            f"({dt:.2f} s, best of 3)"
        )
        dt, snap, replayed = restart_with_snapshots(base, args.records)
        print(
            f"{'restart after the same run with snapshots':42s} {dt:12.3f} s     "
            f"(snapshot at lsn {snap:,}, {replayed:,} records replayed)"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
