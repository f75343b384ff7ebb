"""Profile recovery replay: the ``corosm bench`` recovery journal, replayed in-process.

Theory of operation
-------------------
Builds (once, kept in ``--dir``) the directory that the ``recovery`` scenario
of ``corosm bench`` builds (N distinct-key ``Put`` records in segments, no
snapshot; :func:`corosm.bench.recovery.build`), then runs
:func:`corosm.io.journal.recover` on it ``--repeat`` times and prints, for the
best run, records/s (wall clock) and CPU microseconds per record
(``time.process_time``: on a shared machine wall clock varies twice as much),
and the system CPU time and minor page faults of the first run
(``getrusage``: they vary least, and say what reading the segments and
growing the state cost the kernel; later runs reuse the memory it faulted in).
Recovery of a clean journal changes nothing on disk, so runs repeat exactly.

With ``--cprofile`` one more run is profiled and its top functions printed.
To compare trees on the same journal, build with one and time with another,
pinned to one CPU and alternating (wall clock drifts on a shared machine)::

    taskset -c 0 .venv/bin/python bench/profile_replay.py --records 100000
    PYTHONPATH=/tmp/old/src taskset -c 0 .venv/bin/python bench/profile_replay.py \
        --records 100000

For instruction counts (stable where wall clock is not), run one replay under
callgrind (``valgrind --tool=callgrind python bench/profile_replay.py
--repeat 1 --records N``) for two values of N, each with its journal already
built in its own ``--dir``, and divide the difference of the totals by the
difference of the Ns: that cancels interpreter start-up and imports.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import resource
import sys
import tempfile
import time
from pathlib import Path

import corosm
from corosm.apps.kv.machine import KVMachine
from corosm.bench.recovery import build
from corosm.io.journal import recover


def ensure_built(directory: Path, records: int) -> None:
    """Build the journal unless ``directory`` already holds one of ``records`` records."""
    stamp = directory / "BUILT"
    if stamp.exists() and stamp.read_text() == str(records):
        return
    build(directory, records, "journal")
    stamp.write_text(str(records))


def replay_once(directory: Path, records: int) -> tuple[float, float, float, int]:
    """Recover ``directory`` once: wall seconds, CPU seconds, system CPU seconds, page faults."""
    machine = KVMachine()
    gc.collect()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    w0, c0 = time.perf_counter(), time.process_time()
    rec = recover(str(directory), machine)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    if rec.report.records_replayed != records or len(rec.state.data) != records:
        raise SystemExit(f"replayed {rec.report.records_replayed} of {records} records")
    return wall, cpu, r1.ru_stime - r0.ru_stime, r1.ru_minflt - r0.ru_minflt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "corosm-replay")
    parser.add_argument("--cprofile", action="store_true", help="profile one more run")
    args = parser.parse_args()
    ensure_built(args.dir, args.records)
    runs = [replay_once(args.dir, args.records) for _ in range(args.repeat)]
    wall = min(r[0] for r in runs)
    cpu = min(r[1] for r in runs)
    _, _, system, faults = runs[0]  # later runs reuse the memory the first one faulted in
    n = args.records
    print(
        f"corosm from {Path(corosm.__file__).parent}\n"
        f"{n:,} records, best of {args.repeat}: {n / wall:,.0f} records/s wall, "
        f"{cpu / n * 1e6:.2f} us CPU/record; first run: {system:.2f} s system CPU, "
        f"{faults:,} page faults"
    )
    if args.cprofile:
        profiler = cProfile.Profile()
        profiler.enable()
        recover(str(args.dir), KVMachine())
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
