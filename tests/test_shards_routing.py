"""Routing and layout of sharded machines: pure functions and small files, no Ray.

The stable hash is pinned by known values: a change to it would send every
key of an existing store to the wrong journal, so it must fail here first.
"""

from __future__ import annotations

import enum
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from corosm.apps.kv.inputs import (
    Delete,
    DeleteMany,
    Exists,
    IncrBy,
    Read,
    ReadMany,
    Reset,
    Size,
    Write,
    WriteMany,
)
from corosm.apps.kv.machine import KVMachine
from corosm.core.machine import Keys
from corosm.errors import DataError, UsageError
from corosm.shards import (
    CrossShardInput,
    Layout,
    Router,
    ShardLayoutMismatch,
    UnkeyedInput,
    UnshardableKey,
    check_layout,
    encode_key,
    read_layout,
    shard_dir,
    shard_of,
    stable_hash,
)
from corosm.shards.errors import OutcomeUnknown, ShardFailed
from corosm.shards.manifest import check_shard
from machines.ledger import Ledger

# -- the hash ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "encoded", "hashed", "of8"),
    [
        (b"x", "620000000178", 0xBEB089AA6E878B32, 2),
        ("x", "730000000178", 0xDB3F222BAD7F3E6B, 3),
        (0, "690000000100", 0xFAAC0A7035B8A1AC, 4),
        (-1, "6900000001ff", 0x0ED2B5415D0ABA8D, 5),
        (255, "690000000200ff", 0x5024EB0C57CC5559, 1),
        (("user", 42), "740000000273000000047573657269000000012a", 0xC430D73C9E4B3B34, 4),
    ],
)
def test_the_stable_hash_is_pinned(key: object, encoded: str, hashed: int, of8: int) -> None:
    assert encode_key(key).hex() == encoded  # type: ignore[arg-type]
    assert stable_hash(key) == hashed  # type: ignore[arg-type]
    assert shard_of(key, 8) == of8  # type: ignore[arg-type]


def test_the_hash_is_the_same_in_another_process() -> None:
    # str and bytes hashes are salted per process in Python; ours must not be.
    code = "from corosm.shards import stable_hash; print(stable_hash(('k', b'v', 7)))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert int(out.stdout) == stable_hash(("k", b"v", 7))


class Color(enum.IntEnum):
    RED = 1


class Name(enum.StrEnum):
    ALICE = "alice"


def test_keys_equal_in_python_hash_alike() -> None:
    assert stable_hash(True) == stable_hash(1)
    assert stable_hash(False) == stable_hash(0)
    assert stable_hash(Color.RED) == stable_hash(1)
    assert stable_hash(Name.ALICE) == stable_hash("alice")
    assert stable_hash((1, "a")) == stable_hash((True, "a"))


def test_different_keys_encode_differently() -> None:
    keys = [b"", "", 0, (), (b"",), ("",), b"a", "a", ("a",), ("a", "b"), ("ab",), (("a",),)]
    keys += [2**63, -(2**63), 2**64, 127, 128, -128, -129]
    assert len({encode_key(k) for k in keys}) == len(keys)


@pytest.mark.parametrize("key", [1.5, None, frozenset({1}), object(), (1, 2.0)])
def test_a_key_of_another_type_is_refused(key: object) -> None:
    with pytest.raises(UnshardableKey, match=r"bytes, str, int or a tuple"):
        encode_key(key)  # type: ignore[arg-type]


def test_keys_spread_evenly() -> None:
    counts = Counter(shard_of(f"key-{i}".encode(), 8) for i in range(80_000))
    assert sorted(counts) == list(range(8))
    assert max(counts.values()) < 1.05 * 10_000


# -- the router -------------------------------------------------------------------------


def test_router_sends_an_input_to_the_shard_of_its_key() -> None:
    router: Router[object] = Router(KVMachine(), 8)
    assert router.shard_for(Write(b"x", b"1")) == shard_of(b"x", 8) == 2
    assert router.shard_for(Read(b"x")) == 2
    assert router.shard_for(IncrBy(b"x", 1)) == 2
    assert router.shard_for(Delete(b"x")) == 2


def test_router_takes_several_keys_on_one_shard() -> None:
    router: Router[object] = Router(KVMachine(), 4)
    same = [k for k in (f"k{i}".encode() for i in range(100)) if shard_of(k, 4) == 0][:3]
    assert router.shard_for(ReadMany(tuple(same))) == 0
    assert router.shard_for(WriteMany(tuple((k, b"v") for k in same))) == 0
    assert router.shard_for(DeleteMany((same[0], same[0]))) == 0


def test_router_refuses_keys_on_two_shards_and_says_which() -> None:
    router: Router[object] = Router(KVMachine(), 4)
    a = next(k for k in (f"k{i}".encode() for i in range(100)) if shard_of(k, 4) == 0)
    b = next(k for k in (f"k{i}".encode() for i in range(100)) if shard_of(k, 4) == 3)
    with pytest.raises(CrossShardInput, match=r"on 2 shards \(shard 0: .*; shard 3: ") as err:
        router.shard_for(Exists((a, b)))
    assert err.value.shards == {0: [a], 3: [b]}
    assert isinstance(err.value, UsageError)
    assert Router(KVMachine(), 1).shard_for(Exists((a, b))) == 0  # one shard: all together


