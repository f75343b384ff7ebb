"""Follow-ups in the journal: the file-system protocol, named pipes, a crashing journal thread.

``FileSystem.is_regular_file`` is part of the protocol, and the simulator's
proxy forwards it. Reading a journal file refuses anything that is not a
regular file at once: a named pipe under a snapshot's or a segment's name
made recovery wait forever for a writer. And when the journal thread
crashes (an exception its steps do not handle), every append it was
writing gets exactly one outcome, through the blocking API, a sink and the
runtime alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from corosm import Context, Machine
from corosm.errors import JournalClosed, JournalError
from corosm.io.journal import (
    FaultyFS,
    Journal,
    JournalCompletion,
    OSFileSystem,
    recover,
)
from corosm.io.journal.files import FileHandle
from corosm.io.journal.format import (
    segment_name,
    snapshot_name,
)
from corosm.io.journal.snapshot import remove_covered
from corosm.runtime.durable import start_durable
from corosm.testing.sim.snapshots import CrashingFS
from journal_damage import BOUND, Records
from test_journal_recovery_msgs import records, segment, snapshot

# -- is_regular_file: on the protocol, and forwarded by the simulator's proxy -----------------


def test_the_simulators_proxy_answers_is_regular_file_as_the_file_system_under_it() -> None:
    fs = FaultyFS()
    fs.makedirs("/j")
    fs.create("/j/" + snapshot_name(4)).close()
    proxy = CrashingFS(fs, crash_at=None)
    assert proxy.is_regular_file("/j/" + snapshot_name(4))
    assert not proxy.is_regular_file("/j/" + snapshot_name(5))


def test_retention_through_the_proxy_leaves_a_directory_named_like_a_snapshot(
    tmp_path: Path,
) -> None:
    # Without the method on the proxy, retention took every name for a regular
    # file, and removing the directory failed the snapshot's cleanup.
    for name in [*map(segment_name, (1, 6)), *map(snapshot_name, (5, 8))]:
        (tmp_path / name).write_bytes(b"")
    stray = tmp_path / snapshot_name(2)  # older than the previous snapshot: would go
    stray.mkdir()
    removed = remove_covered(CrashingFS(OSFileSystem(), crash_at=None), str(tmp_path), 8)
    assert removed == [segment_name(1)]
    assert stray.is_dir()


# -- named pipes (and other files that are not regular) under a journal file's name ------------


def bounded(call: Callable[[], object], pipe: Path) -> object:
    """What ``call`` returns or raises; fail if it is still running after ``BOUND`` seconds.

    A call stuck opening ``pipe`` for reading is released (the pipe opened
    for writing and closed), so that a regression fails instead of hanging.
    """
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(BOUND)
    if thread.is_alive():
        with contextlib.suppress(OSError):
            os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(BOUND)
        pytest.fail(f"still blocked on the named pipe {pipe} after {BOUND} s")
    return outcome[0]


def listing(directory: Path) -> list[tuple[str, bool]]:
    return sorted((p.name, p.is_fifo()) for p in directory.iterdir())


@pytest.mark.parametrize("kind", ["snapshot", "segment"])
def test_a_named_pipe_under_a_journal_files_name_is_refused_at_once(
    tmp_path: Path, kind: str
) -> None:
    segment(tmp_path, 1, 5)
    segment(tmp_path, 6, 8)
    snapshot(tmp_path, 4)
    # The newest snapshot (read first), or a segment after the snapshot (read).
    pipe = tmp_path / (snapshot_name(6) if kind == "snapshot" else segment_name(6))
    pipe.unlink(missing_ok=True)
    os.mkfifo(pipe)
    before = listing(tmp_path)
    err = bounded(lambda: recover(str(tmp_path), Records()), pipe)
    assert isinstance(err, OSError), err
    assert err.filename == str(pipe)
    assert err.errno == errno.ENXIO
    message = str(err)
    assert "Not a regular file but a named pipe" in message
    assert f"the journal's {kind}, by its name: move it out of the data directory" in message
    assert listing(tmp_path) == before  # not set aside as a damaged snapshot, nothing cut
    pipe.unlink()  # the remedy: then a snapshot falls back to the older one
    if kind == "segment":
        segment(tmp_path, 6, 8)
    rec = recover(str(tmp_path), Records())
    assert (rec.state, rec.next_lsn) == (records(1, 8), 9)


def test_reading_a_socket_or_a_device_is_refused_as_not_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / segment_name(1)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        for target, kind in [(str(path), "a socket"), (os.devnull, "a device")]:
            with pytest.raises(OSError) as info:
                OSFileSystem().read(target)
            assert info.value.errno == errno.ENXIO and info.value.filename == target
            assert f"Not a regular file but {kind}" in str(info.value)


def test_reading_a_regular_file_or_a_link_to_one_still_works(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"x" * 100_000)
    (tmp_path / "link").symlink_to(path)
    assert OSFileSystem().read(str(path)) == b"x" * 100_000
    assert OSFileSystem().read(str(tmp_path / "link")) == b"x" * 100_000


# -- the journal thread crashes in the middle of a batch ---------------------------------------


class Bug(Exception):
    """Not an OSError: nothing in the journal's steps handles it."""


