"""Starting and stopping the processes a benchmark measures, pinned to cores.

Theory of operation
-------------------
Every contender is a command line (a server started as its own process), so
corosm, its blocking variant, the constant-``Ok`` server and redis-server are
measured the same way: start it on a free loopback port, wait until the port
accepts a connection (or the process dies, and then say why, with its
stderr), run the load, stop it with SIGINT (a clean shutdown, so a profiler
wrapped around it writes its output), then SIGKILL if it lingers.

On a machine with two or more cores, servers run on the first core and the
load generator on the others (``taskset``), so they do not steal each
other's CPU; on one core nothing is pinned.

:func:`cpu_seconds` reads a server's CPU time from ``/proc`` (the whole
process, and its main thread, which runs corosm's event loop), so the
suite can report CPU microseconds per request: on one server core that
figure is what caps throughput.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from corosm.bench.hostinfo import usable_cores
from corosm.errors import CorosmError


class ContenderUnavailable(CorosmError):
    """A contender could not be started (missing tool, unknown option, crash at start)."""


@dataclass(frozen=True, slots=True)
class Pinning:
    """Which cores the servers and the load generators run on (empty: not pinned)."""

    server: tuple[int, ...]
    load: tuple[int, ...]

    @staticmethod
    def for_this_machine() -> Pinning:
        """Server on the first usable core, load on the rest; unpinned on one core."""
        cores = usable_cores()
        if len(cores) < 2 or shutil.which("taskset") is None:
            return Pinning((), ())
        return Pinning((cores[0],), tuple(cores[1:]))

    def wrap_server(self, argv: Sequence[str]) -> list[str]:
        """``argv`` pinned to the server cores."""
        return _taskset(self.server, argv)

    def wrap_load(self, argv: Sequence[str]) -> list[str]:
        """``argv`` pinned to the load-generator cores."""
        return _taskset(self.load, argv)

    def describe(self) -> str:
        """One line for the report."""
        if not self.server:
            return "not pinned (fewer than 2 cores or no taskset)"
        return f"servers on CPU {_cpus(self.server)}, load generators on CPU {_cpus(self.load)}"


def _cpus(cores: tuple[int, ...]) -> str:
    return ",".join(str(c) for c in cores)


def _taskset(cores: tuple[int, ...], argv: Sequence[str]) -> list[str]:
    if not cores:
        return list(argv)
    return ["taskset", "-c", _cpus(cores), *argv]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_answers(port: int, timeout: float = 0.2) -> bool:
    """True when a TCP connection to 127.0.0.1:``port`` succeeds."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


# The Debian package of each tool the suite runs.
APT_PACKAGES = {
    "wrk": "wrk",
    "redis-server": "redis-server",
    "redis-benchmark": "redis-tools",
    "taskset": "util-linux",
}


def install_hint(name: str) -> str:
    """How to install the tool ``name``."""
    return f"sudo apt-get install {APT_PACKAGES.get(name, name)}"


def need_tool(name: str) -> str:
    """The path of the executable ``name``, or a clear error saying how to get it."""
    path = shutil.which(name)
    if path is None:
        raise ContenderUnavailable(
            f"'{name}' is not installed; install it with: {install_hint(name)}"
        )
    return path


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """CPU seconds (user + system) used so far by a process and by its main thread."""

    process: float
    main_thread: float


def cpu_seconds(pid: int) -> CpuTimes | None:
    """The CPU time of ``pid`` from ``/proc``, or None where it cannot be read."""
    try:
        whole = Path(f"/proc/{pid}/stat").read_text()
        main = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    except OSError:  # not Linux, or the process is gone
        return None
    return CpuTimes(_stat_cpu(whole), _stat_cpu(main))


def _stat_cpu(stat: str) -> float:
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    # utime and stime are fields 14 and 15, i.e. 11 and 12 after the name.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def running(
    argv: Sequence[str],
    ports: Sequence[int],
    log_path: Path,
    start_timeout: float = 20.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` until the ``with`` block ends; yield once every port in ``ports`` answers.

    Raises :class:`ContenderUnavailable` with the process's stderr when it
    exits before its ports answer, or when they do not answer in time.
    """
    log = log_path.open("wb")
    try:
        proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT)
    except OSError as exc:
        log.close()
        raise ContenderUnavailable(f"cannot run {argv[0]!r}: {exc}") from exc
    try:
        _wait_ready(proc, ports, log_path, start_timeout)
        yield proc
    finally:
        stop_process(proc)
        log.close()


def _wait_ready(
    proc: subprocess.Popen[bytes], ports: Sequence[int], log_path: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    pending = list(ports)
    while pending:
        if proc.poll() is not None:
            raise ContenderUnavailable(
                f"exited with status {proc.returncode} before listening: {_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            raise ContenderUnavailable(
                f"ports {pending} did not answer within {timeout:.0f}s: {_tail(log_path)}"
            )
        if port_answers(pending[0]):
            pending.pop(0)
        else:
            time.sleep(0.05)  # polling a child's port: no event to wait on


def _tail(path: Path, limit: int = 600) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "(no output)"
    return text[-limit:] or "(no output)"


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGINT (clean shutdown), then SIGKILL after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


_PROBES = {
    "http": (
        b'POST / HTTP/1.1\r\nHost: bench\r\nContent-Length: 12\r\n\r\nWrite "k0" 0',
        b"HTTP/1.1 200",
    ),
    "resp": (b"*1\r\n$4\r\nPING\r\n", b"+PONG"),
}


def probe(port: int, protocol: str, timeout: float = 5.0) -> str | None:
    """None when one request of ``protocol`` gets the expected answer, else what went wrong.

    Catches a server that listens but cannot answer (which would otherwise
    show up as a run of pure errors).
    """
    request, expected = _PROBES[protocol]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(request)
            reply = s.recv(4096)
    except OSError as exc:
        return f"a {protocol} probe on port {port} failed: {exc}"
    if not reply.startswith(expected):
        return f"a {protocol} probe got {reply[:120]!r}; expected a reply starting {expected!r}"
    return None