@pytest.mark.parametrize("input", [Reset(), Size(), ReadMany(())])
def test_router_refuses_an_input_without_a_key(input: object) -> None:
    with pytest.raises(UnkeyedInput, match=r"would need every shard of 4"):
        Router(KVMachine(), 4).shard_for(input)


def test_router_needs_a_key_function_and_a_shard_count() -> None:
    with pytest.raises(UsageError, match=r"Ledger defines no key"):
        Router(Ledger(), 4)
    with pytest.raises(UsageError, match=r"positive int"):
        Router(KVMachine(), 0)


def test_the_core_multi_key_form_is_honoured(fn_machine: type) -> None:
    async def handler(ctx: object, input: object) -> None:
        return None

    machine = fn_machine(handler, key=lambda keys: Keys(*keys))
    router: Router[object] = Router(machine, 8)
    assert router.shard_for(("a",)) == shard_of("a", 8)
    assert router.shard_for(("a", "a", None)) == shard_of("a", 8)  # Keys drops None, dedups
    tuple_machine = fn_machine(handler, key=lambda k: k)  # a tuple is ONE key to the core
    assert Router(tuple_machine, 8).shard_for(("a", "b")) == shard_of(("a", "b"), 8)


def test_errors_survive_pickling() -> None:
    import pickle

    cross = CrossShardInput("input", {0: ["a"], 1: ["b"]})
    again = pickle.loads(pickle.dumps(cross))
    assert str(again) == str(cross) and again.shards == cross.shards
    lost = pickle.loads(pickle.dumps(OutcomeUnknown(3, "lost")))
    assert (type(lost), str(lost), lost.shard, lost.detail) == (
        OutcomeUnknown, "shard 3: lost", 3, "lost",
    )  # fmt: skip
    assert pickle.loads(pickle.dumps(ShardFailed(1, "x"))).shard == 1


# -- the manifest ------------------------------------------------------------------------


def test_manifest_is_written_once_and_checked(tmp_path: Path) -> None:
    assert read_layout(tmp_path) is None
    assert check_layout(tmp_path, Layout(4)) == Layout(4)
    body = json.loads((tmp_path / "shards.json").read_text())
    assert body == {
        "format": "corosm-shards",
        "version": 1,
        "shards": 4,
        "hash": "blake2b-64/corosm-key-v1",
    }
    assert check_layout(tmp_path, Layout(4)) == Layout(4)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_another_shard_count_is_refused_with_the_way_out(tmp_path: Path) -> None:
    check_layout(tmp_path, Layout(4))
    with pytest.raises(ShardLayoutMismatch, match=r"holds 4 shard.*not 8") as err:
        check_layout(tmp_path, Layout(8))
    assert "shards=4" in str(err.value) and "python -m corosm.shards reshard" in str(err.value)
    assert isinstance(err.value, DataError)
    with pytest.raises(ShardLayoutMismatch, match=r"hash blake2b-64"):
        check_layout(tmp_path, Layout(4, "crc32"))


def test_a_shard_checks_its_own_marker(tmp_path: Path) -> None:
    layout = Layout(2)
    directory = check_shard(tmp_path, 1, layout)
    assert directory == shard_dir(tmp_path, 1) and directory.endswith("shard-0001")
    assert check_shard(tmp_path, 1, layout) == directory
    with pytest.raises(ShardLayoutMismatch, match=r"shard 1 of 2.*opened as shard 1 of 3"):
        check_shard(tmp_path, 1, Layout(3))
    (Path(shard_dir(tmp_path, 0)) / "junk").parent.mkdir()
    (Path(shard_dir(tmp_path, 0)) / "journal-1.log").write_bytes(b"x")
    with pytest.raises(ShardLayoutMismatch, match=r"holds files but no shard.json"):
        check_shard(tmp_path, 0, layout)


def test_a_missing_shard_is_not_made_when_creating_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ShardLayoutMismatch, match=r"shard 3's data is not here"):
        check_shard(tmp_path, 3, Layout(4), create=False)
    with pytest.raises(ShardLayoutMismatch, match=r"no shards.json"):
        check_layout(tmp_path, Layout(4), create=False)


def test_unsharded_or_half_written_directories_are_refused(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "journal-00000000000000000001.log").write_bytes(b"")
    with pytest.raises(ShardLayoutMismatch, match=r"unsharded host.*re-shard"):
        check_layout(plain, Layout(2))
    half = tmp_path / "half"
    (half / "shard-0000").mkdir(parents=True)
    with pytest.raises(ShardLayoutMismatch, match=r"unfinished re-shard"):
        check_layout(half, Layout(2))


@pytest.mark.parametrize(
    "body",
    ["{", '{"format": "other"}', '{"format": "corosm-shards", "version": 9}',
     '{"format": "corosm-shards", "version": 1, "shards": 0, "hash": "h"}'],
)  # fmt: skip
def test_a_damaged_manifest_is_reported(tmp_path: Path, body: str) -> None:
    (tmp_path / "shards.json").write_text(body)
    with pytest.raises(ShardLayoutMismatch, match=r"shards.json"):
        check_layout(tmp_path, Layout(2))


def test_importing_the_ray_module_without_ray_names_the_install_command() -> None:
    code = "import sys; sys.modules['ray'] = None; import corosm.shards.ray"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert "ImportError: corosm.shards.ray needs Ray" in done.stderr
    assert "pip install 'corosm[ray]'" in done.stderr


def test_the_shards_package_itself_does_not_import_ray() -> None:
    code = "import sys, corosm.shards; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
