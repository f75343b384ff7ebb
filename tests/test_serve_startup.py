"""``corosm serve`` that cannot start: one line on stderr saying why, exit 4, no traceback.

Each failure is real: a port another socket holds, a data directory that is
a regular file or lies under one (unusable even by root) or is a symbolic
link to nowhere, and a journal with a flipped byte in a record before its
tail. ``--log-level debug`` shows the traceback as well. A disk too small
for a segment's reserve is one whose ``os.pwrite`` runs out of room; a full
disk cannot be made on demand, so that one is checked in-process with a
server whose ``run`` raises ENOSPC.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from corosm import server
from corosm.apps.kv.machine import KVMachine
from corosm.frontends import cli
from corosm.io.journal.format import FRAME_SIZE, HEADER_SIZE
from corosm.shards import open_local
from serverproc import ServerProcess


def serve(
    data_dir: Path, *extra: str, log_level: str = "warning"
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "corosm", "serve", "--data-dir", str(data_dir)]
    argv += ["--log-level", log_level, *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def the_one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single line ``serve`` wrote to stderr (asserts there is exactly one)."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.returncode == cli.EXIT_SERVER_FAILED, done.stderr
    return lines[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.fixture
def corrupt_journal(tmp_path: Path) -> tuple[Path, Path]:
    """A data directory whose journal has a bad checksum in its first record (of three)."""
    data = tmp_path / "data"
    with ServerProcess(data) as server:
        for i in range(3):
            assert server.request("PUT", f"/kv/k{i}", b"value")[0] == 201
        assert server.terminate() == 0
    (segment,) = data.glob("journal-*.log")
    raw = bytearray(segment.read_bytes())
    raw[HEADER_SIZE + FRAME_SIZE] ^= 0x10  # the first payload byte of the first record
    segment.write_bytes(bytes(raw))
    return data, segment


def test_port_in_use(tmp_path: Path, taken_port: int) -> None:
    done = serve(tmp_path / "data", "--port", str(taken_port))
    line = the_one_line(done)
    assert line.startswith("corosm: cannot start: ")
    assert str(taken_port) in line and "address already in use" in line
    assert "--port" in line  # says what to do about it


def test_port_in_use_at_the_default_log_level_ends_with_the_reason(
    tmp_path: Path, taken_port: int
) -> None:
    # Recovery runs (and logs at info) before the port is bound: the reason is the last line.
    done = serve(tmp_path / "data", "--port", str(taken_port), log_level="info")
    assert done.returncode == cli.EXIT_SERVER_FAILED
    assert "Traceback" not in done.stderr
    assert "address already in use" in done.stderr.splitlines()[-1]


def test_a_data_dir_another_server_holds_is_refused(tmp_path: Path) -> None:
    # Two servers on one journal overwrote each other's acknowledged writes.
    data = tmp_path / "data"
    with ServerProcess(data) as first:
        assert first.request("PUT", "/kv/k", b"first")[0] == 201
        assert first.proc is not None
        line = the_one_line(serve(data, "--port", "0"))
        assert line == (
            f"corosm: cannot start: data directory {str(data)!r} is in use by process "
            f"{first.proc.pid}: one journal at a time may hold it; stop that one first, "
            "or use another data directory"
        )
        assert first.request("GET", "/kv/k") == (200, b"first")  # the holder goes on
        first.kill()  # kill -9: the lock dies with it
    with ServerProcess(data) as second:
        assert second.request("GET", "/kv/k") == (200, b"first")


def test_a_directory_of_shards_is_not_served_as_one_journal(tmp_path: Path) -> None:
    # It was: an empty store, whose acknowledged writes the shards never saw.
    data = tmp_path / "data"

    async def make_shards() -> None:
        async with open_local(KVMachine(), data, shards=2):
            pass

    asyncio.run(make_shards())
    line = the_one_line(serve(data, "--port", "0"))
    assert line == (
        f"corosm: cannot start: {data} holds 2 shards (shards.json): serve it with --ray --shards 2"
    )
    assert not list(data.glob("journal-*.log")) and not (data / "LOCK").exists()


def test_a_signal_while_the_server_starts_stops_it_before_it_serves(tmp_path: Path) -> None:
    # Ctrl-C during a long recovery was lost: the server went on to serve.
    gate = tmp_path / "gate"  # see tests/machines/ledger.py:SlowStart
    os.mkfifo(gate)
    os.mkfifo(f"{gate}.entered")
    entered = os.open(f"{gate}.entered", os.O_RDONLY | os.O_NONBLOCK)
    command = [sys.executable, "-m", "corosm", "serve", "--port", "0"]
    command += ["--data-dir", str(tmp_path / "data"), "--log-level", "warning"]
    command += ["--machine", "tests.machines.ledger:SlowStart"]
    env = {**os.environ, "COROSM_TEST_GATE": str(gate)}
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        try:
            assert select.select([entered], [], [], 60)[0], "recovery never began"
            assert os.read(entered, 1) == b"1"
            proc.send_signal(signal.SIGINT)  # while recovery runs
            os.close(os.open(gate, os.O_WRONLY))  # then let it finish
            out, err = proc.communicate(timeout=60)
        finally:
            os.close(entered)
            proc.kill()
    assert proc.returncode == 0, err
    assert b"serving HTTP" not in out
    assert b"stopped while starting: not serving" in err


EXPECTED = "a data directory must be a directory, or a path where one can be created"


def test_data_dir_that_is_a_regular_file(tmp_path: Path) -> None:
    # The CLI refused it itself, with exit 2, while its siblings (a file among the
    # parents, a dangling link) got the journal's message and exit 4: one rule now.
    data = tmp_path / "a-file"
    data.write_text("not a directory")
    line = the_one_line(serve(data, "--port", "0"))
    assert line == f"corosm: cannot start: data directory {str(data)!r} is a file; {EXPECTED}"
    assert data.read_text() == "not a directory"


def test_data_dir_under_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    data = blocker / "data"
    line = the_one_line(serve(data, "--port", "0"))
    assert line == (
        f"corosm: cannot start: data directory {str(data)!r} cannot be created: "
        f"{str(blocker)!r} is a file, not a directory; {EXPECTED}"
    )
    assert blocker.read_text() == "not a directory"


@pytest.mark.parametrize(
    ("target", "what"),
    [
        ("unmounted-disk", "is a symbolic link to 'unmounted-disk', which does not exist"),
        ("data", "is a symbolic link that loops (Too many levels of symbolic links)"),
    ],
    ids=["dangling", "loop"],
)
def test_data_dir_that_is_a_broken_symbolic_link(tmp_path: Path, target: str, what: str) -> None:
    # Both said only "File exists", naming the link.
    data = tmp_path / "data"
    data.symlink_to(target)
    line = the_one_line(serve(data, "--port", "0"))
    assert line == f"corosm: cannot start: data directory {str(data)!r} {what}; {EXPECTED}"


SMALL_DISK = """
import errno, os, sys
ROOM, real = int(sys.argv[1]), os.pwrite
def pwrite(fd, data, offset):  # a disk with ROOM bytes free, for the one file that grows
    if offset >= ROOM:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real(fd, memoryview(data)[: ROOM - offset], offset)
