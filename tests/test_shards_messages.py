"""Two messages of a Ray shard store's checks, made to say what happened and what to do.

- A shard that may not make its store (``create=False``: the store was
  found, or Ray restarted the shard) on a node with no ``shards.json`` said
  "it is not sharded data", though the store exists elsewhere. Now it says
  that the store's manifest is not here, that a shard never makes its store,
  and what to do.
- A shard node's check that raised an ``OSError`` (a directory it cannot
  list) was reported as a ``ShardUnavailable`` ("could not answer ...;
  start again once the node answers"). Now it is that ``OSError`` (same
  class and errno), naming the node and its shards, with the check's own
  text, before any shard starts. The error crosses from the node's Ray task
  as a value (``_portable``): it keeps its class, errno and file name.

Run without Ray: the nodes' checks are stubbed as in test_shards_gaps.py.
"""

from __future__ import annotations

import asyncio
import errno
import pickle
from pathlib import Path
from typing import Any

import pytest

from conftest import require_module
from corosm.apps.kv.machine import KVMachine
from corosm.shards import Limits, ShardFailed, ShardLayoutMismatch, ShardUnavailable
from corosm.shards.host import ShardHost, ShardSpec
from corosm.shards.manifest import MANIFEST, Layout, check_layout, check_store
from test_data_dir_paths import snapshot_of
from test_journal_names import refuse_listing
from test_shards_gaps import without_ray


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.fixture
def sray() -> Any:
    """``corosm.shards.ray``, imported (Ray is not started)."""
    require_module("ray", pip="corosm[ray]")
    import corosm.shards.ray as sray

    return sray


def not_here(data: Path) -> str:
    """What a shard that may not make its store says where ``data`` has no manifest."""
    return (
        f"{data} has no {MANIFEST}: the store's manifest is not here, but the store exists (or "
        "create=False was given), and a shard never makes its store: starting it here would "
        "answer 'absent' for every key the store holds. Start the shard where the store's "
        "data is, or restore the directory from a backup (docs/scaling.md)"
    )


# -- 1. a missing manifest where the store must exist -----------------------------------------


@pytest.mark.parametrize("check", [check_layout, check_store], ids=lambda f: f.__name__)
def test_a_missing_manifest_says_the_store_is_not_here_and_what_to_do(
    tmp_path: Path, check: Any
) -> None:
    data = tmp_path / "kv"
    with pytest.raises(ShardLayoutMismatch) as info:
        check(data, Layout(2), create=False)
    assert str(info.value) == not_here(data)
    assert list(tmp_path.iterdir()) == []  # nothing made


def test_a_shard_told_not_to_create_says_so_on_a_node_without_the_store(tmp_path: Path) -> None:
    data = tmp_path / "kv"
    spec = ShardSpec(KVMachine(), str(data), 1, Layout(2), create=False)
    with pytest.raises(ShardLayoutMismatch) as info:
        ShardHost.recover(spec)  # what a shard runs on its node
    assert str(info.value) == not_here(data)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("create", "reconstructed"), [(False, False), (True, True)], ids=["reopened", "restarted"]
)
def test_a_ray_shard_on_a_node_without_the_store_says_the_store_is_elsewhere(
    sray: Any, tmp_path: Path, create: bool, reconstructed: bool
) -> None:
    data = tmp_path / "kv"
    before = snapshot_of(tmp_path)
    spec = ShardSpec(KVMachine(), str(data), 1, Layout(2), create=create)
    with pytest.raises(ShardFailed) as info:
        sray.open_shard(spec, reconstructed=reconstructed)
    assert str(info.value) == f"shard 1: cannot start: ShardLayoutMismatch: {not_here(data)}"
    assert snapshot_of(tmp_path) == before


# -- 2. a node's check that raised an OSError ------------------------------------------------


def a_check_that_cannot_list(sray: Any, data: Path, err: int) -> BaseException:
    """What a node's check task returns for ``data`` when it cannot list it (after pickling)."""
    data.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        refuse_listing(patch, data, err)
        answer = sray._check_here_or_error(str(data), Layout(2))
    assert isinstance(answer, BaseException), answer
    crossed: BaseException = pickle.loads(pickle.dumps(answer))  # as the task's value travels
    return crossed


@pytest.mark.parametrize(
    ("err", "kind"), [(errno.EACCES, PermissionError), (errno.EIO, OSError)], ids=["eacces", "eio"]
)
def test_portable_keeps_an_os_error_s_class_errno_and_text(
    sray: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int, kind: type[OSError]
) -> None:
    data = tmp_path / "kv"
    crossed = a_check_that_cannot_list(sray, data, err)
    assert type(crossed) is kind and isinstance(crossed, OSError)
    assert crossed.errno == err and crossed.filename == str(data)
    assert "cannot list the directory" in str(crossed)


@pytest.mark.parametrize(
    "case",
    [
        (errno.EACCES, PermissionError, "give the user corosm runs read and search access"),
        (errno.EIO, OSError, "fix what keeps it from being listed, and try again"),
    ],
    ids=["eacces", "eio"],
)
def test_start_raises_a_node_s_os_error_naming_it_before_any_shard_starts(
    sray: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: tuple[int, type, str]
) -> None:
    err, kind, todo = case
    data = tmp_path / "kv"
    crossed = a_check_that_cannot_list(sray, data, err)
    actors, nodes = without_ray(sray, monkeypatch, {"n1": False, "n2": crossed})
    with pytest.raises(OSError) as info:
        run(sray.start(KVMachine(), data, shards=4, nodes=["n1", "n2"], name="t"))
    raised = info.value
    assert type(raised) is kind and raised.errno == err and raised.filename == str(data)
    assert str(raised) == (
        f"[Errno {err}] Ray node n2, which would run shard(s) 1, 3, cannot check the data "
        f"directory (no shard was started): {crossed.strerror}: '{data}'"
    )
    assert "cannot list the directory" in str(raised) and todo in str(raised)
    assert raised.__cause__ is crossed
    assert [node for node, _, _ in nodes.asked] == ["n1", "n2"]
    assert actors.started == [] and list(data.iterdir()) == []


def test_an_os_error_without_an_errno_is_still_a_node_that_could_not_answer(
    sray: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ray's own errors may be OSErrors (a ConnectionError) with no errno: not the check's.
    lost = ConnectionError("the node's raylet is gone")
    actors, _ = without_ray(sray, monkeypatch, {"n1": lost, "n2": False})
    data = tmp_path / "kv"
    with pytest.raises(ShardUnavailable) as info:
        run(sray._node_holding(["n1", "n2"], str(data), Layout(2), 5.0))
    assert "could not answer (ConnectionError: the node's raylet is gone)" in str(info.value)
    assert actors.started == [] and not data.exists()


def test_a_node_past_the_bound_is_still_unavailable_not_an_os_error(
    sray: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # wait_for's TimeoutError is an OSError too, with no errno.
    without_ray(sray, monkeypatch, {"n1": None})
    limits = Limits(hello_timeout=0.05)
    with pytest.raises(ShardUnavailable, match=r"gave no answer within 0\.05 s"):
        run(sray.start(KVMachine(), tmp_path / "kv", shards=1, nodes=["n1"], limits=limits))
