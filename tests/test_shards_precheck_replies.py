"""A batch reply with the wrong number of outputs fails every input of its call, once.

The client matches outputs to inputs by position. A reply with more or
fewer outputs than the call had inputs (a transport's bug, or a shard of
another corosm version) cannot be matched: the client answered the first
inputs and raised, leaving the rest without an outcome (too few), or
answered every input and raised (too many). Now every input of such a
call fails with ``OutcomeUnknown`` naming both counts (the shard ran them,
so they may have run), and the link says hello again, as after a lost call.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from corosm.apps.kv.inputs import Read, Write
from corosm.apps.kv.outputs import OK, Value
from corosm.shards import Limits, OutcomeUnknown
from corosm.shards.client import LinkState
from corosm.shards.host import BatchHeader, BatchReply, ShardHost
from test_shards_close_inflight import Answers
from test_shards_local import WAIT, FlakyTransport, client_over, run


class MiscountingTransport(FlakyTransport):
    """Runs each batch, then (when told) answers with ``skew`` outputs more or fewer."""

    def __init__(self, hosts: list[ShardHost[Any, Any, Any]]) -> None:
        super().__init__(hosts)
        self.skew = 0

    async def run(self, shard: int, header: BatchHeader, inputs: list[Any]) -> BatchReply:
        reply = await super().run(shard, header, inputs)
        skew, self.skew = self.skew, 0
        if skew < 0:
            return BatchReply(reply.outputs[:skew], reply.errors)
        return BatchReply(reply.outputs + [OK] * skew, reply.errors)


@pytest.mark.parametrize("skew", [-1, -3, 1], ids=["one-too-few", "none", "one-too-many"])
def test_every_input_of_a_miscounted_reply_fails_as_outcome_unknown(
    skew: int, tmp_path: Path
) -> None:
    async def go() -> None:
        async with client_over(tmp_path, MiscountingTransport, Limits(window=1)) as (kv, t):
            t.skew = skew
            answers = Answers()
            futures = [kv.submit_nowait(Write(k, b"1")) for k in (b"a", b"b")]
            kv.submit_callback(Write(b"c", b"1"), answers)  # one call: the same pass
            async with asyncio.timeout(WAIT):
                done = await asyncio.gather(*futures, return_exceptions=True)
                await kv.links[0].ready.wait()  # said hello again: the link has a verdict
            errors = [*done, *(error for _, error in answers.got)]
            assert [type(error) for error in errors] == [OutcomeUnknown] * 3, errors
            counts = f"shard 0: the reply has {3 + skew} output(s) for the call's 3 input(s): "
            assert all(str(error).startswith(counts) for error in errors), errors
            assert answers.got[0][0] is None
            assert kv.links[0].state is LinkState.READY and kv.links[0].session == 2
            assert t.hellos == 2  # a new session, as after a lost call
            assert await kv.submit(Read(b"c")) == Value(b"1")  # they had run
            assert await kv.submit(Write(b"d", b"1")) == OK  # and the link goes on
            stats = kv.stats()
            assert (stats["shard0_inputs_lost"], stats["shard0_inputs_timed_out"]) == (3, 0)

    run(go())
