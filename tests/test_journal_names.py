"""What the journal makes of the names in its directory: entries that are no regular files,
LSNs past the format's bound, and a directory it cannot list.

Retention (``snapshot.remove_covered``) removes only regular files, and
counts no other entry as a segment or a snapshot. A name whose LSN is above
``LSN_MASK`` is no journal's: recovery logs it and neither reads nor
removes it. A shard store's checks refuse a directory they cannot list
rather than take it for an empty one.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from corosm.io.journal import Journal, JournalOptions, OSFileSystem, open_journal, recover
from corosm.io.journal.format import LSN_MASK, encode_snapshot, segment_name, snapshot_name
from corosm.io.journal.snapshot import remove_covered
from corosm.shards.manifest import Layout, check_here, holds_journal, holds_shard_dirs
from journal_damage import BOUND, Records, payload


def records(first: int, last: int) -> list[bytes]:
    return [payload(lsn) for lsn in range(first, last + 1)]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# -- retention meets entries that are not regular files ---------------------------------------


def a_directory(path: Path, outside: Path) -> None:
    path.mkdir()
    (path / "inside").write_bytes(b"someone's")


def a_pipe(path: Path, outside: Path) -> None:
    os.mkfifo(path)


def a_link(path: Path, outside: Path) -> None:
    """A symbolic link to a file outside the directory (no journal writes one)."""
    outside.write_bytes(b"the operator's")
    path.symlink_to(outside)


KINDS = [a_directory, a_pipe, a_link]


@pytest.mark.parametrize("make", KINDS, ids=lambda make: make.__name__)
def test_retention_skips_and_names_an_entry_that_is_no_regular_file(
    tmp_path: Path, make: Callable[[Path, Path], None], caplog: pytest.LogCaptureFixture
) -> None:
    # A directory so named made the cleanup fail (os.remove: EISDIR) part-way, at every
    # snapshot from then on; a pipe or a link was deleted, though the journal wrote neither.
    directory = tmp_path / "j"
    directory.mkdir()
    for name in [*map(segment_name, (1, 6, 11, 16, 21)), *map(snapshot_name, (5, 12, 20))]:
        (directory / name).write_bytes(b"")
    strays = [directory / segment_name(3), directory / snapshot_name(2)]  # both covered
    for n, stray in enumerate(strays):
        make(stray, tmp_path / f"outside-{n}")
    with caplog.at_level(logging.WARNING, logger="corosm.journal"):
        removed = remove_covered(OSFileSystem(), str(directory), 20)
    assert sorted(removed) == [segment_name(1), segment_name(6), snapshot_name(5)]
    assert all(os.path.lexists(stray) for stray in strays)
    said = warnings(caplog)
    for stray in strays:
        [line] = [line for line in said if str(stray) in line]
        assert "is not a regular file" in line and "move it out of the data directory" in line
    if make is a_link:
        assert [p.read_bytes() for p in sorted(tmp_path.glob("outside-*"))] == [
            b"the operator's"
        ] * 2


def snapshot_at(journal: Journal, lsn: int) -> None:
    """Take the snapshot of records 1..lsn, and wait for it and its cleanup."""
    assert journal.start_snapshot(lsn, lambda: Records().snapshot(records(1, lsn)))
    assert journal.wait_snapshot(BOUND)


@pytest.mark.parametrize("make", KINDS, ids=lambda make: make.__name__)
def test_an_entry_named_like_the_previous_snapshot_does_not_get_the_real_one_removed(
    tmp_path: Path, make: Callable[[Path, Path], None], caplog: pytest.LogCaptureFixture
) -> None:
    # Counted as the previous snapshot (25), it made retention remove the real one (20) and
    # the segments up to 25: with the newest snapshot damaged, recovery had nothing to go on.
    directory = tmp_path / "j"
    stray = directory / snapshot_name(25)
    with Journal(str(directory), options=JournalOptions(segment_bytes=64)) as journal:
        for lsn in range(1, 41):
            assert journal.append(payload(lsn), timeout=BOUND) == lsn
            if lsn == 20:
                snapshot_at(journal, 10)
                snapshot_at(journal, 20)
                make(stray, tmp_path / "outside")
            if lsn == 30:
                with caplog.at_level(logging.INFO, logger="corosm.journal"):
                    snapshot_at(journal, 30)
        assert journal.failure is None
    assert sorted(p.name for p in directory.glob("*.snap") if p != stray) == [
        snapshot_name(20),
        snapshot_name(30),
    ]
    firsts = sorted(int(p.name[8:28]) for p in directory.glob("journal-*.log"))
    assert firsts[0] <= 21 < firsts[1]  # every record after the previous snapshot is kept
    assert os.path.lexists(stray)
    if make is a_link:
        assert (tmp_path / "outside").read_bytes() == b"the operator's"
    said = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("snapshot at lsn 30 written; removed ") for line in said)
    assert not [line for line in said if "failed" in line]
    assert any(str(stray) in line and "not a regular file" in line for line in said)
    # The newest snapshot is damaged: move the stray aside, as the warning says, and the
    # previous snapshot and the journal after it rebuild every record.
    if stray.is_dir() and not stray.is_symlink():
        shutil.rmtree(stray)
    else:
        stray.unlink()
    newest = directory / snapshot_name(30)
    newest.write_bytes(newest.read_bytes()[:-1] + b"?")
    rec = recover(str(directory), Records())
    assert rec.state == records(1, 40)
    assert rec.report.snapshot_lsn == 20


# -- LSNs past the format's bound in a name -------------------------------------------------


def three_records(directory: Path) -> None:
    with Journal(str(directory)) as journal:
        for lsn in (1, 2, 3):
            assert journal.append(payload(lsn), timeout=BOUND) == lsn


HUGE_SEGMENTS = ["journal-99999999999999999999.log", segment_name(LSN_MASK + 1)]


@pytest.mark.parametrize("name", HUGE_SEGMENTS)
def test_a_segment_named_past_the_last_lsn_is_logged_and_not_read(
    tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    # It was read as a segment starting at that LSN: recovery refused, over a "gap" of
    # records 4..LSN-1, to start at all.
    three_records(tmp_path)
    shutil.copyfile(tmp_path / segment_name(1), tmp_path / name)
    before = (tmp_path / name).read_bytes()
    with caplog.at_level(logging.WARNING, logger="corosm.journal"):
        journal, rec = open_journal(tmp_path, Records())
    try:
        assert rec.state == records(1, 3) and rec.next_lsn == 4
        journal.start()
        assert journal.append(payload(4), timeout=BOUND) == 4
    finally:
        journal.close()
    [line] = [line for line in warnings(caplog) if name in line]
    assert f"the LSN in its name is above {LSN_MASK}" in line
    assert "move it out of the data directory" in line
    assert (tmp_path / name).read_bytes() == before
    assert recover(str(tmp_path), Records()).state == records(1, 4)


@pytest.mark.parametrize("holds", ["its own lsn", "a copy"])
def test_a_snapshot_named_past_the_last_lsn_is_logged_and_not_read(
    tmp_path: Path, holds: str, caplog: pytest.LogCaptureFixture
) -> None:
    # One whose header says the same LSN was restored: the three records were skipped as
    # held by it, and the journal, at LSN 2^48 + 2, could write nothing. A copy of another
    # snapshot counted as damaged, so recovery refused for records it never held.
    three_records(tmp_path)
    if holds == "its own lsn":
        name = snapshot_name(LSN_MASK + 1)
        (tmp_path / name).write_bytes(encode_snapshot(LSN_MASK + 1, Records().snapshot([b"z"])))
    else:
        name = "snapshot-99999999999999999999.snap"
        (tmp_path / name).write_bytes(encode_snapshot(2, Records().snapshot(records(1, 2))))
    before = (tmp_path / name).read_bytes()
    temp = tmp_path / (name + ".tmp")  # no journal wrote this temp file either: not removed
    temp.write_bytes(b"half")
    with caplog.at_level(logging.WARNING, logger="corosm.journal"):
        journal, rec = open_journal(tmp_path, Records())
    try:
        assert (rec.state, rec.next_lsn, rec.report.snapshot_lsn) == (records(1, 3), 4, 0)
        assert rec.report.damaged_snapshots == ()
        journal.start()
        assert journal.append(payload(4), timeout=BOUND) == 4
    finally:
        journal.close()
    said = warnings(caplog)
    for stray in (name, temp.name):
        [line] = [line for line in said if repr(stray) in line]
        assert f"the LSN in its name is above {LSN_MASK}" in line
    assert (tmp_path / name).read_bytes() == before and temp.read_bytes() == b"half"


def test_names_up_to_the_last_lsn_are_the_journal_s_and_past_it_are_not() -> None:
    from corosm.io.journal.snapshot import segment_lsn, snapshot_lsn

    assert segment_lsn(segment_name(LSN_MASK)) == LSN_MASK
    assert snapshot_lsn(snapshot_name(LSN_MASK)) == LSN_MASK
    assert segment_lsn(segment_name(LSN_MASK + 1)) is None
    assert snapshot_lsn(snapshot_name(LSN_MASK + 1)) is None
    assert segment_lsn(snapshot_name(1)) is None and snapshot_lsn(segment_name(1)) is None


# -- a shard store's directory that cannot be listed ----------------------------------------


def refuse_listing(
    monkeypatch: pytest.MonkeyPatch, directory: Path, err: int = errno.EACCES
) -> None:
    """Make os.listdir fail on ``directory`` with ``err`` (chmod does not stop root)."""
    listdir = os.listdir

    def refusing(path: str = ".") -> list[str]:
        if os.fspath(path) == str(directory):
            raise OSError(err, os.strerror(err), path)
        return listdir(path)

    monkeypatch.setattr(os, "listdir", refusing)


@pytest.mark.parametrize("ask", [holds_journal, holds_shard_dirs], ids=lambda f: f.__name__)
def test_a_directory_that_cannot_be_listed_is_no_empty_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ask: Callable[[str], bool]
) -> None:
    (tmp_path / segment_name(1)).write_bytes(b"")
    (tmp_path / "shard-0000").mkdir()
    assert ask(str(tmp_path)) is True
    refuse_listing(monkeypatch, tmp_path)
    with pytest.raises(PermissionError) as info:
        ask(str(tmp_path))
    err = info.value
    assert err.errno == errno.EACCES and err.filename == str(tmp_path)
    assert "cannot list the directory, so whether it holds a journal or shards is unknown" in (
        str(err)
    )
    assert "give the user corosm runs read and search access to it" in str(err)


def test_a_store_check_names_a_directory_it_cannot_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "kv"
    three_records(data)  # an unsharded host's journal: no store may be made here
    refuse_listing(monkeypatch, data, errno.EIO)
    with pytest.raises(OSError) as info:
        check_here(data, Layout(2))
    assert info.value.errno == errno.EIO and info.value.filename == str(data)
    assert "cannot list the directory" in str(info.value)
    assert "fix what keeps it from being listed, and try again" in str(info.value)