class _Handle:
    def __init__(self, fs: CrashingDisk, inner: FileHandle) -> None:
        self.fs, self.inner = fs, inner

    def write(self, data: bytes) -> None:
        self.fs.step("write")
        self.inner.write(data)

    def fdatasync(self) -> None:
        self.fs.step("fdatasync")
        self.inner.fdatasync()

    def close(self) -> None:
        self.inner.close()


class CrashingDisk(FaultyFS):
    """A FaultyFS whose next ``crash_on`` call (write or fdatasync) raises :class:`Bug`.

    With ``hold``, that call first waits until ``release`` is set (so that
    appends can queue behind the batch); ``entered`` is set when it starts.
    """

    def __init__(self) -> None:
        super().__init__()
        self.crash_on: str | None = None
        self.hold = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def create(self, path: str, *, reserve: bool = False) -> FileHandle:
        return _Handle(self, super().create(path, reserve=reserve))

    def step(self, op: str) -> None:
        if op != self.crash_on:
            return
        self.crash_on = None
        self.entered.set()
        if self.hold:
            assert self.release.wait(BOUND)
        raise Bug(f"injected in {op}")


def crash_logged(caplog: pytest.LogCaptureFixture) -> bool:
    return any(
        r.getMessage() == "journal thread crashed"
        and r.exc_info is not None
        and isinstance(r.exc_info[1], Bug)
        for r in caplog.records
    )


def caused_by_bug(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, Bug):
        cause = cause.__cause__
    return cause is not None


@pytest.mark.parametrize("op", ["write", "fdatasync"])
def test_a_blocking_append_in_the_crashing_batch_gets_the_crash_error(
    op: str, caplog: pytest.LogCaptureFixture
) -> None:
    fs = CrashingDisk()
    j = Journal("/j", fs=fs)
    j.start()
    try:
        assert j.append(b"kept", timeout=BOUND) == 1
        fs.crash_on = op
        with (
            caplog.at_level(logging.ERROR, logger="corosm.journal"),
            pytest.raises(JournalError) as info,
        ):
            j.append(b"in flight", timeout=BOUND)
        assert type(info.value) is JournalError  # its outcome, not a refusal or a timeout
        assert "journal thread crashed: Bug(" in str(info.value)
        assert caused_by_bug(info.value)
        assert crash_logged(caplog)
        assert j.failure is not None
        with pytest.raises(JournalClosed):
            j.append(b"later", timeout=BOUND)
    finally:
        j.close(timeout=BOUND)


