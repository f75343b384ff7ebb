"""The shard layout kept in a data directory, so a restart finds the same data.

Theory of operation
-------------------
A sharded data directory holds one manifest and one sub-directory per shard::

    DATA/shards.json            {"format": "corosm-shards", "version": 1,
                                 "shards": N, "hash": "blake2b-64/corosm-key-v1"}
    DATA/shard-0000/            a corosm.open() data directory (journal, snapshots)
    DATA/shard-0000/shard.json  the same fields plus "index": 0

A key's shard depends on N and on the hash, so opening the directory with
another N, or a router with another hash, would look for every key in the
wrong journal. :func:`check_layout` refuses that with a
:class:`ShardLayoutMismatch` saying what the directory holds and how to
re-shard it. The manifest is written once (temp file, fsync, link, fsync of the
directory) and then never changes; re-sharding writes a new directory.

A store kept whole in one directory (:func:`check_store`: the shards of
this process) is made markers first and manifest last, so a manifest
promises that every shard directory was made: once it exists, a missing or
empty shard directory is lost data, and it is refused, never made again
empty (which would answer "absent" for every key that shard held). A crash
before the manifest leaves directories that hold a marker and nothing else:
they are finished on the next open. A damaged or hand-edited manifest or
marker (not JSON, a field missing, twice or of the wrong type, a version
from a newer corosm) is a :class:`ShardLayoutMismatch` naming the file and
the field.

Each shard checks its own ``shard.json`` too, where it runs: on a cluster
every node has its own disk, and the shard's marker is the one file that
travels with its journal. A shard whose directory has a journal but no
marker, or another marker, is refused the same way. ``create=False``
refuses to make a missing shard, or a missing manifest (the store's data
is not here): a shard restarted on a node that lacks its data must not
start empty and answer as if the store were new. (A node cannot tell a
new store from a lost directory by itself; callers that can, say so with
``create=False``: :func:`is_created`.)

A caller that starts the shards elsewhere (Ray) checks the directory where
it runs first, with :func:`check_here`, which writes nothing: the store's
manifest, or else what would stop any shard from making the store there
(another layout, a damaged manifest, an unsharded host's journal, stray
shard directories, a file in the way of the directory). For a new store
(no manifest there) it also asks each shard's node the same
(:func:`corosm.shards.ray.check_node`), and reopens the store if one holds
its manifest. The rest (each shard's marker and directory) only the shard
can check, on its own disk.

A directory these checks cannot list (no permission) is never taken for an
empty one, which could hide a journal or shards: it is an ``OSError``
naming it, saying that it cannot be read and what to do.

Plain files and JSON only; no Ray, no asyncio.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import dataclass

from corosm.errors import UsageError
from corosm.io.journal.lock import check_directory_path, make_directory
from corosm.shards.errors import ShardLayoutMismatch
from corosm.shards.routing import HASH_NAME, check_shard_count

MANIFEST = "shards.json"
MARKER = "shard.json"
FORMAT = "corosm-shards"
VERSION = 1

#: A manifest is about 120 bytes; a file far larger is not one (and is not read whole).
_MAX_SIZE = 64 << 10


@dataclass(frozen=True, slots=True)
class Layout:
    """How keys map to shards: the shard count and the hash's name."""

    shards: int
    hash: str = HASH_NAME

    def __post_init__(self) -> None:
        check_shard_count(self.shards)
        if type(self.hash) is not str or not self.hash:
            raise UsageError(f"the hash name must be a non-empty str, not {self.hash!r:.60}")

    def describe(self) -> str:
        return f"{self.shards} shard(s), hash {self.hash}"


def data_path(value: object, argument: str = "data_dir") -> str:
    """``value`` as a directory path, or a :class:`UsageError` naming ``argument``."""
    if isinstance(value, str | os.PathLike):
        path = os.fspath(value)
        if isinstance(path, str) and path and "\0" not in path:
            return path
    raise UsageError(
        f"{argument} must be a directory path (a non-empty str or os.PathLike), not "
        f"{value!r:.60} ({type(value).__name__})"
    )


