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
re-shard it. The manifest is written first (temp file, fsync, rename, fsync
of the directory) and then never changes; re-sharding writes a new directory.

Each shard checks its own ``shard.json`` too, where it runs: on a cluster
every node has its own disk, and the shard's marker is the one file that
travels with its journal. A shard whose directory has a journal but no
marker, or another marker, is refused the same way. ``create=False``
refuses to make a missing shard: a shard restarted on a node that lacks its
data must not start empty and answer as if the store were new.

Plain files and JSON only; no Ray, no asyncio.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import dataclass

from corosm.shards.errors import ShardLayoutMismatch
from corosm.shards.routing import HASH_NAME

MANIFEST = "shards.json"
MARKER = "shard.json"
FORMAT = "corosm-shards"
VERSION = 1


@dataclass(frozen=True, slots=True)
class Layout:
    """How keys map to shards: the shard count and the hash's name."""

    shards: int
    hash: str = HASH_NAME

    def describe(self) -> str:
        return f"{self.shards} shard(s), hash {self.hash}"


def shard_dir(data_dir: str | os.PathLike[str], index: int) -> str:
    """The data directory of shard ``index`` under ``data_dir``."""
    return os.path.join(os.fspath(data_dir), f"shard-{index:04d}")


def read_layout(data_dir: str | os.PathLike[str]) -> Layout | None:
    """The layout in ``data_dir``'s manifest, or None when it has none."""
    return _read(os.path.join(os.fspath(data_dir), MANIFEST))[0]


def check_layout(
    data_dir: str | os.PathLike[str], wanted: Layout, *, create: bool = True
) -> Layout:
    """Make sure ``data_dir`` holds ``wanted`` (writing the manifest if it is new)."""
    directory = os.fspath(data_dir)
    path = os.path.join(directory, MANIFEST)
    found, _ = _read(path)
    if found is None:
        if _looks_unsharded(directory):
            raise ShardLayoutMismatch(
                f"{directory} holds the journal of an unsharded host (corosm.open), not "
                f"shards: re-shard it into a new directory first (python -m corosm.shards "
                f"reshard --machine MOD:CLASS {directory} NEW --shards {wanted.shards})"
            )
        if _has_shard_dirs(directory):
            raise ShardLayoutMismatch(
                f"{directory} holds shard directories but no {MANIFEST}: an unfinished "
                "re-shard? Re-shard again into a new directory"
            )
        if not create:
            raise ShardLayoutMismatch(f"{directory} has no {MANIFEST}: it is not sharded data")
        _write(directory, MANIFEST, {"shards": wanted.shards, "hash": wanted.hash})
        found, _ = _read(path)  # another process may have written it first: trust the file
        assert found is not None
    if found != wanted:
        raise ShardLayoutMismatch(_mismatch(directory, found, wanted))
    return found


def check_shard(
    data_dir: str | os.PathLike[str], index: int, layout: Layout, *, create: bool = True
) -> str:
    """Check (or make) shard ``index``'s directory and marker; return the directory."""
    directory = shard_dir(data_dir, index)
    found, marked = _read(os.path.join(directory, MARKER))
    if found is None:
        if os.path.isdir(directory) and os.listdir(directory):
            raise ShardLayoutMismatch(f"{directory} holds files but no {MARKER}: not a shard")
        if not create:
            raise ShardLayoutMismatch(
                f"shard {index}'s data is not here ({directory} is missing on this node) and "
                "creating it was not allowed: start the shard where its journal is"
            )
        os.makedirs(directory, exist_ok=True)
        _write(directory, MARKER, {"shards": layout.shards, "hash": layout.hash, "index": index})
        found, marked = _read(os.path.join(directory, MARKER))
    if found != layout or marked != index:
        raise ShardLayoutMismatch(
            f"{directory} is marked as shard {marked} of {found.describe() if found else '?'}, "
            f"but was opened as shard {index} of {layout.describe()}"
        )
    return directory


def write_layout(data_dir: str | os.PathLike[str], layout: Layout) -> None:
    """Write the manifest of a new layout (used by re-sharding, as its last step)."""
    _write(os.fspath(data_dir), MANIFEST, {"shards": layout.shards, "hash": layout.hash})


def _mismatch(directory: str, found: Layout, wanted: Layout) -> str:
    if found.hash != wanted.hash:
        return f"{directory} was sharded with hash {found.hash}, this router uses {wanted.hash}"
    return (
        f"{directory} holds {found.shards} shard(s), not {wanted.shards}: every key's shard "
        f"depends on that count. Open it with shards={found.shards}, or re-shard it into a "
        f"new directory: python -m corosm.shards reshard --machine MOD:CLASS {directory} "
        f"NEW_DIR --shards {wanted.shards}"
    )


def _looks_unsharded(directory: str) -> bool:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return False
    return any(n.startswith(("journal-", "snapshot-")) for n in names)


def _has_shard_dirs(directory: str) -> bool:
    try:
        return any(n.startswith("shard-") for n in os.listdir(directory))
    except FileNotFoundError:
        return False


def _read(path: str) -> tuple[Layout | None, int | None]:
    """The layout (and shard index, for a marker) in the JSON file ``path``."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        raise ShardLayoutMismatch(f"{path}: unreadable shard manifest: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ShardLayoutMismatch(f"{path} is not a corosm shard manifest")
    if data.get("version") != VERSION:
        raise ShardLayoutMismatch(f"{path}: manifest version {data.get('version')!r} unknown")
    shards, hash_name, index = data.get("shards"), data.get("hash"), data.get("index")
    if type(shards) is not int or shards < 1 or type(hash_name) is not str:
        raise ShardLayoutMismatch(f"{path}: bad manifest {data!r:.200}")
    if index is not None and (type(index) is not int or not 0 <= index < shards):
        raise ShardLayoutMismatch(f"{path}: bad shard index {index!r}")
    return Layout(shards, hash_name), index


def _write(directory: str, name: str, fields: dict[str, object]) -> None:
    """Create ``name`` atomically and durably, unless it exists (then leave it be).

    Temp file, fsync, hard link to the real name (which, unlike a rename, fails
    when another process made the file first: the caller then reads theirs),
    fsync of the directory.
    """
    os.makedirs(directory, exist_ok=True)
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