class Collect:
    """A sink that keeps every completion; ``raise_once`` makes its first call raise."""

    def __init__(self, raise_once: bool = False) -> None:
        self.items: list[JournalCompletion] = []
        self.raise_once = raise_once
        self.cond = threading.Condition()

    def __call__(self, batch: Sequence[JournalCompletion]) -> None:
        with self.cond:
            self.items.extend(batch)
            self.cond.notify_all()
        if self.raise_once:
            self.raise_once = False
            raise Bug("the sink")

    def wait_for(self, n: int) -> list[JournalCompletion]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.items) >= n, BOUND), self.items
            return list(self.items)


def test_every_append_of_a_crashing_batch_and_behind_it_gets_exactly_one_outcome() -> None:
    fs = CrashingDisk()
    sink = Collect()
    j = Journal("/j", fs=fs)
    j.start(sink)
    try:
        fs.crash_on, fs.hold = "write", True
        j.submit([("a1", b"a1"), ("a2", b"a2")])
        assert fs.entered.wait(BOUND)  # the batch of a1 and a2 is being written
        j.submit([("b", b"b")])  # queued behind it
        fs.release.set()
        items = sink.wait_for(3)
        j.close(timeout=BOUND)
        items = list(sink.items)  # nothing more after the close
        assert [token for token, _, _ in items] == ["a1", "a2", "b"]
        outcomes = {token: (lsn, type(err)) for token, lsn, err in items}
        assert outcomes == {
            "a1": (None, JournalError),
            "a2": (None, JournalError),
            "b": (None, JournalClosed),
        }
        assert all(caused_by_bug(err) for token, _, err in items if token != "b" and err)
    finally:
        fs.release.set()
        j.close(timeout=BOUND)


def test_a_batch_whose_completions_reached_the_sink_is_not_failed_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = Collect(raise_once=True)  # raises on the batch's completions, once handed over
    j = Journal("/j", fs=FaultyFS())
    j.start(sink)
    try:
        with caplog.at_level(logging.ERROR, logger="corosm.journal"):
            j.submit([("x", b"x")])
            assert sink.wait_for(1) == [("x", 1, None)]
            j.close(timeout=BOUND)  # the thread has ended: everything it posts is in
        assert sink.items == [("x", 1, None)]  # once, and as written: no error after it
        assert j.failure is not None and "journal thread crashed: Bug('the sink')" in str(j.failure)
        j.submit([("y", b"y")])
        assert [(t, type(e)) for t, _, e in sink.items[1:]] == [("y", JournalClosed)]
    finally:
        j.close(timeout=BOUND)


# -- ... under the runtime: the handler gets the error, the input its reply ------------------


class Notes(Machine[list[bytes], str, int]):
    """Appends each input; remembers what its handler's append raised."""

    def __init__(self) -> None:
        self.seen: list[BaseException] = []

    def initial_state(self) -> list[bytes]:
        return []

    def apply(self, state: list[bytes], record: bytes) -> list[bytes]:
        state.append(record)
        return state

    async def handle(self, ctx: Context[list[bytes]], input: str) -> int:
        try:
            await ctx.append(input.encode())
        except Exception as exc:
            self.seen.append(exc)
            raise
        return len(ctx.state)


async def _outcome(awaitable: Any) -> object:
    try:
        return await asyncio.wait_for(awaitable, BOUND)
    except Exception as exc:
        return exc


def test_an_input_whose_append_was_in_the_crashing_batch_gets_an_error_reply() -> None:
    fs = CrashingDisk()
    machine = Notes()

    async def main() -> None:
        rt = await start_durable(machine, "/d", fs=fs)
        try:
            assert await _outcome(rt.submit("kept")) == 1
            fs.crash_on = "fdatasync"
            failed = await _outcome(rt.submit("in flight"))
            assert type(failed) is JournalError, failed
            assert "journal thread crashed: Bug(" in str(failed)
            assert [type(e) for e in machine.seen] == [JournalError]  # the handler saw it
            refused = await _outcome(rt.submit("later"))
            assert isinstance(refused, JournalClosed), refused
            health = rt.health()
            assert health is not None and "journal thread crashed" in health
        finally:
            stopped = await _outcome(rt.stop())  # no input left waiting to hold it up
            assert not isinstance(stopped, BaseException), stopped

    asyncio.run(main())