def shard_dir(data_dir: str | os.PathLike[str], index: int) -> str:
    """The data directory of shard ``index`` under ``data_dir``."""
    if type(index) is not int or index < 0:
        raise UsageError(f"a shard index must be an int of at least 0, not {index!r:.60}")
    return os.path.join(data_path(data_dir), f"shard-{index:04d}")


def read_layout(data_dir: str | os.PathLike[str]) -> Layout | None:
    """The layout in ``data_dir``'s manifest, or None when it has none."""
    return _read(os.path.join(data_path(data_dir), MANIFEST))[0]


def is_created(data_dir: str | os.PathLike[str], wanted: Layout) -> bool:
    """Whether ``data_dir`` holds the manifest of a store laid out as ``wanted``.

    False when it has none; a manifest of another layout raises. A store
    whose manifest exists is reopened, never made again: its shards are
    opened with ``create=False`` (see the module docs).
    """
    directory, wanted = data_path(data_dir), _layout(wanted)
    found, _ = _read(os.path.join(directory, MANIFEST))
    if found is None:
        return False
    if found != wanted:
        raise ShardLayoutMismatch(_mismatch(directory, found, wanted))
    return True


def check_here(data_dir: str | os.PathLike[str], wanted: Layout) -> bool:
    """:func:`is_created`, and when not, whether a store of ``wanted`` could be made here.

    Read-only. ``data_dir`` must be a directory or a path where one can be
    made (:func:`~corosm.io.journal.lock.check_directory_path`: checked
    first, so a symbolic link that loops is named as such, not as an
    unreadable manifest). Without a manifest, it must hold what
    :func:`check_layout` lets a new store start from (no unsharded journal,
    no ``shard-*`` entries but an unfinished creation of ``wanted``). A
    :class:`~corosm.errors.DataError` (a :class:`ShardLayoutMismatch` for
    what the directory holds) names the path. Each shard's own marker and
    directory are left to the shard (module docs).
    """
    directory = data_path(data_dir)
    check_directory_path(directory)
    if is_created(directory, wanted):
        return True
    _check_new(directory, wanted, create=True)
    return False


def check_create(create: object) -> bool:
    """``create`` if it is a bool (a string ``"no"`` would read as true and create a store)."""
    if type(create) is not bool:
        raise UsageError(f"create must be True or False, not {create!r:.60}")
    return create


def check_layout(
    data_dir: str | os.PathLike[str], wanted: Layout, *, create: bool = True
) -> Layout:
    """Make sure ``data_dir`` holds ``wanted`` (writing the manifest if it is new)."""
    directory = data_path(data_dir)
    if not is_created(directory, wanted):
        _check_new(directory, wanted, create)
        _write(directory, MANIFEST, {"shards": wanted.shards, "hash": wanted.hash})
        is_created(directory, wanted)  # another process may have written it first: trust the file
    return wanted


def check_store(data_dir: str | os.PathLike[str], wanted: Layout, *, create: bool = True) -> Layout:
    """Check (or make) a store kept whole in ``data_dir``: its manifest and every shard.

    A new store gets every shard's marker first and its manifest last; an
    existing one must have every shard directory (see the module docs).
    Afterwards the shards are opened with ``create=False``.
    """
    directory, create = data_path(data_dir), check_create(create)
    if not is_created(directory, wanted):
        _check_new(directory, wanted, create)
        for index in range(wanted.shards):
            check_shard(directory, index, wanted, create=True)
        check_layout(directory, wanted)
    for index in range(wanted.shards):
        check_shard(directory, index, wanted, create=False)
    return wanted


