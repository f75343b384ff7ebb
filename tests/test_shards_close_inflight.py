"""Closing a sharded client with calls in flight: every input still gets one outcome.

A call in flight when the client closes was sent: its inputs may have run.
Close gives it its reply or its own ``Limits.call_timeout``; ``stop(timeout)``
gives it at most ``timeout`` seconds; past that, or when close itself is
cancelled, its inputs fail with ``OutcomeUnknown``, never with an error that
says they did not run, and never twice. Inputs still queued fail with
``Stopped``: they were not sent. Timed-out inputs are counted apart from
other lost ones. Each test bounds its own waits, so on a client that loses
track of a call it fails instead of hanging.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from corosm.apps.kv.inputs import Write
from corosm.apps.kv.outputs import OK
from corosm.errors import Stopped
from corosm.shards import Limits, OutcomeUnknown
from corosm.shards.client import LinkState
from corosm.shards.host import BatchHeader, BatchReply, ShardHost
from corosm.shards.local import LocalTransport
from test_shards_call_timeout import StuckTransport
from test_shards_local import WAIT, FlakyTransport, HeldTransport, client_over, run

BOUND = 0.2  # seconds: the short timeouts of these tests (the rest are 60 s, the default)
CLOSED = r"shard 0: the client closed with the call in flight .*: the call's 2 input\(s\) may or"


class NeverTransport(LocalTransport):
    """A shard whose calls never get a reply, and that notes when the client gives one up."""

    def __init__(self, hosts: list[ShardHost[Any, Any, Any]]) -> None:
        super().__init__(hosts)
        self.arrived = asyncio.Event()
        self.given_up = asyncio.Event()

    async def run(self, shard: int, header: BatchHeader, inputs: list[Any]) -> BatchReply:
        self.arrived.set()
        try:
            await asyncio.Event().wait()  # only the client's cancel ends this
        finally:
            self.given_up.set()
        raise AssertionError("unreachable")


class Answers:
    """A reply callback that records every answer it gets."""

    def __init__(self) -> None:
        self.got: list[tuple[Any, BaseException | None]] = []

    def __call__(self, output: Any, error: BaseException | None) -> None:
        self.got.append((output, error))


async def two_inputs_in_one_stuck_call(kv: Any, t: NeverTransport) -> tuple[Any, Answers]:
    """A future and a callback, sent in one call that never returns."""
    answers = Answers()
    future = kv.submit_nowait(Write(b"x", b"1"))
    kv.submit_callback(Write(b"y", b"1"), answers)
    async with asyncio.timeout(WAIT):
        await t.arrived.wait()
    return future, answers


def test_stop_gives_a_stuck_call_its_timeout_then_fails_its_inputs_once(tmp_path: Path) -> None:
    async def go() -> None:
        async with client_over(tmp_path, NeverTransport, Limits()) as (kv, t):
            future, answers = await two_inputs_in_one_stuck_call(kv, t)
            queued = kv.submit_nowait(Write(b"z", b"1"))  # behind it: the window is full
            async with asyncio.timeout(WAIT):
                await kv.stop(BOUND)
            with pytest.raises(OutcomeUnknown, match=CLOSED):
                future.result()
            [(output, error)] = answers.got
            assert output is None and isinstance(error, OutcomeUnknown)
            assert str(error) == str(future.exception())
            with pytest.raises(Stopped, match=r"closing"):
                queued.result()  # never sent: that one did not run
            async with asyncio.timeout(WAIT):
                await t.given_up.wait()  # the call's task ended, answering nothing again
            assert len(answers.got) == 1
            stats = kv.stats()
            assert (stats["shard0_inputs_lost"], stats["shard0_inputs_timed_out"]) == (2, 0)
            assert stats["shard0_inflight_calls"] == 0

    run(go())


def test_a_cancelled_close_still_gives_the_calls_in_flight_an_outcome(tmp_path: Path) -> None:
    async def go() -> None:
        async with client_over(tmp_path, NeverTransport, Limits()) as (kv, t):
            future, answers = await two_inputs_in_one_stuck_call(kv, t)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(kv.close(), BOUND)  # its caller's own bound cancels it
            await t.close()  # the shards stop, as the close cut short would have made them
            async with asyncio.timeout(WAIT):
                with pytest.raises(OutcomeUnknown, match=CLOSED):
                    await future
                await t.given_up.wait()
            assert [type(error) for _, error in answers.got] == [OutcomeUnknown]

    run(go())


def test_close_lets_a_call_in_flight_finish(tmp_path: Path) -> None:
    async def go() -> None:
        async with client_over(tmp_path, HeldTransport, Limits()) as (kv, t):
            future = kv.submit_nowait(Write(b"x", b"1"))
            await t.wait_calls(1)
            closing = asyncio.ensure_future(kv.close())
            async with asyncio.timeout(WAIT):
                while kv.links[0].state is not LinkState.DOWN:  # close has begun
                    await asyncio.sleep(0)
                assert not closing.done()
                t.release_all()
                await closing
            assert future.result() == OK
            assert kv.stats()["inputs_lost"] == 0

    run(go())


def test_close_waits_for_a_stuck_call_no_longer_than_its_call_timeout(tmp_path: Path) -> None:
    async def go() -> None:
        async with client_over(tmp_path, NeverTransport, Limits(call_timeout=BOUND)) as (kv, t):
            future, answers = await two_inputs_in_one_stuck_call(kv, t)
            async with asyncio.timeout(WAIT):
                await kv.close()
            no_reply = r"shard 0: no reply in 0.2 s \(Limits.call_timeout\)"
            with pytest.raises(OutcomeUnknown, match=no_reply):
                future.result()
            assert [type(error) for _, error in answers.got] == [OutcomeUnknown]
            stats = kv.stats()
            assert (stats["inputs_lost"], stats["inputs_timed_out"]) == (2, 2)

    run(go())


@pytest.mark.parametrize("how", ["lost", "timed out"])
def test_timed_out_inputs_are_counted_apart_from_other_lost_ones(tmp_path: Path, how: str) -> None:
    async def go() -> None:
        transport = FlakyTransport if how == "lost" else StuckTransport
        async with client_over(tmp_path, transport, Limits(call_timeout=BOUND)) as (kv, t):
            if how == "lost":
                t.lose_next = 1
            else:
                t.hold = True
            with pytest.raises(OutcomeUnknown):
                async with asyncio.timeout(WAIT):
                    await kv.submit(Write(b"x", b"1"))
            stats = kv.stats()
            timed_out = int(how == "timed out")
            assert (stats["shard0_inputs_lost"], stats["shard0_inputs_timed_out"]) == (1, timed_out)
            assert (stats["inputs_lost"], stats["inputs_timed_out"]) == (1, timed_out)

    run(go())
