"""Recovery scenario: restart time against journal size, with and without a snapshot.

Theory of operation
-------------------
Run as ``python -m corosm.bench.recovery N journal|snapshot DIR`` (a fresh
process per point). It writes, through the journal's own API (``LogWriter``
and ``write_snapshot``), what a key-value server would have left behind after
N seed writes ``Write "k<i>" <i>`` (all distinct keys, the worst case for a
snapshot), then times :func:`corosm.io.journal.recover`, the function a
server runs at start.

``journal``: N records in segments, no snapshot; recovery replays all N.
``snapshot``: a snapshot of the state after N writes plus a tail of
``min(N, 1000)`` later records (the journal before the snapshot is dropped,
as a server does after snapshotting); recovery loads the snapshot and
replays the tail. One JSON line reports the figures.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from corosm.apps.kv.machine import KVMachine
from corosm.apps.kv.records import Put
from corosm.apps.kv.state import KVState
from corosm.io.journal import LogWriter, OSFileSystem, recover, write_snapshot

BATCH = 10_000


def write_journal(directory: Path, machine: KVMachine, first: int, count: int) -> None:
    """Append records ``first .. first+count-1`` (LSN = index) in batches, one fsync at the end."""
    writer = LogWriter(OSFileSystem(), str(directory), next_lsn=first)
    writer.open()
    try:
        for start in range(first, first + count, BATCH):
            stop = min(start + BATCH, first + count)
            payloads = [
                machine.encode_record(Put(b"k%d" % i, b"%d" % i)) for i in range(start, stop)
            ]
            writer.flush_batch(payloads, sync=False)
    finally:
        writer.close(sync=True)


def build(directory: Path, records: int, mode: str) -> None:
    """Leave in ``directory`` what a server would after ``records`` writes (see module docs)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    machine = KVMachine()
    if mode == "journal":
        write_journal(directory, machine, 1, records)
        return
    state = KVState({b"k%d" % i: b"%d" % i for i in range(1, records + 1)})
    write_snapshot(OSFileSystem(), str(directory), records, machine.snapshot(state))
    write_journal(directory, machine, records + 1, min(records, 1000))


def measure(directory: Path, records: int, mode: str) -> dict[str, float]:
    """Build the directory, then time recovery; the figures as a flat dict."""
    t0 = time.perf_counter()
    build(directory, records, mode)
    built = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in directory.iterdir())
    t1 = time.perf_counter()
    rec = recover(str(directory), KVMachine())
    recover_s = time.perf_counter() - t1
    keys = len(rec.state.data)
    if keys != records + (min(records, 1000) if mode == "snapshot" else 0):
        raise SystemExit(f"recovery rebuilt {keys} keys from {records} records ({mode})")
    shutil.rmtree(directory)
    return {
        "records": records,
        "replayed": rec.report.records_replayed,
        "build_s": built,
        "recover_s": recover_s,
        "disk_bytes": size,
        "replay_per_s": rec.report.records_replayed / recover_s if recover_s > 0 else 0.0,
    }


def main(argv: Sequence[str]) -> int:
    """``N journal|snapshot DIR``: print one JSON line with the figures."""
    usage = "usage: python -m corosm.bench.recovery N journal|snapshot DIR"
    if len(argv) != 3 or not argv[0].isdigit() or argv[1] not in {"journal", "snapshot"}:
        print(usage, file=sys.stderr)
        return 2
    directory = Path(argv[2])
    # DIR is emptied and removed: never one that holds something already.
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        what = "a directory that is not empty" if directory.is_dir() else "not a directory"
        print(
            f"corosm.bench.recovery: DIR {str(directory)!r} is {what}; expected a new or empty "
            f"directory (the run removes it). {usage}",
            file=sys.stderr,
        )
        return 2
    print(json.dumps(measure(directory, int(argv[0]), argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