def check_shard(
    data_dir: str | os.PathLike[str], index: int, layout: Layout, *, create: bool = True
) -> str:
    """Check (or make) shard ``index``'s directory and marker; return the directory."""
    directory = shard_dir(data_dir, index)
    if not index < _layout(layout).shards:
        raise UsageError(f"shard index {index} is out of range for {layout.describe()}")
    found, marked = _read(os.path.join(directory, MARKER), marker=True)
    if found is None:
        if _entries(directory):
            raise ShardLayoutMismatch(f"{directory} holds files but no {MARKER}: not a shard")
        if not create:
            raise ShardLayoutMismatch(
                f"shard {index}'s data is not here: {directory} is missing or empty, but the "
                "store exists (or create=False was given): starting the shard empty would "
                "answer 'absent' for every key it held. Start it where its directory is, or "
                "restore the directory from a backup (docs/scaling.md)"
            )
        write_marker(data_dir, index, layout)
        found, marked = _read(os.path.join(directory, MARKER), marker=True)
    if found != layout or marked != index:
        raise ShardLayoutMismatch(
            f"{directory} is marked as shard {marked} of {found.describe() if found else '?'}, "
            f"but was opened as shard {index} of {layout.describe()}"
        )
    return directory


def write_marker(data_dir: str | os.PathLike[str], index: int, layout: Layout) -> None:
    """Write shard ``index``'s marker (making its directory; an existing marker stays)."""
    fields = {"shards": layout.shards, "hash": layout.hash, "index": index}
    _write(shard_dir(data_dir, index), MARKER, fields)


def write_layout(data_dir: str | os.PathLike[str], layout: Layout) -> None:
    """Write the manifest of a new layout (used by re-sharding, as its last step)."""
    layout = _layout(layout)
    _write(data_path(data_dir), MANIFEST, {"shards": layout.shards, "hash": layout.hash})


def _layout(wanted: object) -> Layout:
    if not isinstance(wanted, Layout):
        raise UsageError(
            f"a layout must be a corosm.shards.Layout, e.g. Layout(4), not {wanted!r:.60}"
        )
    return wanted


def _check_new(directory: str, wanted: Layout, create: bool) -> None:
    """Refuse to make a manifest in ``directory`` when it holds something else already."""
    if holds_journal(directory):
        raise ShardLayoutMismatch(
            f"{directory} holds the journal of an unsharded host (corosm.open), not "
            f"shards: re-shard it into a new directory first (python -m corosm.shards "
            f"reshard --machine MOD:CLASS {directory} NEW --shards {wanted.shards})"
        )
    if (
        holds_shard_dirs(directory)
        and not _unfinished_creation(directory, wanted)
        # The shard of another process may have written the manifest, then its directory,
        # since the caller looked: then the directories are that store's.
        and not os.path.exists(os.path.join(directory, MANIFEST))
    ):
        raise ShardLayoutMismatch(
            f"{directory} holds shard directories but no {MANIFEST}: an unfinished "
            "re-shard? Re-shard again into a new directory"
        )
    if not create:
        raise ShardLayoutMismatch(
            f"{directory} has no {MANIFEST}: the store's manifest is not here, but the store "
            "exists (or create=False was given), and a shard never makes its store: starting "
            "it here would answer 'absent' for every key the store holds. Start the shard "
            "where the store's data is, or restore the directory from a backup (docs/scaling.md)"
        )


def _mismatch(directory: str, found: Layout, wanted: Layout) -> str:
    if found.hash != wanted.hash:
        return f"{directory} was sharded with hash {found.hash}, this router uses {wanted.hash}"
    return (
        f"{directory} holds {found.shards} shard(s), not {wanted.shards}: every key's shard "
        f"depends on that count. Open it with shards={found.shards}, or re-shard it into a "
        f"new directory: python -m corosm.shards reshard --machine MOD:CLASS {directory} "
        f"NEW_DIR --shards {wanted.shards}"
    )


def holds_journal(directory: str) -> bool:
    """Whether ``directory`` holds journal or snapshot files (of one host, or one shard).

    False when it is missing (or a file); an ``OSError`` when it cannot be
    listed (:func:`_entries`).
    """
    return any(n.startswith(("journal-", "snapshot-")) for n in _entries(directory))


def holds_shard_dirs(directory: str) -> bool:
    """Whether ``directory`` holds ``shard-*`` entries (as :func:`holds_journal` answers)."""
    return any(n.startswith("shard-") for n in _entries(directory))


