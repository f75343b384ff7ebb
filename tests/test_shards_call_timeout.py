"""A shard whose process is alive but stuck: a call in flight to it is bounded.

``Limits.call_timeout`` bounds the wait for a batch's reply. Past it, the
batch's inputs fail with ``OutcomeUnknown`` naming the bound, the link counts
them lost and says hello again: a new session when the shard answers, DOWN
when it does not answer that either. Each test bounds its own waits, so on a
client without the bound it fails instead of hanging.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from corosm.apps.kv.inputs import Read, Write
from corosm.apps.kv.machine import KVMachine
from corosm.apps.kv.outputs import OK, Value
from corosm.runtime.durable import DurableOptions
from corosm.shards import Limits, OutcomeUnknown, ShardUnavailable
from corosm.shards.client import LinkState
from corosm.shards.host import BatchHeader, Hello, ShardHost, ShardSpec
from corosm.shards.manifest import Layout
from test_shards_local import WAIT, HeldTransport, client_over, run

BOUND = 0.2  # seconds: the call_timeout (and hello_timeout) of these tests


class StuckTransport(HeldTransport):
    """A shard that gets stuck: while ``hold`` is set, its calls get no reply.

    They wait, as :class:`HeldTransport`'s, until ``client_over`` releases
    them at the end (a client without the bound then fails, not hangs).
    While ``mute`` is set its hellos never answer either; ``hold_hello``
    makes them wait until the test sets it.
    """

    def __init__(self, hosts: list[ShardHost[Any, Any, Any]]) -> None:
        super().__init__(hosts)
        self.hold = False  # answering, until a test says otherwise
        self.mute = False
        self.hold_hello: asyncio.Event | None = None
        self.hellos = 0

    async def hello(self, shard: int) -> Hello:
        self.hellos += 1
        if self.mute:
            await asyncio.Event().wait()  # only the client's hello_timeout ends this
        if self.hold_hello is not None:
            await self.hold_hello.wait()
        return await super().hello(shard)


def sessions(t: StuckTransport) -> list[tuple[int, int]]:
    return [(header.session, header.seq) for header, _, _ in t.calls]


def test_a_call_with_no_reply_fails_as_outcome_unknown_and_the_link_resyncs(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        async with client_over(tmp_path, StuckTransport, Limits(call_timeout=BOUND)) as (kv, t):
            t.hold, t.hold_hello = True, asyncio.Event()
            stuck = kv.submit_nowait(Write(b"x", b"1"))
            await t.wait_calls(1)
            queued = kv.submit_nowait(Write(b"y", b"1"))  # behind it: the window is full
            with pytest.raises(OutcomeUnknown) as err:
                async with asyncio.timeout(WAIT):
                    await stuck
            assert str(err.value).startswith("shard 0: no reply in 0.2 s (Limits.call_timeout)")
            assert "may or may not have run" in str(err.value)
            # Saying hello again: not ready, and health says why.
            link = kv.links[0]
            assert link.state is LinkState.SYNCING
            assert (kv.health() or "").startswith("shard 0 syncing: no reply in 0.2 s")
            stats = kv.stats()
            assert (stats["shard0_inputs_lost"], stats["shard0_inflight_calls"]) == (1, 0)
            assert not queued.done()
            t.hold = False
            t.hold_hello.set()  # the shard answers: a new session, and the queue goes
            async with asyncio.timeout(WAIT):
                assert await queued == OK
            assert sessions(t) == [(1, 0), (2, 0)] and t.hellos == 2
            assert kv.health() is None
            assert await kv.submit(Read(b"y")) == Value(b"1")
            assert await kv.submit(Read(b"x")) == Value(None)  # not retried behind our back

    run(go())


def test_every_stuck_call_of_the_window_fails_and_the_link_resyncs_once(tmp_path: Path) -> None:
    async def go() -> None:
        limits = Limits(window=2, max_batch=1, call_timeout=BOUND)
        async with client_over(tmp_path, StuckTransport, limits) as (kv, t):
            t.hold = True
            first = kv.submit_nowait(Write(b"x", b"1"))
            second = kv.submit_nowait(Write(b"x", b"2"))
            await t.wait_calls(2)
            async with asyncio.timeout(WAIT):
                errors = await asyncio.gather(first, second, return_exceptions=True)
            assert [type(e) for e in errors] == [OutcomeUnknown, OutcomeUnknown]
            t.hold = False
            async with asyncio.timeout(WAIT):
                assert await kv.submit(Write(b"x", b"3")) == OK
            assert t.hellos == 2 and kv.links[0].session == 2
            assert kv.stats()["shard0_inputs_lost"] == 2
            assert sessions(t) == [(1, 0), (1, 1), (2, 0)]
            assert await kv.submit(Read(b"x")) == Value(b"3")

    run(go())


def test_a_stuck_shard_that_does_not_answer_hello_either_is_down(tmp_path: Path) -> None:
    async def go() -> None:
        limits = Limits(call_timeout=BOUND, hello_timeout=BOUND)
        async with client_over(tmp_path, StuckTransport, limits) as (kv, t):
            t.hold = t.mute = True
            stuck = kv.submit_nowait(Write(b"x", b"1"))
            await t.wait_calls(1)
            queued = kv.submit_nowait(Write(b"y", b"1"))
            async with asyncio.timeout(WAIT):
                with pytest.raises(OutcomeUnknown, match=r"shard 0: no reply in 0.2 s"):
                    await stuck
                with pytest.raises(ShardUnavailable, match=r"down \(no answer in 0.2 s\)"):
                    await queued
            assert kv.links[0].state is LinkState.DOWN
            assert kv.health() == "shard 0 down: no answer in 0.2 s"
            t.hold = t.mute = False  # back: the next input reconnects
            async with asyncio.timeout(WAIT):
                assert await kv.submit(Write(b"y", b"2")) == OK
            assert kv.health() is None and sessions(t) == [(1, 0), (2, 0)]

    run(go())


class HeldRuntime:
    """A shard's runtime that records the order inputs reach it, and answers when told."""

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.callbacks: list[Any] = []

    async def start(self) -> None:
        pass

    def submit_callback(self, input: Any, callback: Any, *, now: bool = False) -> None:
        self.started.append(input)
        self.callbacks.append(callback)


