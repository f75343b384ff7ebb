"""A data directory's path that cannot be one: a clear error naming it, and nothing lost.

``corosm.open`` (and ``open_blocking``, ``corosm serve``, a shard) opens its
directory in one place, :func:`corosm.io.journal.open_journal`. A path that
names no directory at all is a ``UsageError``; one the disk will not let be
a data directory is a ``DataError`` that names the path, says what is in the
way and what was expected, and leaves whatever is there untouched. They
raised a bare ``FileExistsError`` ("File exists" for a dangling symbolic
link), ``NotADirectoryError``, ``FileNotFoundError`` or ``PermissionError``.

An open that fails once the directory is locked (an option the runtime
refuses, a disk with no room for the first segment's reserve) lets the lock
go; it was kept, and every later open in the process got ``DataDirInUse``.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import corosm
from corosm.errors import DataError, UsageError
from corosm.io.journal.files import RESERVE_BYTES
from corosm.io.journal.lock import LOCK_NAME
from test_journal_faults import disk_with_room
from test_open import Tally

EXPECTED = "a data directory must be a directory, or a path where one can be created"


def open_async(path: Any, **options: Any) -> None:
    async def main() -> None:
        async with corosm.open(Tally(), path, **options) as host:
            await host.submit(("incr", "x"))

    asyncio.run(main())


def open_blocking(path: Any, **options: Any) -> None:
    with corosm.open_blocking(Tally(), path, **options) as host:
        host.submit(("incr", "x"))


OPENERS = [pytest.param(open_async, id="open"), pytest.param(open_blocking, id="open_blocking")]


def a_file(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "notes.txt"
    path.write_text("someone's notes")
    return path, "is a file"


def a_link_to_a_file(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "notes.txt").write_text("someone's notes")
    (tmp_path / "link").symlink_to("notes.txt")
    return tmp_path / "link", "is a symbolic link to a file"


def a_dangling_link(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "link").symlink_to("unmounted-disk")
    return tmp_path / "link", "is a symbolic link to 'unmounted-disk', which does not exist"


def a_link_loop(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    return tmp_path / "a", "is a symbolic link that loops"


def under_a_file(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "notes.txt").write_text("someone's notes")
    blocker = str(tmp_path / "notes.txt")
    return tmp_path / "notes.txt" / "data", f"cannot be created: {blocker!r} is a file"


def deep_under_a_file(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "notes.txt").write_text("someone's notes")
    blocker = str(tmp_path / "notes.txt")
    return tmp_path / "notes.txt" / "a" / "b", f"cannot be created: {blocker!r} is a file"


def under_a_dangling_link(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "link").symlink_to("unmounted-disk")
    link = str(tmp_path / "link")
    return tmp_path / "link" / "data", f"cannot be created: {link!r} is a symbolic link to"


def a_fifo(tmp_path: Path) -> tuple[Path, str]:
    os.mkfifo(tmp_path / "pipe")
    return tmp_path / "pipe", "is a FIFO"


NOT_A_DIRECTORY: list[Callable[[Path], tuple[Path, str]]] = [
    a_file,
    a_link_to_a_file,
    a_dangling_link,
    a_link_loop,
    under_a_file,
    deep_under_a_file,
    under_a_dangling_link,
    a_fifo,
]


def snapshot_of(tmp_path: Path) -> dict[str, str | bytes]:
    """Every entry under ``tmp_path``: links by target, files by contents, directories."""
    found: dict[str, str | bytes] = {}
    for path in sorted(tmp_path.rglob("*")):
        if path.is_symlink():
            found[str(path)] = f"-> {os.readlink(path)}"
        elif path.is_file():
            found[str(path)] = path.read_bytes()
        else:
            found[str(path)] = "directory" if path.is_dir() else "other"
    return found


@pytest.mark.parametrize("opener", OPENERS)
@pytest.mark.parametrize("make", NOT_A_DIRECTORY, ids=lambda make: make.__name__)
def test_a_path_that_cannot_be_a_directory_says_what_is_in_the_way(
    opener: Callable[[Any], None], make: Callable[[Path], tuple[Path, str]], tmp_path: Path
) -> None:
    path, what = make(tmp_path)
    before = snapshot_of(tmp_path)
    with pytest.raises(DataError) as info:
        opener(path)
    message = str(info.value)
    assert message.startswith(f"data directory {str(path)!r} "), message
    assert what in message and message.endswith(EXPECTED), message
    assert isinstance(info.value.__cause__, OSError)  # the system's error, kept
    assert snapshot_of(tmp_path) == before  # nothing made, nothing overwritten


@pytest.mark.parametrize("opener", OPENERS)
@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("", "the data directory's path is empty"),
        ("a\0b", "holds a NUL character"),
        (None, "must be a str or os.PathLike[str] path, got NoneType None"),
        (b"data", "got bytes b'data'"),
        (17, "got int 17"),
    ],
    ids=["empty", "nul", "none", "bytes", "int"],
)
def test_a_path_that_names_no_directory_is_a_usage_error(
    opener: Callable[[Any], None],
    path: Any,
    words: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "" was FileNotFoundError; an unset variable must not put the journal in ".".
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=re.escape(words)):
        opener(path)
    assert list(tmp_path.iterdir()) == []


def test_missing_parents_are_created(tmp_path: Path) -> None:
    path = tmp_path / "new" / "deeper" / "data"
    open_async(path)
    open_async(path)
    assert (path / LOCK_NAME).exists()


def test_a_link_to_a_directory_is_a_data_directory(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    open_async(tmp_path / "link")
    assert (tmp_path / "real" / LOCK_NAME).exists()


def refuse(monkeypatch: pytest.MonkeyPatch, name: str, err: int, *, only: str) -> None:
    """Make ``os.<name>(path, ...)`` fail with ``err`` for paths ending in ``only``."""
    real = getattr(os, name)

    def refused(path: Any, *args: Any, **kwargs: Any) -> Any:
        if os.fspath(path).endswith(only):
            raise OSError(err, os.strerror(err), path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, name, refused)


def test_a_directory_this_process_may_not_write_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It was a bare PermissionError on LOCK. Mode bits do not bind root, so
    # as root the kernel's answer to everyone else is given by hand.
    data = tmp_path / "read-only"
    data.mkdir()
    data.chmod(0o555)
    if os.geteuid() == 0:
        refuse(monkeypatch, "open", errno.EACCES, only=f"read-only/{LOCK_NAME}")
    try:
        with pytest.raises(DataError) as info:
            open_async(data)
    finally:
        data.chmod(0o755)
    message = str(info.value)
    assert message.startswith(f"data directory {str(data)!r} is not writable: ")
    assert "Permission denied" in message and repr(LOCK_NAME) in message
    assert message.endswith("the journal needs a directory it may create and write files in")
    assert list(data.iterdir()) == []


def test_a_directory_that_cannot_be_created_there_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = tmp_path / "read-only"
    parent.mkdir()
    parent.chmod(0o555)
    data = parent / "data"
    if os.geteuid() == 0:
        refuse(monkeypatch, "mkdir", errno.EACCES, only="read-only/data")
    try:
        with pytest.raises(DataError) as info:
            open_async(data)
    finally:
        parent.chmod(0o755)
    message = str(info.value)
    assert message.startswith(f"data directory {str(data)!r} cannot be created or entered: ")
    assert "Permission denied" in message
    assert message.endswith("the journal needs a directory it may create and write files in")


@pytest.mark.parametrize(("name", "only"), [("open", f"data/{LOCK_NAME}"), ("mkdir", "data")])
def test_a_read_only_file_system_is_named(
    name: str, only: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A read-only mount cannot be made in a test: the kernel's EROFS is given by hand.
    data = tmp_path / "data"
    if name == "open":
        data.mkdir()
    refuse(monkeypatch, name, errno.EROFS, only=only)
    with pytest.raises(DataError, match="is on a read-only file system") as info:
        open_async(data)
    assert str(info.value).startswith(f"data directory {str(data)!r} ")


def test_a_directory_named_like_the_lock_file_is_named(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).mkdir()
    with pytest.raises(DataError, match=f"holds a directory named '{LOCK_NAME}'.*move it away"):
        open_async(tmp_path)


def test_a_name_too_long_is_named(tmp_path: Path) -> None:
    path = tmp_path / ("x" * 300)
    with pytest.raises(DataError, match="a name in the path is too long for its file system"):
        open_async(path)


@pytest.mark.parametrize("opener", OPENERS)
def test_an_open_refused_after_recovery_lets_the_directory_go(
    opener: Callable[..., None], tmp_path: Path
) -> None:
    # A bound the runtime refuses came after the directory was locked, and the
    # lock was never let go: every later open in the process got DataDirInUse.
    with pytest.raises(UsageError, match="max_queue"):
        opener(tmp_path, max_queue=0)
    opener(tmp_path)  # not DataDirInUse


@pytest.mark.parametrize("opener", OPENERS)
def test_a_disk_too_small_for_the_reserve_says_so_and_lets_the_directory_go(
    opener: Callable[..., None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 600 KiB free: a bare ENOSPC; the failed start kept the directory locked
    # (a retry got DataDirInUse) and its segment kept 600 KiB of zeros.
    disk_with_room(monkeypatch, 600 << 10)
    with pytest.raises(OSError) as info:
        opener(tmp_path)
    assert sum(p.stat().st_size for p in tmp_path.glob("journal-*.log")) == 0
    monkeypatch.undo()  # room again
    opener(tmp_path)
    err = info.value
    assert err.errno == errno.ENOSPC and str(tmp_path) in err.filename
    assert f"the journal reserves {RESERVE_BYTES} bytes ahead of its records" in str(err)
    assert f"asked for {RESERVE_BYTES} bytes at offset 0, found room for {600 << 10}" in str(err)
