"""Bad input to the sharding layer: a clear error naming what was wrong, and no data lost.

A damaged or hand-edited manifest, a shard directory that went missing,
arguments of the wrong type, a re-shard that fails half way, runs on a
directory in use or into one that is not empty: each gets an error of
corosm's hierarchy that names the file, the argument or the value and
what was expected, and nothing acknowledged is lost or overwritten.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import corosm
from corosm.apps.kv.inputs import Read, Write
from corosm.apps.kv.machine import KVMachine
from corosm.apps.kv.outputs import OK, Value
from corosm.errors import DataDirInUse, DataError, HandlerError, UsageError
from corosm.shards import (
    Layout,
    Limits,
    Router,
    ShardedClient,
    ShardLayoutMismatch,
    ShardSpec,
    ShardUnavailable,
    check_layout,
    open_local,
    read_layout,
    reshard,
    shard_dir,
    shard_of,
    start_local,
)
from corosm.shards.host import Hello
from corosm.shards.local import LocalTransport
from corosm.shards.manifest import check_shard
from corosm.shards.reshard import main as reshard_main

KV = "corosm.apps.kv.machine:KVMachine"
KEYS = [f"k{i}".encode() for i in range(60)]
MANIFEST_FIELDS = '"format": "corosm-shards", "version": 1'


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def write_store(data: Path, shards: int = 3) -> None:
    """A store of ``shards`` shards holding ``KEYS`` (each key's value is the key)."""

    async def go() -> None:
        async with open_local(KVMachine(), data, shards=shards, fsync="never") as kv:
            assert await asyncio.gather(*(kv.submit(Write(k, k)) for k in KEYS)) == [OK] * 60

    run(go())


def read_store(data: Path, shards: int = 3) -> list[bytes]:
    """The keys of ``KEYS`` that ``data`` holds, with their right value."""

    async def go() -> list[bytes]:
        async with open_local(KVMachine(), data, shards=shards, fsync="never") as kv:
            return [k for k in KEYS if await kv.submit(Read(k)) == Value(k)]

    result: list[bytes] = run(go())
    return result


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` and its bytes (LOCK files aside: they hold the last pid)."""
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != "LOCK"
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of 3 shards written once; tests copy it before damaging it."""
    data = tmp_path_factory.mktemp("store") / "data"
    write_store(data)
    return data


@pytest.fixture
def copy(store: Path, tmp_path: Path) -> Iterator[Path]:
    import shutil

    target = tmp_path / "data"
    shutil.copytree(store, target)
    yield target


# -- a damaged or hand-edited manifest ---------------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (f'{{{MANIFEST_FIELDS}, "hash": "h"}}', ['field "shards" is missing', "positive int"]),
        (f'{{{MANIFEST_FIELDS}, "shards": 3}}', ['field "hash" is missing']),
        (f'{{{MANIFEST_FIELDS}, "shards": "3", "hash": "h"}}', ["positive int", "'3' (str)"]),
        (f'{{{MANIFEST_FIELDS}, "shards": -3, "hash": "h"}}', ["positive int", "-3"]),
        (f'{{{MANIFEST_FIELDS}, "shards": 3, "hash": 7}}', ["hash name", "non-empty str", "7"]),
        (
            f'{{{MANIFEST_FIELDS}, "shards": 5, "shards": 3, "hash": "h"}}',
            ['"shards" appears twice'],
        ),
        (
            '{"format": "corosm-shards", "version": 2, "shards": 3, "hash": "h"}',
            ["newer corosm", "version 2", "upgrade corosm"],
        ),
        (
            '{"format": "corosm-shards", "version": "1", "shards": 3, "hash": "h"}',
            ["unknown shard manifest version '1'", '"version": 1'],
        ),
        ("[" * 5000, ["unreadable shard manifest"]),
        (" " * (70 << 10), ["not a shard manifest"]),
    ],
)
def test_a_damaged_manifest_is_named_with_the_field_and_nothing_starts(
    copy: Path, body: str, words: list[str]
) -> None:
    (copy / "shards.json").write_text(body)
    before = tree(copy)
    with pytest.raises(ShardLayoutMismatch) as err:
        run(start_local(KVMachine(), copy, shards=3))
    message = str(err.value)
    assert str(copy / "shards.json") in message
    for word in words:
        assert word in message
    assert tree(copy) == before  # nothing was opened, cut or created


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (f'{{{MANIFEST_FIELDS}, "shards": 3, "hash": "blake2b-64/corosm-key-v1"}}', ['"index"']),
        (
            f'{{{MANIFEST_FIELDS}, "shards": 3, "hash": "blake2b-64/corosm-key-v1", "index": "1"}}',
            ['"index" must be an int from 0 to 2', "'1'"],
        ),
        (
            f'{{{MANIFEST_FIELDS}, "shards": 3, "hash": "blake2b-64/corosm-key-v1", "index": 7}}',
            ['"index" must be an int from 0 to 2', "7"],
        ),
    ],
)
def test_a_damaged_shard_marker_is_named(copy: Path, body: str, words: list[str]) -> None:
    marker = Path(shard_dir(copy, 1)) / "shard.json"
    marker.write_text(body)
    with pytest.raises(ShardLayoutMismatch) as err:
        run(start_local(KVMachine(), copy, shards=3))
    assert str(marker) in str(err.value)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("how", ["removed", "emptied"])
def test_a_missing_shard_directory_is_refused_not_started_empty(copy: Path, how: str) -> None:
    directory = Path(shard_dir(copy, 1))
    for path in directory.iterdir():
        path.unlink()
    if how == "removed":
        directory.rmdir()
    with pytest.raises(ShardLayoutMismatch, match=r"shard 1's data is not here") as err:
        run(start_local(KVMachine(), copy, shards=3))
    assert "store exists" in str(err.value) and "backup" in str(err.value)
    assert directory.exists() == (how == "emptied")  # not made again
    assert not list(directory.parent.glob("shard-0001/*"))


def test_a_store_that_stopped_before_its_manifest_is_finished_on_the_next_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from corosm.shards import manifest
    from corosm.shards.manifest import check_store

    def crash(*args: object) -> None:
        raise OSError(5, "the disk went away")

    with monkeypatch.context() as patch:  # the manifest is the last thing written
        patch.setattr(manifest, "check_layout", crash)
        with pytest.raises(OSError, match="the disk went away"):
            check_store(tmp_path, Layout(2))
    assert sorted(os.listdir(tmp_path)) == ["shard-0000", "shard-0001"]
    assert check_store(tmp_path, Layout(2)) == Layout(2)  # nothing had run: finished
    assert read_layout(tmp_path) == Layout(2)


def test_a_concurrent_shard_writing_the_manifest_first_is_not_a_half_reshard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a node, a shard finds no manifest, then another shard writes it and its directory."""
    from corosm.shards import manifest

    check_layout(tmp_path, Layout(2))
    check_shard(tmp_path, 0, Layout(2))
    (Path(shard_dir(tmp_path, 0)) / "journal-00000000000000000001.log").write_bytes(b"")
    real = manifest._read
    late = iter([True])

    def read(path: str, *, marker: bool = False) -> Any:
        if not marker and next(late, False):
            return None, None  # looked before the other shard wrote it
        return real(path, marker=marker)

    monkeypatch.setattr(manifest, "_read", read)
    assert check_layout(tmp_path, Layout(2)) == Layout(2)


# -- arguments of the wrong type ---------------------------------------------------------


@pytest.mark.parametrize("shards", ["3", 0, -1, True, 2.0, None])
def test_a_bad_shard_count_is_a_usage_error_and_writes_nothing(tmp_path: Path, shards: Any) -> None:
    with pytest.raises(UsageError, match=r"shard count must be a positive int, not") as err:
        run(start_local(KVMachine(), tmp_path / "data", shards=shards))
    assert repr(shards) in str(err.value)
    assert not (tmp_path / "data").exists()
    for call in (lambda: shard_of(b"x", shards), lambda: Layout(shards)):
        with pytest.raises(UsageError, match=r"positive int"):
            call()


@pytest.mark.parametrize("data_dir", [None, 123, b"/tmp/x", ""])
def test_a_bad_data_dir_is_a_usage_error(data_dir: Any) -> None:
    with pytest.raises(UsageError, match=r"data_dir must be a directory path") as err:
        run(start_local(KVMachine(), data_dir, shards=2))
    assert repr(data_dir)[:20] in str(err.value)
    with pytest.raises(UsageError, match=r"data_dir must be a directory path"):
        read_layout(data_dir)


@pytest.mark.parametrize(
    ("arguments", "pattern"),
    [
        ({"machine": "kv"}, r"machine must be an instance of a corosm Machine.*'kv'"),
        ({"machine": KVMachine}, r"Machine subclass.*the class itself"),
        ({"fsink": "x"}, r"unknown option 'fsink'"),
        ({"limits": {"window": 1}}, r"limits must be a corosm.shards.Limits"),
        ({"create": "no"}, r"create must be True or False"),
    ],
)
def test_bad_arguments_of_start_local_fail_before_the_disk_is_touched(
    tmp_path: Path, arguments: dict[str, Any], pattern: str
) -> None:
    data = tmp_path / "data"
    machine = arguments.pop("machine", KVMachine())
    with pytest.raises(UsageError, match=pattern):
        run(start_local(machine, data, shards=2, **arguments))
    assert not data.exists()


def test_bad_arguments_of_the_layout_functions_are_usage_errors(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with pytest.raises(UsageError, match=r"a layout must be a corosm.shards.Layout.*4"):
        check_layout(data, 4)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"a shard index must be an int.*'1'"):
        shard_dir(data, "1")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"machine must be an instance"):
        Router("kv", 2)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"layout must be a Layout that has a shard 2"):
        ShardSpec(KVMachine(), str(data), 2, Layout(2))
    assert not data.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [("window", 0), ("max_batch", 0), ("max_queue", 0), ("window", 1.5), ("max_queue", True)],
)
def test_limits_that_would_leave_inputs_queued_for_ever_are_refused(
    field: str, value: object
) -> None:
    with pytest.raises(UsageError, match=rf"Limits.{field} must be an int of at least 1"):
        Limits(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["hello_timeout", "call_timeout"])
@pytest.mark.parametrize("value", [0, -1, "5", float("inf"), float("nan"), None])
def test_a_wait_must_be_bounded(field: str, value: object) -> None:
    with pytest.raises(UsageError, match=rf"Limits.{field} must be a finite number") as err:
        Limits(**{field: value})  # type: ignore[arg-type]
    assert repr(value) in str(err.value)


def test_the_client_checks_its_transport_and_its_timeouts(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"transport must have the methods"):
        ShardedClient(KVMachine(), object(), 2)  # type: ignore[arg-type]

    async def go() -> None:
        async with open_local(KVMachine(), tmp_path, shards=2) as kv:
            with pytest.raises(UsageError, match=r"timeout must be a finite number.*'x'"):
                await kv.check_health(timeout="x")  # type: ignore[arg-type]

    run(go())


def test_a_key_function_that_raises_fails_the_input_as_on_one_host(fn_machine: type) -> None:
    async def handler(ctx: object, input: object) -> None:
        return None

    machine = fn_machine(handler, key=lambda input: input["key"])
    router: Router[object] = Router(machine, 4)
    with pytest.raises(HandlerError, match=r"FnMachine.key\(\) raised TypeError: .*subscript"):
        router.shard_for(42)
    assert router.shard_for({"key": "a"}) == shard_of("a", 4)


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_a_store_path_that_is_or_lies_under_a_file_is_named_as_such(
    tmp_path: Path, where: str
) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("not a store")
    data = blocker if where == "file" else blocker / "store"
    with pytest.raises(DataError, match=r"data directory '.*notes.txt.*' is a file") as err:
        run(start_local(KVMachine(), data, shards=2))
    assert "unreadable" not in str(err.value)
    assert blocker.read_text() == "not a store"


class SilentTransport(LocalTransport):
    """A shard that never answers its hello (a node cut off)."""

    async def hello(self, shard: int) -> Hello:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def test_a_shard_that_never_answers_fails_its_inputs_within_the_bound(tmp_path: Path) -> None:
    async def go() -> None:
        limits = Limits(hello_timeout=0.2)
        client: ShardedClient[Any, Any] = ShardedClient(KVMachine(), SilentTransport([]), 1, limits)
        await asyncio.wait_for(client.connect(), 10)
        with pytest.raises(ShardUnavailable, match=r"shard 0: down \(no answer in 0.2 s\)"):
            await asyncio.wait_for(client.submit(Write(b"x", b"1")), 10)
        await client.close()

    run(go())


# -- re-sharding ---------------------------------------------------------------------------


def test_reshard_refuses_a_source_in_use_and_writes_nothing(
    copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "new"

    async def go() -> None:
        async with corosm.open(KVMachine(), shard_dir(copy, 1)) as host:
            assert await host.submit(Write(b"late", b"1")) == OK  # acknowledged meanwhile
            with pytest.raises(DataDirInUse, match=r"shard-0001.*in use"):
                reshard(KVMachine(), copy, target, 2)
            assert reshard_main(["--machine", KV, str(copy), str(target), "--shards", "2"]) == 1

    run(go())
    assert not target.exists()
    err = capsys.readouterr().err
    assert err.startswith("reshard: data directory") and "in use" in err
    assert err.count("\n") == 1


def test_a_reshard_that_fails_half_way_leaves_nothing_and_runs_again(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = sys.modules["corosm.shards.reshard"]  # the package re-exports the function
    real = module.write_snapshot
    calls: list[str] = []

    def failing(fs: Any, directory: str, lsn: int, payload: bytes) -> str:
        calls.append(directory)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(fs, directory, lsn, payload)

    before = tree(store)
    target = tmp_path / "new"
    with monkeypatch.context() as patch:
        patch.setattr(module, "write_snapshot", failing)
        with pytest.raises(OSError, match="No space left"):
            reshard(KVMachine(), store, target, 5)
    assert len(calls) == 3 and not target.exists()
    assert tree(store) == before  # the source is as it was
    report = reshard(KVMachine(), store, target, 5)  # the same command, again
    assert sum(report.items) == len(KEYS)
    assert read_store(target, 5) == KEYS


def test_an_interrupted_reshard_command_leaves_nothing(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = sys.modules["corosm.shards.reshard"]

    def interrupted(*args: object) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "write_snapshot", interrupted)
    target = tmp_path / "new"
    assert reshard_main(["--machine", KV, str(store), str(target), "--shards", "2"]) == 130
    assert capsys.readouterr().err == "reshard: interrupted; what it wrote is removed\n"
    assert not target.exists()


def test_a_killed_reshard_is_named_when_run_again(store: Path, tmp_path: Path) -> None:
    target = tmp_path / "new"
    reshard(KVMachine(), store, target, 2)
    (target / "shards.json").unlink()  # as if killed before its last step
    with pytest.raises(ShardLayoutMismatch, match=r"no shards.json: an unfinished re-shard"):
        run(start_local(KVMachine(), target, shards=2))
    with pytest.raises(UsageError, match=r"holds an unfinished re-shard.*delete it"):
        reshard(KVMachine(), store, target, 2)


def test_reshard_twice_and_to_the_same_count(store: Path, tmp_path: Path) -> None:
    same = tmp_path / "same"
    report = reshard(KVMachine(), store, same, 3)  # a compacted copy
    assert (report.source_shards, report.target_shards, sum(report.items)) == (3, 3, len(KEYS))
    assert read_store(same, 3) == KEYS
    with pytest.raises(UsageError, match=r"is not empty: it holds a sharded store"):
        reshard(KVMachine(), store, same, 3)
    assert read_store(same, 3) == KEYS


def test_reshard_refuses_a_source_that_is_not_a_whole_store(tmp_path: Path, store: Path) -> None:
    target = tmp_path / "new"
    with pytest.raises(UsageError, match=r"is one shard of a store.*other shards' keys"):
        reshard(KVMachine(), shard_dir(store, 0), target, 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"holds no corosm data.*nothing to re-shard"):
        reshard(KVMachine(), tmp_path / "empty", target, 2)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match=r"target .*file is not a directory"):
        reshard(KVMachine(), store, tmp_path / "file", 2)
    for shards in (0, -1, "2"):
        with pytest.raises(UsageError, match=r"shard count must be a positive int"):
            reshard(KVMachine(), store, target, shards)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"source must be a directory path"):
        reshard(KVMachine(), None, target, 2)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"machine must be an instance.*'kv'"):
        reshard("kv", store, target, 2)  # type: ignore[arg-type]
    assert not target.exists() and os.listdir(tmp_path / "empty") == []


@pytest.mark.parametrize(
    ("change", "answer"),
    [
        ({"--machine": "json:loads"}, (2, "--machine json:loads: loads() raised TypeError")),
        # The loader's advice names this command, not corosm serve.
        ({"--machine": "json:loads"}, (2, "(python -m corosm.shards reshard creates the machine")),
        ({"--machine": "nowhere:M"}, (2, "run python -m corosm.shards reshard from the folder")),
        ({"--shards": "0"}, (2, "shard count must be a positive int, not 0")),
        ({"target": "/proc/no/such"}, (1, "No such file or directory")),
    ],
)
def test_the_reshard_command_answers_in_one_line(
    store: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, str],
    answer: tuple[int, str],
) -> None:
    options = {"--machine": KV, "--shards": "2", "target": str(tmp_path / "new"), **change}
    argv = ["--machine", options["--machine"], str(store), options["target"]]
    assert reshard_main([*argv, "--shards", options["--shards"]]) == answer[0]
    err = capsys.readouterr().err
    assert err.startswith("reshard: ") and err.count("\n") == 1, err
    assert answer[1] in err
    assert not (tmp_path / "new").exists()


def test_the_reshard_command_refuses_a_shard_count_that_is_not_a_number(
    store: Path, tmp_path: Path
) -> None:
    argv = ["reshard", "--machine", KV, str(store), str(tmp_path / "new"), "--shards", "two"]
    done = subprocess.run(
        [sys.executable, "-m", "corosm.shards", *argv], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2 and "argument --shards: invalid int value: 'two'" in done.stderr


# -- Ray: arguments checked before Ray starts, and a reopened store never made again -------


def test_ray_start_checks_its_arguments_before_ray_starts(tmp_path: Path) -> None:
    from conftest import require_module

    require_module("ray", pip="corosm[ray]")
    code = f"""
import asyncio, ray
import corosm.shards.ray as shards_ray
from corosm.apps.kv.machine import KVMachine
from corosm.errors import UsageError
for kwargs in ({{"shards": 0}}, {{"shards": 2, "nodes": []}}, {{"shards": 2, "fsink": 1}},
               {{"shards": 2, "create": "no"}}, {{"shards": 2, "limits": 3}}):
    try:
        asyncio.run(shards_ray.start(KVMachine(), {str(tmp_path / "d")!r}, **kwargs))
    except UsageError as exc:
        print(type(exc).__name__, str(exc).split(",")[0][:40])
print("ray started:", ray.is_initialized())
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len([line for line in lines if line.startswith("UsageError")]) == 5, lines
    assert lines[-1] == "ray started: False"
    assert not (tmp_path / "d").exists()


def test_ray_start_reopens_an_existing_store_without_creating_shards(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import require_module

    require_module("ray", pip="corosm[ray]")
    import corosm.shards.ray as shards_ray

    specs: list[ShardSpec[Any, Any, Any]] = []

    class Stop(Exception):
        pass

    class Remote:
        def options(self, **options: Any) -> Remote:
            return self

        def remote(self, spec: ShardSpec[Any, Any, Any]) -> None:
            specs.append(spec)
            raise Stop

    holders: set[str] = set()  # the shard nodes whose own disk shows the store
    asked: list[str] = []

    async def check_node(node: str, directory: str, layout: Layout) -> bool:
        asked.append(node)
        return node in holders

    monkeypatch.setattr(shards_ray.ray, "is_initialized", lambda: True)
    monkeypatch.setattr(shards_ray, "RemoteShard", Remote())
    monkeypatch.setattr(shards_ray, "NodeAffinitySchedulingStrategy", lambda *a, **k: None)
    monkeypatch.setattr(shards_ray, "check_node", check_node, raising=False)
    new = store.parent / "new"
    for data, held, created, nodes_asked in (
        (store, set(), False, []),  # the manifest is here: no node is asked
        (new, set(), True, ["n1", "n2"]),  # nowhere: a new store, each node asked once
        (new, {"n2"}, False, ["n1", "n2"]),  # not here, but on a shard's node: reopened
    ):
        holders, asked[:] = held, []
        with pytest.raises(Stop):
            run(shards_ray.start(KVMachine(), data, shards=3, nodes=["n1", "n2"]))
        assert specs.pop().create is created
        assert asked == nodes_asked
    assert not new.exists()
