"""The bench's children die with it, even when it is killed with SIGKILL.

``procs.child`` stops a child when its ``with`` block ends, but ``kill -9``
of the bench runs no ``finally``: its servers, ``wrk`` and ``redis-server``
ran on, orphaned. On Linux each child now asks the kernel (``prctl
PR_SET_PDEATHSIG``) for SIGKILL when the bench dies. Elsewhere there is no
such call, and the child starts as before (and outlives a ``kill -9``).

The child here holds the only other copy of a pipe's write end (as its
stdout), so the test waits for its end by waiting for EOF on the read end,
with a deadline.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import pytest

from corosm.bench import procs
from corosm.bench.hostinfo import usable_cores

# Starts a child that blocks forever (behind the command prefix given after the fd),
# its stdout the write end of the test's pipe, prints the child's pid, then blocks
# forever itself, until the test kills it.
PARENT = """
import os, select, sys
from corosm.bench.procs import child
alive, prefix = int(sys.argv[1]), sys.argv[2:]
forever = [*prefix, sys.executable, "-c", "import select; select.select([], [], [])"]
with child(forever, alive, None) as proc:
    os.close(alive)
    print(proc.pid, flush=True)
    select.select([], [], [])
"""

DEADLINE = 30.0  # seconds; the kernel's signal takes milliseconds, on a busy machine too


def eof_within(fd: int, seconds: float) -> bool:
    """Whether reading ``fd`` reaches EOF (every writer gone) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0] and os.read(fd, 4096) == b"":
            return True
    return False


def line_within(proc: subprocess.Popen[bytes], seconds: float) -> bytes:
    assert proc.stdout is not None
    assert select.select([proc.stdout], [], [], seconds)[0], "the parent printed nothing"
    return proc.stdout.readline()


# The bench runs wrk and the servers behind taskset (pinning) or env: both exec the
# program, which keeps the setting.
PREFIXES = {
    "plain": [],
    "env": ["env", "COROSM_BENCH_TEST=1"],
    "taskset": ["taskset", "-c", str(usable_cores()[0])],
}


@pytest.mark.parametrize("prefix", PREFIXES.values(), ids=PREFIXES.keys())
def test_a_child_dies_when_the_bench_is_killed(prefix: list[str]) -> None:
    read, write = os.pipe()
    try:
        command = [sys.executable, "-c", PARENT, str(write), *prefix]
        parent = subprocess.Popen(command, pass_fds=(write,), stdout=subprocess.PIPE)
    finally:
        os.close(write)  # from now on only the parent and its child hold it
    child_pid = None
    try:
        child_pid = int(line_within(parent, DEADLINE))
        parent.kill()
        assert parent.wait(DEADLINE) == -signal.SIGKILL
        assert eof_within(read, DEADLINE), f"child {child_pid} outlived the bench's SIGKILL"
        child_pid = None
    finally:
        os.close(read)
        parent.kill()
        parent.wait()
        if child_pid is not None:  # the old behaviour: do not leave it running
            os.kill(child_pid, signal.SIGKILL)
        assert parent.stdout is not None
        parent.stdout.close()


def test_without_prctl_a_child_starts_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    # Not Linux (no prctl): no crash, the child runs and is stopped by its with block.
    assert procs.load_prctl("darwin") is None
    monkeypatch.setattr(procs, "_prctl", lambda: None)
    assert procs._dies_with_this_process() is None
    done = procs.run_tool([sys.executable, "-c", "import os; print(os.getppid())"], 60)
    assert (done.returncode, done.stdout) == (0, f"{os.getpid()}\n")