def test_inputs_of_an_abandoned_session_keep_their_place_on_their_key(tmp_path: Path) -> None:
    """A call that timed out may still run; its inputs never run after later ones on a key.

    Session 1's batch is W1 (handed over, unanswered: its disk hangs), then
    R and W2 waiting for it at the caller's gate. The client gives up and
    starts session 2, whose W3 must wait behind W2: W2 reported
    OutcomeUnknown, and running it after W3 would overwrite the later write.
    """

    async def go() -> None:
        runtime = HeldRuntime()
        spec = ShardSpec(KVMachine(), str(tmp_path), 0, Layout(1), DurableOptions(fsync="never"))
        host = ShardHost(spec, runtime)  # type: ignore[arg-type]
        old = asyncio.ensure_future(
            host.run(
                BatchHeader("c", 1, host.incarnation, 0),
                [Write(b"k", b"1"), Read(b"k"), Write(b"k", b"2")],
            )
        )
        async with asyncio.timeout(WAIT):
            while not runtime.started:
                await asyncio.sleep(0)
        new = asyncio.ensure_future(
            host.run(BatchHeader("c", 2, host.incarnation, 0), [Write(b"k", b"3")])
        )
        answered = 0
        async with asyncio.timeout(WAIT):
            while host.batches < 2:  # session 2's batch is offered while W1 still runs
                await asyncio.sleep(0)
            while answered < 4:  # the disk returns: answer each input once it is handed over
                if answered < len(runtime.callbacks):
                    runtime.callbacks[answered](OK, None)
                    answered += 1
                else:
                    await asyncio.sleep(0)
            await asyncio.gather(old, new)
        assert runtime.started == [
            Write(b"k", b"1"),
            Read(b"k"),
            Write(b"k", b"2"),
            Write(b"k", b"3"),
        ]

    run(go())
