"""``corosm.shards.ray.start`` refuses a data directory no shard could use before Ray starts.

Without a manifest in the data directory, every shard would make the store
there, and each would refuse the same things: a file in the directory's
place or in the way of its parents, an unsharded host's journal, stray
``shard-*`` directories. Those were found only once Ray and every actor had
started, each failing in ``ShardHost.recover`` ("cannot start: ...").
:func:`corosm.shards.manifest.check_here` finds them where ``start`` runs,
creating nothing, with the rules the shards apply (``_check_new`` and the
journal lock's path rule): the same message, from one place each.

The ``start`` tests need Ray importable but never start it: ``ray.init`` is
replaced by one that raises :class:`RayInitReached`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import corosm
from conftest import require_module
from corosm.apps.kv.inputs import Write
from corosm.apps.kv.machine import KVMachine
from corosm.errors import DataError
from corosm.io.journal.lock import make_directory
from corosm.shards import ShardLayoutMismatch, open_local, shard_dir
from corosm.shards.manifest import MANIFEST, Layout, check_here, write_marker
from test_data_dir_paths import EXPECTED, NOT_A_DIRECTORY, snapshot_of

WAIT = 30.0  # seconds: the bound on each run of start (it fails, or stops at ray.init)


class RayInitReached(Exception):
    """Raised by the test's ``ray.init``: ``start`` got past its checks."""


def a_store(data: Path, shards: int) -> None:
    """A sharded store of ``shards`` shards in ``data``, with one write in it."""

    async def write() -> None:
        async with open_local(KVMachine(), data, shards=shards) as kv:
            await kv.submit(Write(b"x", b"1"))

    asyncio.run(write())


def unsharded_journal(tmp_path: Path) -> tuple[Path, str, type[DataError]]:
    data = tmp_path / "kv"
    with corosm.open_blocking(KVMachine(), data) as host:
        host.submit(Write(b"x", b"1"))
    return data, f"{data} holds the journal of an unsharded host", ShardLayoutMismatch


def stray_shard_dirs(tmp_path: Path) -> tuple[Path, str, type[DataError]]:
    data = tmp_path / "kv"
    with corosm.open_blocking(KVMachine(), shard_dir(data, 1)) as host:  # a re-shard cut short
        host.submit(Write(b"x", b"1"))
    return data, f"{data} holds shard directories but no {MANIFEST}", ShardLayoutMismatch


def a_file(tmp_path: Path) -> tuple[Path, str, type[DataError]]:
    data = tmp_path / "kv"
    data.write_text("someone's notes")
    return data, f"data directory {str(data)!r} is a file", DataError


def under_a_file(tmp_path: Path) -> tuple[Path, str, type[DataError]]:
    (tmp_path / "notes.txt").write_text("someone's notes")
    blocker = str(tmp_path / "notes.txt")
    return tmp_path / "notes.txt" / "kv", f"cannot be created: {blocker!r} is a file", DataError


def a_dangling_link(tmp_path: Path) -> tuple[Path, str, type[DataError]]:
    (tmp_path / "kv").symlink_to("unmounted-disk")
    return tmp_path / "kv", "is a symbolic link to 'unmounted-disk', which does not", DataError


def another_layout(tmp_path: Path) -> tuple[Path, str, type[DataError]]:
    a_store(tmp_path / "kv", 3)
    return tmp_path / "kv", f"{tmp_path / 'kv'} holds 3 shard(s), not 2", ShardLayoutMismatch


UNUSABLE: list[Callable[[Path], tuple[Path, str, type[DataError]]]] = [
    unsharded_journal,
    stray_shard_dirs,
    a_file,
    under_a_file,
    a_dangling_link,
]


def start(data: Path, monkeypatch: pytest.MonkeyPatch, shards: int = 2) -> None:
    """``corosm.shards.ray.start`` up to ``ray.init``, which raises RayInitReached."""
    require_module("ray", pip="corosm[ray]")
    import corosm.shards.ray as shards_ray

    def init(**options: Any) -> None:
        raise RayInitReached(options)

    monkeypatch.setattr(shards_ray.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(shards_ray.ray, "init", init)
    asyncio.run(asyncio.wait_for(shards_ray.start(KVMachine(), data, shards=shards), WAIT))


@pytest.mark.parametrize("make", UNUSABLE, ids=lambda make: make.__name__)
def test_start_refuses_a_directory_no_shard_could_use_before_ray_starts(
    make: Callable[[Path], tuple[Path, str, type[DataError]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data, words, kind = make(tmp_path)
    before = snapshot_of(tmp_path)
    with pytest.raises(kind) as info:
        start(data, monkeypatch)  # RayInitReached: the actors would have found it, each
    assert words in str(info.value)
    assert snapshot_of(tmp_path) == before  # nothing made, nothing changed


@pytest.mark.parametrize("make", [*UNUSABLE, another_layout], ids=lambda make: make.__name__)
def test_check_here_says_what_the_shards_would_and_makes_nothing(
    make: Callable[[Path], tuple[Path, str, type[DataError]]], tmp_path: Path
) -> None:
    data, words, kind = make(tmp_path)
    before = snapshot_of(tmp_path)
    with pytest.raises(kind) as info:
        check_here(data, Layout(2))
    assert words in str(info.value)
    assert snapshot_of(tmp_path) == before


@pytest.mark.parametrize("make", NOT_A_DIRECTORY, ids=lambda make: make.__name__)
def test_check_here_refuses_a_path_as_the_journal_would_with_its_words(
    make: Callable[[Path], tuple[Path, str]], tmp_path: Path
) -> None:
    path, what = make(tmp_path)
    before = snapshot_of(tmp_path)
    with pytest.raises(DataError) as checked:
        check_here(path, Layout(2))
    assert snapshot_of(tmp_path) == before
    message = str(checked.value)
    assert message.startswith(f"data directory {str(path)!r} "), message
    assert what in message and message.endswith(EXPECTED), message
    with pytest.raises(DataError) as made:
        make_directory(str(path))  # the one rule: what a shard's journal would say
    assert str(made.value) == message


def test_a_new_path_passes_and_is_not_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "new" / "kv"
    assert check_here(data, Layout(2)) is False
    with pytest.raises(RayInitReached):
        start(data, monkeypatch)
    assert list(tmp_path.iterdir()) == []  # the shards make it, on their nodes


def test_an_existing_store_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "kv"
    a_store(data, 2)
    before = snapshot_of(tmp_path)
    assert check_here(data, Layout(2)) is True
    os.rename(shard_dir(data, 1), tmp_path / "elsewhere")  # on its own node: not checked here
    assert check_here(data, Layout(2)) is True
    with pytest.raises(RayInitReached):
        start(data, monkeypatch)
    os.rename(tmp_path / "elsewhere", shard_dir(data, 1))
    assert snapshot_of(tmp_path) == before


def test_a_store_cut_short_while_first_made_passes(tmp_path: Path) -> None:
    data = tmp_path / "kv"
    write_marker(data, 0, Layout(2))  # markers first, manifest last: it stopped between
    assert check_here(data, Layout(2)) is False
    with pytest.raises(ShardLayoutMismatch, match=r"holds shard directories but no shards\.json"):
        check_here(data, Layout(3))  # not a creation of this layout: someone else's
