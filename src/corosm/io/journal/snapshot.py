"""Snapshots: write one safely off the loop, find the newest valid one, drop old files.

Theory of operation
-------------------
A snapshot of the state as of LSN ``L`` (every record <= ``L`` applied) is
written as ``snapshot-<L>.snap.tmp``, fsynced, renamed to
``snapshot-<L>.snap`` and the directory fsynced: a crash leaves either the
old set of files or the new one, never half a snapshot under the real name.
A write that fails removes its temp file at once (it may be large).

No snapshot is a single point of failure: :func:`remove_covered` keeps the
*previous* snapshot ``P`` and every segment after it, and removes only older
snapshots and the segments whose records are all <= ``P`` (the *next*
segment starts at or before ``P + 1``). If the newest snapshot is damaged,
recovery loads ``P`` and replays the journal from there. The same function
runs after a snapshot is written and when a journal starts after recovery,
so the rule lives here only. It goes by the names: recovery renames a
damaged snapshot it went past to ``*.damaged``, so that it is never counted
as the previous one. But only by those of regular files: an entry named like
a segment or a snapshot that is not one (a directory, a symbolic link, a
pipe) is no file the journal wrote. It is logged and left alone, and it
counts as neither, so it can neither make retention fail nor, taken for the
previous snapshot, make it remove the real one.

What a name says is read by :func:`segment_lsn` and :func:`snapshot_lsn`,
for recovery too: an LSN above :data:`~corosm.io.journal.format.LSN_MASK`,
the largest a journal holds, is in no name the journal writes, so such a
name is not one of its files.

The journal's control (:mod:`.control`) runs these steps, one snapshot at a
time: in production on a short-lived snapshot thread, so that neither the
loop nor the journal thread waits for serialisation or for the snapshot's
fsync; in the simulator as clock events.
"""

from __future__ import annotations

import itertools
import logging
import os

from corosm.errors import CorruptJournal
from corosm.io.journal.files import FileSystem, raise_fixable
from corosm.io.journal.format import (
    DAMAGED_SUFFIX,
    LSN_MASK,
    TEMP_SUFFIX,
    decode_snapshot,
    encode_snapshot,
    parse_segment_name,
    parse_snapshot_name,
    snapshot_name,
)

log = logging.getLogger("corosm.journal")


def write_snapshot(fs: FileSystem, directory: str, lsn: int, payload: bytes) -> str:
    """Durably write the snapshot of ``payload`` at ``lsn``; return its path.

    If writing, syncing or renaming fails, the temp file is removed before the
    error is raised, so a full disk gets its space back at once.
    """
    final = os.path.join(directory, snapshot_name(lsn))
    temp = final + TEMP_SUFFIX
    data = encode_snapshot(lsn, payload)
    try:
        f = fs.create(temp)
        try:
            f.write(data)
            f.fdatasync()
        finally:
            f.close()
        fs.rename(temp, final)
    except OSError:
        _discard(fs, temp)
        raise
    fs.fsync_dir(directory)
    return final


def _discard(fs: FileSystem, temp: str) -> None:
    """Remove the temp file of a failed snapshot; recovery removes it if this fails too."""
    try:
        fs.remove(temp)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove %s after a failed snapshot: %s", temp, exc)


def segment_lsn(name: str) -> int | None:
    """The first LSN in the segment name ``name``; None if it is no segment's (module docs)."""
    lsn = parse_segment_name(name)
    return lsn if lsn is not None and lsn <= LSN_MASK else None


def snapshot_lsn(name: str) -> int | None:
    """The LSN in the snapshot name ``name``; None if it is no snapshot's (module docs)."""
    lsn = parse_snapshot_name(name)
    return lsn if lsn is not None and lsn <= LSN_MASK else None


