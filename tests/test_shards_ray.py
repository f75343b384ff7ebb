"""Shards on a local Ray: processes killed mid-write, a corrupt shard, order across calls.

One local Ray (2 CPUs, no dashboard) serves the whole module. Every wait is
bounded; progress is awaited on events the writers set, and only Ray's
restart is polled (by the client, which has nothing better to await).
Skipped with the install command when Ray is missing (failed instead under
``COROSM_REQUIRE_TOOLS``).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import require_module
from corosm.apps.kv.inputs import IncrBy, Read, Write
from corosm.apps.kv.machine import KVMachine
from corosm.apps.kv.outputs import OK, IntValue, Value
from corosm.shards import (
    Limits,
    OutcomeUnknown,
    ShardedClient,
    ShardFailed,
    ShardLayoutMismatch,
    ShardUnavailable,
    shard_dir,
    shard_of,
)
from corosm.shards.client import LinkState
from shards_helpers import corrupt_first_record, keys_on

WAIT = 60.0  # seconds: the bound on every wait (a restart takes about one)


@pytest.fixture(scope="module")
def sray() -> Iterator[Any]:
    """``corosm.shards.ray`` on a local Ray started once for this module."""
    ray = require_module("ray", pip="corosm[ray]")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="corosm-tests")
    import corosm.shards.ray as sray

    try:
        yield sray
    finally:
        ray.shutdown()


def opened(sray: Any, data: Path, shards: int, **options: Any) -> Any:
    """``corosm.shards.ray.open`` with actors of a fresh name, small enough for 2 CPUs."""
    name = f"t{uuid.uuid4().hex[:8]}"
    return sray.open(KVMachine(), data, shards=shards, name=name, num_cpus=0.25, **options)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 4 * WAIT))


class Writers:
    """Concurrent writers of distinct keys; what was acknowledged, and when, per shard.

    Writer ``w`` writes only keys of shard ``w % shards``: a writer waiting for
    a shard that is down does not hold up writes to the others.
    """

    def __init__(self, kv: ShardedClient[Any, Any], count: int) -> None:
        self.kv = kv
        self.acked: dict[bytes, bytes] = {}
        self.times: dict[int, list[float]] = {i: [] for i in range(kv.shards)}
        self.failed: Counter[str] = Counter()
        self.progress = asyncio.Event()
        self.stop = asyncio.Event()
        self.tasks = [asyncio.create_task(self._write(w)) for w in range(count)]

    async def _write(self, w: int) -> None:
        shards = self.kv.shards
        i = 0
        while not self.stop.is_set():
            key, value = f"w{w}-{i}".encode(), str(i).encode()
            i += 1
            if shard_of(key, shards) != w % shards:
                continue
            try:
                assert await self.kv.submit(Write(key, value)) == OK
            except (OutcomeUnknown, ShardUnavailable) as exc:
                self.failed[type(exc).__name__] += 1
                continue
            self.acked[key] = value
            self.times[shard_of(key, self.kv.shards)].append(time.monotonic())
            self.progress.set()

    async def until(self, what: str, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT):
            while not done():
                self.progress.clear()
                try:
                    await self.progress.wait()
                except TimeoutError:
                    raise AssertionError(f"timed out waiting for {what}") from None

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), WAIT)

    def acks_after(self, shard: int, moment: float) -> int:
        return sum(1 for t in self.times[shard] if t > moment)

    def longest_gap(self, shard: int, since: float) -> tuple[float, float]:
        """(start, end) of the longest pause between acks on ``shard`` after ``since``."""
        times = [since] + [t for t in self.times[shard] if t > since]
        pairs = list(itertools.pairwise(times))
        return max(pairs, key=lambda p: p[1] - p[0])


async def check_all_there(kv: ShardedClient[Any, Any], acked: dict[bytes, bytes]) -> None:
    keys = list(acked)
    got = await asyncio.wait_for(asyncio.gather(*(kv.submit(Read(k)) for k in keys)), WAIT)
    missing = [k for k, out in zip(keys, got, strict=True) if out != Value(acked[k])]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"


def kill_9(kv: ShardedClient[Any, Any], shard: int) -> None:
    hello = kv.links[shard].hello
    assert hello is not None
    os.kill(hello.pid, signal.SIGKILL)


def ray_kill(kv: ShardedClient[Any, Any], shard: int) -> None:
    import ray

    ray.kill(kv.transport.actors[shard], no_restart=False)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kill", "victim"), [(kill_9, 0), (ray_kill, 1)], ids=["sigkill", "ray.kill"]
)
def test_a_shard_killed_mid_writes_loses_no_acknowledged_write(
    sray: Any, tmp_path: Path, kill: Callable[[ShardedClient[Any, Any], int], None], victim: int
) -> None:
    other = 1 - victim

    async def go() -> dict[bytes, bytes]:
        async with opened(sray, tmp_path, 2) as kv:
            writers = Writers(kv, 16)
            await writers.until(
                "writes on both shards", lambda: min(map(len, writers.times.values())) >= 200
            )
            old_pid = kv.links[victim].hello.pid
            killed = time.monotonic()
            kill(kv, victim)
            await writers.until(
                "the killed shard to come back and take 200 writes",
                lambda: (
                    writers.acks_after(victim, killed) >= 200 and len(kv.links[victim].gaps) >= 2
                ),
            )
            await writers.finish()
            assert kv.links[victim].hello.pid != old_pid  # a new process: Ray restarted it
            start, end = writers.longest_gap(victim, killed)
            others = sum(1 for t in writers.times[other] if start < t < end)
            print(
                f"\n{kill.__name__} shard {victim}: no acks on it for {end - start:.2f} s "
                f"after the kill "
                f"(link down {kv.links[victim].gaps[-1]:.2f} s); shard {other} acked {others} "
                f"writes meanwhile; {len(writers.acked)} acked in all, failed: "
                f"{dict(writers.failed)}"
            )
            assert others > 0, "writes to the other shard stopped while one was down"
            assert writers.failed["OutcomeUnknown"] >= 1  # the calls in flight were lost
            await check_all_there(kv, writers.acked)
            return writers.acked

    acked = run(go())

    async def again() -> None:  # all shards new processes: recovered from their journals
        async with opened(sray, tmp_path, 2) as kv:
            await check_all_there(kv, acked)

    run(again())


def test_a_corrupt_shard_is_reported_and_not_retried(sray: Any, tmp_path: Path) -> None:
    good, bad = keys_on(0, 2, 20), keys_on(1, 2, 20)

    async def write() -> None:
        async with opened(sray, tmp_path, 2) as kv:
            for key in good + bad:
                await kv.submit(Write(key, b"v" * 40))

    run(write())
    corrupt_first_record(shard_dir(tmp_path, 1))

    async def go() -> None:
        async with opened(sray, tmp_path, 2) as kv:
            health = kv.health() or ""
            assert "shard 1 failed: cannot start" in health and "corrupt record" in health
            assert "shard 0" not in health
            answers = await asyncio.wait_for(kv.check_health(), WAIT)
            assert answers[0] is None and re.search(
                r"at byte offset \d+: corrupt record", answers[1] or ""
            )
            for _ in range(3):  # at once, every time: no retry loop behind it
                with pytest.raises(ShardFailed, match=r"shard 1: cannot start: .*corrupt record"):
                    await asyncio.wait_for(kv.submit(Write(bad[0], b"x")), WAIT)
            assert kv.links[1].state is LinkState.FAILED
            assert await kv.submit(Read(good[0])) == Value(b"v" * 40)  # the rest serves

    run(go())


def test_another_shard_count_is_refused_before_a_shard_starts(sray: Any, tmp_path: Path) -> None:
    async def go(shards: int) -> None:
        async with opened(sray, tmp_path, shards) as kv:
            await kv.submit(Write(b"x", b"1"))

    run(go(2))
    # The manifest is on this node: read here, before any actor (on another node, each
    # shard's own check fails it with ShardFailed and the same reason).
    with pytest.raises(ShardLayoutMismatch, match=r"holds 2 shard.*not 3"):
        run(go(3))


def test_a_shard_directory_lost_since_the_last_start_is_refused_not_made_empty(
    sray: Any, tmp_path: Path
) -> None:
    keys = keys_on(1, 2, 5)

    async def write() -> None:
        async with opened(sray, tmp_path, 2, fsync="never") as kv:
            for key in keys:
                assert await kv.submit(Write(key, b"v")) == OK

    run(write())
    shutil.rmtree(shard_dir(tmp_path, 1))

    async def reopen() -> None:
        async with opened(sray, tmp_path, 2) as kv:  # create=True, as serve --ray passes
            with pytest.raises(ShardFailed, match=r"shard 1: cannot start: .*data is not here"):
                await kv.submit(Read(keys[0]))
            assert await kv.submit(Write(keys_on(0, 2, 1)[0], b"v")) == OK  # shard 0 serves

    run(reopen())
    assert not Path(shard_dir(tmp_path, 1)).exists()


def test_one_callers_inputs_on_a_key_keep_their_order_across_calls(
    sray: Any, tmp_path: Path
) -> None:
    async def go() -> None:
        limits = Limits(window=4, max_batch=8)  # many small calls in flight at once
        async with opened(sray, tmp_path, 1, limits=limits, fsync="never") as kv:
            futures = [kv.submit_nowait(IncrBy(b"n", 1)) for _ in range(400)]
            outs = await asyncio.wait_for(asyncio.gather(*futures), WAIT)
            assert outs == [IntValue(i) for i in range(1, 401)]
            writes = [kv.submit_nowait(Write(b"x", str(i).encode())) for i in range(50)]
            read = kv.submit_nowait(Read(b"x"))
            await asyncio.wait_for(asyncio.gather(*writes), WAIT)
            assert await asyncio.wait_for(read, WAIT) == Value(b"49")
            assert kv.stats()["batches_sent"] >= 50

    run(go())


def test_actors_of_another_store_under_the_same_name_are_refused_and_left_alone(
    sray: Any, tmp_path: Path
) -> None:
    async def go() -> None:
        same = {"shards": 1, "name": f"t{uuid.uuid4().hex[:8]}", "num_cpus": 0.25}
        async with sray.open(KVMachine(), tmp_path / "a", **same) as a:
            await a.submit(Write(b"x", b"1"))
            with pytest.raises(ShardFailed, match=r"another store uses this name"):
                await sray.start(KVMachine(), tmp_path / "b", **same)
            assert await a.submit(Read(b"x")) == Value(b"1")  # store a's shard still serves

    run(go())