def _entries(directory: str) -> list[str]:
    """The names in ``directory``: none when it is missing or a file.

    One that cannot be listed (no permission) may hold a journal or shards,
    so it is not taken for empty: the ``OSError`` (same errno, naming it)
    says that it cannot be read and what to do.
    """
    try:
        return os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        if isinstance(exc, PermissionError):
            todo = "give the user corosm runs read and search access to it, and try again"
        else:
            todo = "fix what keeps it from being listed, and try again"
        what = (
            f"{exc.strerror} (cannot list the directory, so whether it holds a journal or "
            f"shards is unknown: {todo})"
        )
        raise OSError(exc.errno, what, directory) from exc


def _unfinished_creation(directory: str, wanted: Layout) -> bool:
    """Whether the shard directories hold a marker of ``wanted`` and nothing else.

    That is what :func:`check_store` leaves when it stops before the
    manifest: no shard has run, so there is nothing to lose by finishing.
    """
    names = {f"shard-{i:04d}": i for i in range(wanted.shards)}
    for name in _entries(directory):
        if not name.startswith("shard-"):
            continue
        path = os.path.join(directory, name)
        if name not in names or not os.path.isdir(path):
            return False
        if [n for n in _entries(path) if not n.endswith(".tmp")] != [MARKER]:
            return False
        if _read(os.path.join(path, MARKER), marker=True) != (wanted, names[name]):
            return False
    return True


_EXPECTED = {
    "shards": "the shard count, a positive int",
    "hash": f'the hash\'s name, e.g. "{HASH_NAME}"',
    "index": "the shard's index, an int from 0",
}


def _read(path: str, *, marker: bool = False) -> tuple[Layout | None, int | None]:
    """The layout (and shard index, for a marker) in the JSON file ``path``."""
    what = f"shard {'marker' if marker else 'manifest'}"
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_SIZE + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None, None
    except OSError as exc:
        raise ShardLayoutMismatch(f"{path}: unreadable {what}: {exc}") from exc
    if len(raw) > _MAX_SIZE:
        raise ShardLayoutMismatch(f"{path}: over {_MAX_SIZE} bytes: not a {what}")
    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ShardLayoutMismatch(f"{path}: unreadable {what}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ShardLayoutMismatch(
            f'{path} is not a corosm {what} (expected a JSON object with "format": "{FORMAT}")'
        )
    version = data.get("version")
    if type(version) is int and version > VERSION:
        raise ShardLayoutMismatch(
            f"{path} was written by a newer corosm (format version {version}; this one reads "
            f"version {VERSION}): upgrade corosm to open it"
        )
    if type(version) is not int or version != VERSION:
        raise ShardLayoutMismatch(
            f'{path}: unknown {what} version {version!r} (expected "version": {VERSION})'
        )
    for name in ("shards", "hash", "index") if marker else ("shards", "hash"):
        if name not in data:
            raise ShardLayoutMismatch(
                f'{path}: the field "{name}" is missing (expected {_EXPECTED[name]})'
            )
    try:
        layout = Layout(data["shards"], data["hash"])
    except UsageError as exc:
        raise ShardLayoutMismatch(f"{path}: bad {what}: {exc}") from None
    index = data.get("index") if marker else None
    if marker and (type(index) is not int or not 0 <= index < layout.shards):
        raise ShardLayoutMismatch(
            f'{path}: bad shard marker: "index" must be an int from 0 to {layout.shards - 1}, '
            f"not {index!r:.60}"
        )
    return layout, index


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object's fields, refusing a field given twice (json keeps the last silently)."""
    fields: dict[str, object] = {}
    for name, value in pairs:
        if name in fields:
            raise ValueError(f'the field "{name}" appears twice: which one is meant? Keep one')
        fields[name] = value
    return fields


def _write(directory: str, name: str, fields: dict[str, object]) -> None:
    """Create ``name`` atomically and durably, unless it exists (then leave it be).

    Temp file, fsync, hard link to the real name (which, unlike a rename, fails
    when another process made the file first: the caller then reads theirs),
    fsync of the directory.
    """
    make_directory(directory)
    body = json.dumps({"format": FORMAT, "version": VERSION, **fields}, sort_keys=True)
    temp = os.path.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
    with open(temp, "w", encoding="utf-8") as f:
        f.write(body + "\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        with contextlib.suppress(FileExistsError):
            os.link(temp, os.path.join(directory, name))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temp)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
