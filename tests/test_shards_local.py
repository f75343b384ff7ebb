"""Sharded machines without Ray: the shards in this process, and transports that misbehave.

The Ray transport runs the very same ``ShardHost`` and ``ShardedClient``; here
they are driven on one loop, so batching, ordering, recovery, failures and
re-sharding are checked quickly and exactly. ``test_shards_ray.py`` then
checks what only real processes can show.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import corosm
from corosm.apps.kv.inputs import Exists, IncrBy, Read, Reset, Write
from corosm.apps.kv.machine import KVMachine
from corosm.apps.kv.outputs import OK, Count, IntValue, Value
from corosm.errors import Overloaded, Stopped
from corosm.runtime.durable import DurableOptions
from corosm.shards import (
    CrossShardInput,
    Limits,
    OutcomeUnknown,
    ShardedClient,
    ShardFailed,
    ShardLayoutMismatch,
    ShardUnavailable,
    UnkeyedInput,
    open_local,
    reshard,
    shard_dir,
    shard_of,
    start_local,
)
from corosm.shards.host import BatchHeader, BatchReply, Hello, ShardHost, ShardSpec
from corosm.shards.local import LocalTransport
from corosm.shards.manifest import Layout
from corosm.shards.reshard import main as reshard_main
from shards_helpers import corrupt_first_record, keys_on

WAIT = 10.0  # seconds: the bound on every wait in this file


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


# -- end to end, in process ------------------------------------------------------------


def test_writes_spread_over_shards_and_survive_a_restart(tmp_path: Path) -> None:
    async def write() -> dict[str, float]:
        async with open_local(KVMachine(), tmp_path, shards=3) as kv:
            outs = await asyncio.gather(
                *(kv.submit(Write(f"k{i}".encode(), str(i).encode())) for i in range(300))
            )
            assert outs == [OK] * 300
            assert await kv.submit(IncrBy(b"n", 5)) == IntValue(5)
            return kv.stats()

    stats = run(write())
    assert stats["inputs_sent"] == 301 and stats["shards_ready"] == 3
    assert 1 <= stats["batches_sent"] < 301  # batched: far fewer calls than inputs
    for index in range(3):
        assert list(Path(shard_dir(tmp_path, index)).glob("journal-*.log"))

    async def read() -> None:
        async with open_local(KVMachine(), tmp_path, shards=3) as kv:
            for i in range(300):
                assert await kv.submit(Read(f"k{i}".encode())) == Value(str(i).encode())
            assert await kv.submit(IncrBy(b"n", 1)) == IntValue(6)

    run(read())


def test_each_key_is_only_in_its_own_shards_journal(tmp_path: Path) -> None:
    async def write() -> None:
        async with open_local(KVMachine(), tmp_path, shards=2) as kv:
            await asyncio.gather(*(kv.submit(Write(f"k{i}".encode(), b"v")) for i in range(50)))

    run(write())
    for index in range(2):
        with corosm.open_blocking(KVMachine(), shard_dir(tmp_path, index)) as host:
            keys = host.runtime.host.stepper.state.data.keys()
            assert keys and all(shard_of(k, 2) == index for k in keys)


def test_reopening_with_another_shard_count_is_refused(tmp_path: Path) -> None:
    async def go(shards: int) -> None:
        async with open_local(KVMachine(), tmp_path, shards=shards) as kv:
            await kv.submit(Write(b"x", b"1"))

    run(go(2))
    with pytest.raises(ShardLayoutMismatch, match=r"holds 2 shard.*not 3.*shards=2"):
        run(go(3))


def test_inputs_that_need_several_shards_are_refused_at_once(tmp_path: Path) -> None:
    a, b = keys_on(0, 2, 1)[0], keys_on(1, 2, 1)[0]

    async def go() -> None:
        async with open_local(KVMachine(), tmp_path, shards=2) as kv:
            with pytest.raises(CrossShardInput, match=r"on 2 shards"):
                kv.submit_nowait(Exists((a, b)))
            with pytest.raises(UnkeyedInput, match=r"every shard"):
                await kv.submit(Reset())
            assert await kv.submit(Exists((a, a))) == Count(0)
            assert kv.stats()["inputs_sent"] == 1

    run(go())


def test_the_runtime_interface_for_front_ends(tmp_path: Path) -> None:
    async def go() -> None:
        async with open_local(KVMachine(), tmp_path, shards=2) as kv:
            got: list[tuple[Any, BaseException | None]] = []
            done = asyncio.Event()

            def callback(output: Any, error: BaseException | None) -> None:
                got.append((output, error))
                done.set()

            kv.submit_callback(Write(b"x", b"1"), callback, now=True)
            await asyncio.wait_for(done.wait(), WAIT)
            assert got == [(OK, None)]
            assert isinstance(kv.machine, KVMachine)
            assert kv.health() is None
            assert await kv.check_health() == {0: None, 1: None}
            stats = kv.stats()
            assert all(isinstance(v, int | float) for v in stats.values())
            assert {"shards", "mean_batch", "shard0_batches", "shard1_ready"} <= set(stats)
        with pytest.raises(Stopped):
            kv.submit_callback(Write(b"x", b"1"), callback)

    run(go())


def test_a_corrupt_shard_fails_the_start_and_names_itself(tmp_path: Path) -> None:
    async def write() -> None:
        async with open_local(KVMachine(), tmp_path, shards=2) as kv:
            for key in keys_on(1, 2, 20):
                await kv.submit(Write(key, b"v" * 50))

    run(write())
    corrupt_first_record(shard_dir(tmp_path, 1))
    with pytest.raises(ShardFailed, match=r"shard 1: cannot start: .*corrupt record") as err:
        run(start_local(KVMachine(), tmp_path, shards=2))
    assert err.value.shard == 1


# -- batching and order, with transports that misbehave on purpose ------------------------


class HeldTransport(LocalTransport):
    """Holds every call until the test lets it go, and lets the test pick the order."""

    def __init__(self, hosts: list[ShardHost[Any, Any, Any]]) -> None:
        super().__init__(hosts)
        self.calls: list[tuple[BatchHeader, list[Any], asyncio.Event]] = []
        self.arrived = asyncio.Event()
        self.hold = True

    async def run(self, shard: int, header: BatchHeader, inputs: list[Any]) -> BatchReply:
        gate = asyncio.Event()
        if not self.hold:
            gate.set()
        self.calls.append((header, inputs, gate))
        self.arrived.set()
        await gate.wait()
        return await super().run(shard, header, inputs)

    def release_all(self) -> None:
        """Let every call through, now and from now on."""
        self.hold = False
        for _, _, gate in self.calls:
            gate.set()

    async def wait_calls(self, n: int) -> None:
        async with asyncio.timeout(WAIT):
            while len(self.calls) < n:
                self.arrived.clear()
                await self.arrived.wait()


@contextlib.asynccontextmanager
async def client_over(
    tmp_path: Path, make: Callable[[list[ShardHost[Any, Any, Any]]], Any], limits: Limits
) -> AsyncIterator[tuple[ShardedClient[Any, Any], Any]]:
    spec = ShardSpec(KVMachine(), str(tmp_path), 0, Layout(1), DurableOptions(fsync="never"))
    transport = make([ShardHost.recover(spec)])
    client: ShardedClient[Any, Any] = ShardedClient(KVMachine(), transport, 1, limits)
    await client.connect()
    try:
        yield client, transport
    finally:
        if isinstance(transport, HeldTransport):
            transport.release_all()
        await client.close()


def test_batches_grow_with_what_queued_during_the_call_in_flight(tmp_path: Path) -> None:
    async def go() -> None:
        async with client_over(tmp_path, HeldTransport, Limits(window=1, max_batch=50)) as (
            kv,
            t,
        ):
            first = kv.submit_nowait(Write(b"a", b"0"))
            await t.wait_calls(1)
            rest = [kv.submit_nowait(Write(b"a", str(i).encode())) for i in range(1, 121)]
            assert [len(inputs) for _, inputs, _ in t.calls] == [1]  # window full: they queue
            t.calls[0][2].set()
            await asyncio.wait_for(first, WAIT)
            for n in (2, 3, 4):
                await t.wait_calls(n)
                t.calls[-1][2].set()
            await asyncio.wait_for(asyncio.gather(*rest), WAIT)
            assert [len(inputs) for _, inputs, _ in t.calls] == [1, 50, 50, 20]
            t.release_all()
            assert await kv.submit(Read(b"a")) == Value(b"120")
            assert sorted(kv.batch_sizes().items()) == [(1, 2), (20, 1), (50, 2)]

    run(go())


def test_batches_that_arrive_out_of_order_run_in_order(tmp_path: Path) -> None:
    async def go() -> None:
        async with client_over(tmp_path, HeldTransport, Limits(window=3, max_batch=1)) as (
            kv,
            t,
        ):
            futures = [kv.submit_nowait(Write(b"x", str(i).encode())) for i in range(3)]
            read = kv.submit_nowait(Read(b"x"))
            await t.wait_calls(3)
            assert [h.seq for h, _, _ in t.calls] == [0, 1, 2]
            for _, _, gate in reversed(t.calls):  # delivered last to first
                gate.set()
            assert await asyncio.wait_for(asyncio.gather(*futures), WAIT) == [OK] * 3
            t.release_all()
            assert await asyncio.wait_for(read, WAIT) == Value(b"2")  # sees all three

    run(go())


class FlakyTransport(LocalTransport):
    """Fails the calls (or hellos) the test asks it to, the way Ray would."""

    def __init__(self, hosts: list[ShardHost[Any, Any, Any]]) -> None:
        super().__init__(hosts)
        self.lose_next = 0
        self.refuse_next = 0
        self.hello_error: BaseException | None = None
        self.hellos = 0

    async def hello(self, shard: int) -> Hello:
        self.hellos += 1
        if self.hello_error is not None:
            raise self.hello_error
        return await super().hello(shard)

    async def run(self, shard: int, header: BatchHeader, inputs: list[Any]) -> BatchReply:
        if self.lose_next:
            self.lose_next -= 1
            await super().run(shard, header, inputs)  # it ran, but the answer is lost
            raise OutcomeUnknown(shard, "the actor died with the call in flight")
        if self.refuse_next:
            self.refuse_next -= 1
            return BatchReply([], {}, "sent to an incarnation that is gone: not run")
        return await super().run(shard, header, inputs)


def test_a_lost_call_fails_as_outcome_unknown_and_the_link_goes_on(tmp_path: Path) -> None:
    async def go() -> None:
        async with client_over(tmp_path, FlakyTransport, Limits(window=1)) as (kv, t):
            t.lose_next = 1
            with pytest.raises(OutcomeUnknown, match=r"shard 0: the actor died"):
                await kv.submit(Write(b"x", b"1"))
            assert await kv.submit(Read(b"x")) == Value(b"1")  # it had run
            assert t.hellos == 2  # said hello again, then a new session
            assert kv.links[0].session == 2 and kv.health() is None
            t.refuse_next = 1
            with pytest.raises(ShardUnavailable, match=r"not run"):
                await kv.submit(Write(b"y", b"1"))
            assert await kv.submit(Read(b"y")) == Value(None)
            assert kv.stats()["shard0_inputs_lost"] == 1

    run(go())


def test_a_shard_that_cannot_start_is_reported_not_retried(tmp_path: Path) -> None:
    async def go() -> None:
        async with client_over(tmp_path, FlakyTransport, Limits(window=1)) as (kv, t):
            t.lose_next = 1
            t.hello_error = ShardFailed(0, "cannot start: corrupt record at byte offset 96")
            with pytest.raises(OutcomeUnknown):
                await kv.submit(Write(b"x", b"1"))
            await asyncio.wait_for(kv.links[0].ready.wait(), WAIT)
            hellos = t.hellos
            for _ in range(3):
                with pytest.raises(ShardFailed, match=r"corrupt record at byte offset 96"):
                    await kv.submit(Write(b"x", b"1"))
            assert t.hellos == hellos  # not retried
            assert "shard 0 failed: cannot start: corrupt record" in (kv.health() or "")
            assert (await kv.check_health())[0] == kv.health()

    run(go())


def test_a_shard_that_does_not_answer_is_down_until_the_next_input(tmp_path: Path) -> None:
    async def go() -> None:
        async with client_over(tmp_path, FlakyTransport, Limits(window=1)) as (kv, t):
            t.lose_next = 1
            t.hello_error = ShardUnavailable(0, "restarting")
            lost = kv.submit_nowait(Write(b"q", b"1"))  # goes out, and is lost
            await asyncio.sleep(0)  # one pass of the loop: the link sends what was submitted
            queued = kv.submit_nowait(Write(b"x", b"1"))  # waits: the window is full
            with pytest.raises(OutcomeUnknown):
                await asyncio.wait_for(lost, WAIT)
            with pytest.raises(ShardUnavailable, match=r"shard 0: down \(restarting\); not sent"):
                await asyncio.wait_for(queued, WAIT)
            assert "shard 0 down" in (kv.health() or "")
            t.hello_error = None
            assert await kv.submit(Write(b"x", b"2")) == OK  # the next input reconnects
            assert kv.health() is None
            assert await kv.submit(Read(b"q")) == Value(b"1")

    run(go())


def test_a_full_queue_is_overloaded(tmp_path: Path) -> None:
    async def go() -> None:
        async with client_over(tmp_path, HeldTransport, Limits(window=1, max_queue=2)) as (kv, t):
            kv.submit_nowait(Write(b"x", b"0"))
            await t.wait_calls(1)
            kv.submit_nowait(Write(b"x", b"1"))
            kv.submit_nowait(Write(b"x", b"2"))
            with pytest.raises(Overloaded, match=r"shard 0: 2 inputs queued"):
                kv.submit_nowait(Write(b"x", b"3"))

    run(go())


# -- re-sharding --------------------------------------------------------------------------


def test_reshard_moves_every_key_to_its_new_shard(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"

    async def write() -> None:
        async with open_local(KVMachine(), old, shards=3, snapshot_every=100) as kv:
            await asyncio.gather(
                *(kv.submit(Write(f"k{i}".encode(), str(i).encode())) for i in range(1000))
            )

    run(write())
    report = reshard(KVMachine(), old, new, 5)
    assert (report.source_shards, report.target_shards, sum(report.items)) == (3, 5, 1000)
    assert min(report.items) > 150

    async def read() -> None:
        async with open_local(KVMachine(), new, shards=5) as kv:
            for i in range(1000):
                assert await kv.submit(Read(f"k{i}".encode())) == Value(str(i).encode())
            assert await kv.submit(Write(b"after", b"1")) == OK
        async with open_local(KVMachine(), new, shards=5) as kv:
            assert await kv.submit(Read(b"after")) == Value(b"1")

    run(read())
    with pytest.raises(ShardLayoutMismatch, match=r"holds 5"):
        run(start_local(KVMachine(), new, shards=3))


def test_reshard_from_an_unsharded_host_and_its_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = tmp_path / "plain"
    with corosm.open_blocking(KVMachine(), plain) as host:
        for i in range(100):
            host.submit(Write(f"k{i}".encode(), b"v"))
    with pytest.raises(ShardLayoutMismatch, match=r"unsharded host"):
        run(start_local(KVMachine(), plain, shards=2))
    machine = ["--machine", "corosm.apps.kv.machine:KVMachine"]
    argv = [*machine, str(plain), str(tmp_path / "s"), "--shards", "2"]
    assert reshard_main(argv) == 0
    assert "re-sharded 1 shard(s) into 2" in capsys.readouterr().out
    usage = subprocess.run(
        [sys.executable, "-m", "corosm.shards"], capture_output=True, text=True, check=False
    )
    assert usage.returncode == 2 and "python -m corosm.shards reshard --help" in usage.stderr
    assert reshard_main(argv) == 2  # the target is not empty now
    assert "is not empty" in capsys.readouterr().err
    keyless = ["--machine", "machines.ledger:Ledger"]
    assert reshard_main([*keyless, str(plain), str(tmp_path / "t"), "--shards", "2"]) == 2
    assert "cannot be re-sharded: it must define state_items()" in capsys.readouterr().err

    async def read() -> None:
        async with open_local(KVMachine(), tmp_path / "s", shards=2) as kv:
            assert await kv.submit(Read(b"k42")) == Value(b"v")

    run(read())