os.pwrite = pwrite
from corosm.frontends.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_a_disk_too_small_for_the_segment_reserve_says_so(tmp_path: Path) -> None:
    # 600 KiB free gave "No space left on device", and the operator wondered how.
    data = tmp_path / "data"
    argv = [sys.executable, "-c", SMALL_DISK, str(600 << 10), "serve", "--port", "0"]
    argv += ["--data-dir", str(data), "--log-level", "warning"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    segment = str(data / "journal-00000000000000000001.log")
    assert the_one_line(done) == (
        f"corosm: cannot start: data directory {str(data)!r}: No space left on device: "
        "the journal reserves 1048576 bytes ahead of its records in each segment "
        f"(fsync='always'): asked for 1048576 bytes at offset 0, found room for {600 << 10}: "
        f"{segment!r}"
    )
    assert os.path.getsize(segment) == 0  # the zeros it could write are not left behind


def test_corrupt_journal_names_file_and_offset(corrupt_journal: tuple[Path, Path]) -> None:
    data, segment = corrupt_journal
    line = the_one_line(serve(data, "--port", "0"))
    assert line.startswith("corosm: cannot start: ")
    assert str(segment) in line
    assert f"byte offset {HEADER_SIZE}" in line
    assert "--truncate-corrupt" in line  # the way out, named


def test_damage_the_option_cannot_cut_gets_no_hint_to_use_it(
    corrupt_journal: tuple[Path, Path],
) -> None:
    # A segment of a format version this code does not read: --truncate-corrupt
    # refuses it just the same, so naming it as the way out misled.
    data, segment = corrupt_journal
    raw = bytearray(segment.read_bytes())
    raw[8] = 3  # the version field of the file header
    segment.write_bytes(bytes(raw))
    for extra in ([], ["--truncate-corrupt"]):
        line = the_one_line(serve(data, "--port", "0", *extra))
        assert line.startswith("corosm: cannot start: ") and str(segment) in line
        assert "--truncate-corrupt" not in line


@pytest.mark.parametrize("failure", ["port", "data_dir", "journal"])
def test_debug_log_level_shows_the_traceback(
    failure: str, tmp_path: Path, taken_port: int, request: pytest.FixtureRequest
) -> None:
    data, extra = tmp_path / "data", ["--port", "0"]
    if failure == "port":
        extra = ["--port", str(taken_port)]
    elif failure == "data_dir":
        (tmp_path / "a-file").write_text("")
        data = tmp_path / "a-file" / "data"
    else:
        data, _ = request.getfixturevalue("corrupt_journal")
    done = serve(data, *extra, log_level="debug")
    assert done.returncode == cli.EXIT_SERVER_FAILED
    assert "Traceback (most recent call last)" in done.stderr
    assert done.stderr.splitlines()[-1].startswith("corosm: cannot start: ")


# --- in-process: failures that cannot be made for real on demand ---------------------


class FailingServer:
    """Stands in for ``corosm.server``: ``run`` raises the given exception."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def ServerConfig(self, **fields: Any) -> SimpleNamespace:
        return SimpleNamespace(**fields)

    def run(self, config: SimpleNamespace) -> int:
        raise self.exc


def run_serve(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    exc: BaseException,
    *argv: str,
) -> tuple[int, list[str]]:
    """``corosm serve ARGV`` in-process with a server that fails: exit code, stderr lines."""
    monkeypatch.setattr(cli, "_import_server", lambda: FailingServer(exc))
    code = cli.main(["serve", *argv])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_disk_full_names_the_data_directory(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    full = OSError(errno.ENOSPC, "No space left on device", "d/journal-00000000000000000001.log")
    code, lines = run_serve(monkeypatch, capsys, full, "--data-dir", "d")
    assert code == cli.EXIT_SERVER_FAILED
    assert lines == [
        "corosm: cannot start: data directory 'd': No space left on device: "
        "'d/journal-00000000000000000001.log'"
    ]
    # A write that names no file (os.write) is the journal's too.
    code, lines = run_serve(monkeypatch, capsys, OSError(errno.ENOSPC, "No space left on device"))
    assert lines == ["corosm: cannot start: data directory 'corosm-data': No space left on device"]


def test_disk_full_under_debug_adds_the_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    full = OSError(errno.ENOSPC, "No space left on device")
    code, lines = run_serve(monkeypatch, capsys, full, "--log-level", "debug")
    assert code == cli.EXIT_SERVER_FAILED
    assert lines[0] == "Traceback (most recent call last):"
    assert (
        lines[-1] == "corosm: cannot start: data directory 'corosm-data': No space left on device"
    )


def test_a_bug_keeps_its_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Only the operator's problems are summed up in a line; a bug in corosm is not hidden.
    with pytest.raises(RuntimeError, match="a bug"):
        run_serve(monkeypatch, capsys, RuntimeError("a bug"))


def test_sigusr1_prints_every_threads_stack_and_the_server_goes_on(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data") as server:
        stacks = server.dump_stacks()
        # The loop's thread (the one the signal interrupts) and the journal's.
        assert b"Current thread" in stacks, stacks
        assert stacks.count(b"most recent call first") >= 2, stacks
        assert b"server.py" in stacks, stacks
        assert server.request("POST", "/", b'Write "x" 1') == (200, b"Ok")
        assert server.request("POST", "/", b'Read "x"') == (200, b"Result (Just 1)")


def test_corosm_serve_collects_cyclic_garbage_less_often(monkeypatch: pytest.MonkeyPatch) -> None:
    # run() in-process up to the hand-over to the event loop, which is replaced.
    seen: list[tuple[int, int, int]] = []

    def the_loop(main: Any) -> None:
        seen.append(gc.get_threshold())
        main.close()  # the serve() coroutine, never started

    monkeypatch.setattr(server, "run_on_uvloop", the_loop)
    monkeypatch.setattr(server.faulthandler, "register", lambda *args, **kwargs: None)
    before = gc.get_threshold()
    try:
        assert server.run(server.ServerConfig(log_level="warning")) == 0
    finally:
        gc.set_threshold(*before)
    assert seen == [(server.GC_YOUNG_THRESHOLD, before[1], before[2])]
    assert before[0] < server.GC_YOUNG_THRESHOLD  # less often than the default
