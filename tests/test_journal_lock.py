"""One journal per data directory: the LOCK file's flock, across processes and within one."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from corosm.errors import DataDirInUse
from corosm.io.journal import DirLock, FaultyFS, open_journal
from corosm.io.journal.lock import LOCK_NAME
from test_journal_host import KV


def test_a_second_lock_is_refused_until_the_first_is_released(tmp_path: Path) -> None:
    first = DirLock.acquire(str(tmp_path))
    assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    with pytest.raises(DataDirInUse) as info:
        DirLock.acquire(str(tmp_path))
    assert info.value.pid == os.getpid() and str(tmp_path) in str(info.value)
    first.release()
    first.release()  # idempotent
    DirLock.acquire(str(tmp_path)).release()


def test_another_process_holding_the_directory_is_named_and_its_death_frees_it(
    tmp_path: Path,
) -> None:
    script = (
        "import sys, corosm.io.journal.lock as l; l.DirLock.acquire(sys.argv[1]); "
        "print('held', flush=True); sys.stdin.read()"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-c", script, str(tmp_path)]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
            with pytest.raises(DataDirInUse, match=f"process {holder.pid}"):
                open_journal(str(tmp_path), KV())
        finally:
            holder.kill()  # kill -9: the kernel drops the lock, nothing to clean up
            holder.wait(timeout=10)
    journal, rec = open_journal(str(tmp_path), KV())
    journal.close()
    assert rec.next_lsn == 1


def test_a_journal_holds_its_directory_until_closed(tmp_path: Path) -> None:
    journal, _ = open_journal(str(tmp_path), KV())
    journal.start(lambda completions: None)
    with pytest.raises(DataDirInUse):
        open_journal(str(tmp_path), KV())
    journal.close()
    open_journal(str(tmp_path), KV())[0].close()


def test_a_failed_recovery_lets_the_directory_go(tmp_path: Path) -> None:
    (tmp_path / "journal-00000000000000000001.log").write_bytes(b"not a journal header")
    with pytest.raises(Exception) as info:
        open_journal(str(tmp_path), KV())
    assert not isinstance(info.value, DataDirInUse)
    DirLock.acquire(str(tmp_path)).release()  # not left held


def test_the_in_memory_file_system_takes_no_lock() -> None:
    fs = FaultyFS()
    first, _ = open_journal("/data", KV(), fs=fs)
    second, _ = open_journal("/data", KV(), fs=fs)  # as the simulator reopens after a crash
    first.close()
    second.close()
    assert LOCK_NAME not in fs.listdir("/data")


def test_a_lock_whose_pid_cannot_be_written_is_let_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full disk failed the pid's write with an OSError naming no file, and the
    # descriptor holding the flock was kept: every later open got DataDirInUse.
    def full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(OSError) as info:
        DirLock.acquire(str(tmp_path))
    monkeypatch.undo()
    DirLock.acquire(str(tmp_path)).release()
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == str(tmp_path / LOCK_NAME)