def covered_files(names: list[str], lsn: int) -> list[str]:
    """The names :func:`remove_covered` removes from a directory holding ``names``.

    ``names`` are those of regular files. ``lsn`` is the newest snapshot
    (just written, or loaded by recovery). The previous snapshot ``P`` is
    the newest one older than ``lsn`` (0 if none: then the journal from
    LSN 1 is the fallback, and nothing goes). Removed: snapshots older than
    ``P``, and segments whose records are all <= ``P``. The last segment is
    never removed (it may be the one being written).
    """
    snapshots = [(s, n) for n in names if (s := snapshot_lsn(n)) is not None]
    previous = max((s for s, _ in snapshots if s < lsn), default=0)
    segments = sorted((first, n) for n in names if (first := segment_lsn(n)) is not None)
    removed = [
        name
        for (_first, name), (next_first, _) in itertools.pairwise(segments)
        if next_first <= previous + 1
    ]
    removed += [name for s, name in snapshots if s < previous]
    return removed


def remove_covered(fs: FileSystem, directory: str, lsn: int) -> list[str]:
    """Remove what neither the snapshot at ``lsn`` nor the one before it needs.

    See :func:`covered_files` for the rule, which counts regular files only
    (:func:`_journal_files`). Returns the names removed.
    """
    removed = covered_files(_journal_files(fs, directory), lsn)
    for name in removed:
        fs.remove(os.path.join(directory, name))
    if removed:
        fs.fsync_dir(directory)
    return removed


def _journal_files(fs: FileSystem, directory: str) -> list[str]:
    """The names in ``directory``, less entries named as segments or snapshots that are no files.

    Such an entry (a directory, a symbolic link, a pipe) is not one the
    journal wrote: it is logged, each time, and left out.
    """
    names = []
    for name in fs.listdir(directory):
        path = os.path.join(directory, name)
        named = segment_lsn(name) is not None or snapshot_lsn(name) is not None
        if named and not fs.is_regular_file(path):
            log.warning(
                "journal: %s is named like a segment or a snapshot but is not a regular file "
                "(a directory, a link or a pipe), so snapshot retention neither counts nor "
                "removes it: move it out of the data directory", path,
            )  # fmt: skip
            continue
        names.append(name)
    return names


def load_newest_snapshot(
    fs: FileSystem, directory: str, *, damaged: list[CorruptJournal] | None = None
) -> tuple[str, int, bytes] | None:
    """``(path, lsn, payload)`` of the newest snapshot that checks out, or None.

    A damaged snapshot is logged and skipped in favour of an older one, and
    its error appended to ``damaged`` when given; whether the journal still
    covers the gap is checked by recovery. A snapshot whose header LSN is not
    the one in its name counts as damaged: retention goes by the names.

    A snapshot the disk fails to read (EIO) is damaged too; one the
    operator must make readable (no permission, a directory or a named pipe
    under its name) raises an ``OSError`` that says so (:func:`_read`).
    """
    found = sorted(
        ((lsn, n) for n in fs.listdir(directory) if (lsn := snapshot_lsn(n)) is not None),
        reverse=True,
    )
    for named_lsn, name in found:
        path = os.path.join(directory, name)
        try:
            lsn, payload = decode_snapshot(path, _read(fs, path))
            if lsn != named_lsn:
                raise CorruptJournal(
                    path, 16, f"snapshot holds lsn {lsn}, its name says {named_lsn}"
                )
        except CorruptJournal as exc:
            log.error("skipping damaged snapshot: %s", exc)
            if damaged is not None:
                damaged.append(exc)
            continue
        return path, lsn, payload
    return None


def _read(fs: FileSystem, path: str) -> bytes:
    """The bytes of snapshot ``path``; if the disk fails to read them, it is damaged.

    What the operator can fix (no permission, a directory or another file
    that is not a regular one under its name) is raised as it is
    (:func:`~corosm.io.journal.files.raise_fixable`): the snapshot may be
    sound, and setting it aside would hide that.
    """
    try:
        return fs.read(path)
    except OSError as exc:
        raise_fixable(exc, path, "snapshot")
        raise CorruptJournal(path, 0, f"cannot be read: {exc.strerror or exc}") from exc


def set_aside(fs: FileSystem, path: str) -> str:
    """Rename the damaged snapshot ``path`` to ``*.damaged`` (kept for inspection)."""
    aside = path + DAMAGED_SUFFIX
    fs.rename(path, aside)
    fs.fsync_dir(os.path.dirname(path))
    log.warning("damaged snapshot %s renamed to %s", path, aside)
    return aside
