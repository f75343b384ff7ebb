"""Starting and stopping the processes a benchmark measures, pinned to cores.

Theory of operation
-------------------
Every contender is a command line (a server started as its own process), so
corosm, its blocking variant, the constant-``Ok`` server and redis-server are
measured the same way: start it on a free loopback port, wait until the port
accepts a connection (or the process dies, and then say why, with its
stderr), run the load, stop it with SIGINT (a clean shutdown, so a profiler
wrapped around it writes its output), then SIGKILL if it lingers.

Every child the suite starts (servers, wrk, redis-benchmark, the workers of
the fresh-process scenarios) goes through :func:`child`, the one place that
starts and stops processes: each runs in a process group of its own, with
stdin from ``/dev/null``, and leaving the ``with`` block, however it is left
(the end of a run, an exception, Ctrl-C), stops the whole group and waits
for its leader, so no helper a child forked outlives the bench.
:func:`stop_signals_interrupt` makes SIGTERM and SIGHUP raise
:class:`Interrupted` (a ``KeyboardInterrupt``) as Ctrl-C does, so that a
bench stopped by ``kill`` stops its children too instead of orphaning them.
``kill -9`` runs no ``finally``: for it, on Linux, each child asks the
kernel for SIGKILL when the bench dies (``PR_SET_PDEATHSIG``); elsewhere it
orphans them.
A wait is never open-ended: a server that does not listen in time, a tool
that runs past its time, are stopped and named with their last output lines.

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
import functools
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

from corosm.bench.hostinfo import usable_cores
from corosm.errors import CorosmError
from corosm.frontends.cli import signal_exit_code


class ContenderUnavailable(CorosmError):
    """A contender could not be started (missing tool, unknown option, crash at start)."""


class ToolFailed(CorosmError):
    """A load generator or a worker process failed, or ran past its time (command named)."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the bench's main thread as SIGINT raises KeyboardInterrupt.

    So every ``finally`` runs and stops the children, as it does for Ctrl-C.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def signal_name(exc: KeyboardInterrupt) -> str:
    """The signal behind ``exc``: SIGTERM or SIGHUP for :class:`Interrupted`, else SIGINT."""
    return signal.Signals(exc.signum).name if isinstance(exc, Interrupted) else "SIGINT"


def exit_code(exc: KeyboardInterrupt) -> int:
    """The exit code of a run that ``exc`` stopped: 128 + the signal's number, as in a shell."""
    return signal_exit_code(exc.signum if isinstance(exc, Interrupted) else signal.SIGINT)


