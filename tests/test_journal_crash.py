"""kill -9 a process that appends under load; every append it reported durable survives."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

from journal_helpers import replay

CHILD = r"""
import sys, threading
from corosm.io.journal import Journal, JournalOptions

directory, threads = sys.argv[1], int(sys.argv[2])
journal = Journal(directory, options=JournalOptions(segment_bytes=16 * 1024))
journal.start()
out_lock = threading.Lock()

def writer(t):
    i = 0
    while True:
        payload = f"t{t}-{i}".encode()
        lsn = journal.append(payload, timeout=30)
        with out_lock:  # report only after the append is durable
            sys.stdout.write(f"{lsn} {payload.decode()}\n")
            sys.stdout.flush()
        i += 1

for t in range(threads):
    threading.Thread(target=writer, args=(t,), daemon=True).start()
threading.Event().wait()
"""


def read_acks(
    child: subprocess.Popen[bytes], acked: dict[int, bytes], want: int, seconds: float
) -> None:
    """Collect the child's "lsn payload" lines until ``want`` arrived (bounded in time)."""
    assert child.stdout is not None
    fd = child.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + seconds
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while len(acked) < want and time.monotonic() < deadline:
            if not sel.select(timeout=1.0):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                lsn, payload = line.split(b" ", 1)
                acked[int(lsn)] = payload


def test_kill_9_under_load_loses_no_acknowledged_append(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    acked: dict[int, bytes] = {}
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), "8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    ) as child:
        try:
            read_acks(child, acked, want=1500, seconds=30)
        finally:
            child.send_signal(signal.SIGKILL)  # mid-load: appends are in flight
            _, err = child.communicate(timeout=10)
    stderr = err.decode()
    assert child.returncode == -signal.SIGKILL, stderr
    assert len(acked) >= 1500, f"child acked only {len(acked)}: {stderr}"

    rec = replay(str(tmp_path))
    for lsn, payload in acked.items():
        assert rec.state[lsn - 1] == payload, f"acknowledged lsn {lsn} lost or changed"
    assert rec.next_lsn - 1 >= max(acked)
    assert len(list(tmp_path.glob("journal-*.log"))) > 1  # the load crossed segments