@contextlib.contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise :class:`Interrupted`.

    Their default action ends the process at once, skipping every
    ``finally``: the servers and load generators it started would run on.
    Outside the main thread (where signal handlers cannot be set) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    previous = {signum: signal.signal(signum, interrupt) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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


def install_hint(*names: str) -> str:
    """How to install the tools ``names``."""
    packages = dict.fromkeys(APT_PACKAGES.get(name, name) for name in names)
    return f"sudo apt-get install {' '.join(packages)}"


def need_tools(*names: str) -> list[str]:
    """The paths of the executables ``names``, or a :class:`ContenderUnavailable`.

    The error names every one that is missing, with one install command, so
    that one install is enough.
    """
    paths = {name: shutil.which(name) for name in names}
    missing = [name for name, path in paths.items() if path is None]
    if not missing:
        return [path for path in paths.values() if path is not None]
    if len(missing) == 1:
        what = f"'{missing[0]}' is not installed; install it with"
    else:
        quoted = [f"'{name}'" for name in missing]
        what = f"{', '.join(quoted[:-1])} and {quoted[-1]} are not installed; install them with"
    raise ContenderUnavailable(f"{what}: {install_hint(*missing)}")


def need_tool(name: str) -> str:
    """The path of the executable ``name``, or a clear error saying how to get it."""
    return need_tools(name)[0]


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """CPU seconds (user + system) used so far by a process and by its main thread."""

    process: float
    main_thread: float


def cpu_seconds(pid: int, *, end: bool = False) -> CpuTimes | None:
    """The CPU time of ``pid`` from ``/proc``, or None where it cannot be read.

    The two files are read one after the other, and the clock may tick in
    between. Pass ``end=True`` for the sample that ends an interval: the
    main thread is then read first (and last at the start), so its interval
    lies within the process's and its share never exceeds the whole by a tick.
    """
    whole_path, main_path = Path(f"/proc/{pid}/stat"), Path(f"/proc/{pid}/task/{pid}/stat")
    try:
        if end:
            main = main_path.read_text()
            whole = whole_path.read_text()
        else:
            whole = whole_path.read_text()
            main = main_path.read_text()
    except OSError:  # not Linux, or the process is gone
        return None
    return CpuTimes(_stat_cpu(whole), _stat_cpu(main))


def _stat_cpu(stat: str) -> float:
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    # utime and stime are fields 14 and 15, i.e. 11 and 12 after the name.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- children: the one place processes are started and stopped -----------------------

STOP_GRACE = 10.0  # seconds a child has to stop on SIGINT before its group gets SIGKILL
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@contextlib.contextmanager
def child(
    argv: Sequence[str], stdout: int | IO[bytes], stderr: int | IO[bytes]
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` in a process group of its own until the ``with`` block ends.

    However the block is left, the whole group is stopped (:func:`stop_process`)
    and the child is waited for. Raises :class:`ToolFailed` when it cannot start.
    On Linux the child is also killed if this process dies first (``kill -9``,
    which no ``finally`` survives): see :func:`_dies_with_this_process`.
    """
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            process_group=0,
            preexec_fn=_dies_with_this_process(),  # noqa: PLW1509 - takes no lock, see there
        )
    except OSError as exc:
        raise ToolFailed(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from exc
    try:
        yield proc
    finally:
        stop_process(proc)


def _dies_with_this_process() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGKILL the child when this process dies.

    ``prctl(PR_SET_PDEATHSIG)``, set in the child between fork and exec,
    survives exec (``taskset`` and ``env`` included) but not fork: a child's
    own children are its to stop. SIGKILL, not SIGTERM: once the bench is
    gone nobody would follow up on a child that lingers after a SIGTERM.

    The signal comes when the thread that forked ends, so :func:`child`
    must be entered in a thread that outlives the ``with`` block, as every
    thread inside one does. If this process died before the ``prctl``, the
    child has another parent already, and kills itself. The function runs
    Python after a fork, which CPython warns can deadlock on a lock another
    thread held; it takes none (a foreign call resolved before the fork,
    and ``getppid``), and the bench starts its children from its main
    thread, with no other thread running.

    None where there is no ``prctl`` (not Linux): the child is then stopped
    as before, when the ``with`` block ends, and outlives a ``kill -9``.
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent, kill = os.getpid(), int(signal.SIGKILL)

    def before_exec() -> None:  # in the child
        prctl(PR_SET_PDEATHSIG, kill, 0, 0, 0)  # a failure leaves the child as it was
        if os.getppid() != parent:
            os.kill(os.getpid(), kill)

    return before_exec


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` on this platform, or None (see :func:`load_prctl`)."""
    return load_prctl(sys.platform)


def load_prctl(platform: str) -> Callable[..., int] | None:
    """libc's ``prctl`` through ctypes on Linux; None elsewhere, or without ctypes."""
    if not platform.startswith("linux"):
        return None
    try:
        import ctypes  # here: only the bench, on Linux, needs it

        function = ctypes.CDLL(None).prctl
    except (ImportError, OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, *[ctypes.c_ulong] * 4)
    function.restype = ctypes.c_int
    prctl: Callable[..., int] = function
    return prctl


def stop_process(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> None:
    """Stop ``proc``'s process group: SIGINT (a clean shutdown), SIGKILL after ``grace`` s.

    Whatever is left in the group once the child has exited (a helper it
    forked) is killed too; a second Ctrl-C during the grace skips to SIGKILL.
    """
    try:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace)
    finally:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    # The child leads its group (process_group=0): its pid is the group's id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


def finish(
    proc: subprocess.Popen[bytes], argv: Sequence[str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Wait up to ``timeout`` s for a :func:`child` started with pipes; its output, decoded.

    Raises :class:`ToolFailed`, naming the command, when it runs past ``timeout``.
    """
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ToolFailed(
            f"{tool_name(argv)} did not finish within {timeout:g} s (command: {shlex.join(argv)})"
        ) from None
    return subprocess.CompletedProcess(list(argv), proc.returncode, _text(out), _text(err))


def run_tool(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to its end (at most ``timeout`` s) as a :func:`child`; its output.

    The exit status is the caller's to judge (see :func:`check_exit`).
    """
    with child(argv, subprocess.PIPE, subprocess.PIPE) as proc:
        return finish(proc, argv, timeout)


def check_exit(done: subprocess.CompletedProcess[str]) -> None:
    """Raise :class:`ToolFailed` with its last lines of stderr when ``done`` failed."""
    if done.returncode != 0:
        argv = [str(a) for a in done.args]
        raise ToolFailed(
            f"{tool_name(argv)} exited with status {done.returncode}: "
            f"{last_lines(done.stderr or done.stdout)} (command: {shlex.join(argv)})"
        )


def tool_name(argv: Sequence[str]) -> str:
    """The program ``argv`` runs, past a ``taskset -c CPUS`` or ``env VAR=...`` prefix."""
    words = list(argv)
    if words[:1] == ["taskset"]:
        words = words[3:]
    elif words[:1] == ["env"]:
        words = [w for w in words[1:] if "=" not in w]
    if words[1:2] == ["-m"]:  # python -m module
        return words[2] if len(words) > 2 else words[0]
    return Path(words[0]).name if words else "?"


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


def last_lines(text: str, keep: int = 5, limit: int = 600) -> str:
    """A child's output on one line: its last ``keep`` non-empty lines, at most ``limit`` chars."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    shown = " | ".join(lines[-keep:])
    if len(shown) > limit:
        shown = "..." + shown[-limit:]
    return shown or "(no output)"


@contextlib.contextmanager
def running(
    argv: Sequence[str],
    ports: Sequence[int],
    log_path: Path,
    start_timeout: float = 20.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` until the ``with`` block ends; yield once every port in ``ports`` answers.

    Raises :class:`ContenderUnavailable`, naming the command and its last
    output lines, when a port is taken before it starts, or when it exits
    before its ports answer, or when they do not answer within ``start_timeout`` s.
    """
    taken = [port for port in ports if port_answers(port)]
    if taken:
        raise ContenderUnavailable(
            f"port {taken[0]} on 127.0.0.1 is already taken by another process "
            f"(command: {shlex.join(argv)})"
        )
    with log_path.open("wb") as log, contextlib.ExitStack() as stack:
        try:
            proc = stack.enter_context(child(argv, log, subprocess.STDOUT))
        except ToolFailed as exc:
            raise ContenderUnavailable(f"{exc} (command: {shlex.join(argv)})") from exc
        problem = _wait_ready(proc, ports, start_timeout)
        if problem is not None:
            said = last_lines(_read(log_path))  # what it said before it was stopped
            raise ContenderUnavailable(f"{problem}: {said} (command: {shlex.join(argv)})")
        yield proc


def _wait_ready(proc: subprocess.Popen[bytes], ports: Sequence[int], timeout: float) -> str | None:
    """None once every port answers; else why not (the process exited, or time ran out)."""
    deadline = time.monotonic() + timeout
    pending = list(ports)
    while pending:
        if proc.poll() is not None:
            return f"exited with status {proc.returncode} before listening"
        if time.monotonic() > deadline:
            return f"ports {pending} did not answer within {timeout:g} s"
        if port_answers(pending[0]):
            pending.pop(0)
        else:
            time.sleep(0.05)  # polling a child's port: no event to wait on
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def start_server(
    stack: contextlib.ExitStack,
    argv: Sequence[str],
    ports: Sequence[int],
    log_path: Path,
    check: Callable[[], None] = lambda: None,
) -> subprocess.Popen[bytes]:
    """Start a server (:func:`running`), run ``check`` on it, then hand it to ``stack``.

    If ``check`` raises (a probe that fails, Ctrl-C), the server is stopped
    before the exception goes on: a server is always owned by one ``with``.
    """
    with contextlib.ExitStack() as one:
        proc = one.enter_context(running(argv, ports, log_path))
        check()
        stack.enter_context(one.pop_all())
    return proc


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
