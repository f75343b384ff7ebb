"""End to end without the runtime: the stepper's appends go through JournalExecutor.

A minimal host loop (the runtime's shape: submit the iteration's appends in
one call, deliver each completion batch in order) runs a small key-value
machine, takes a snapshot on the way, and checks that recovery rebuilds
exactly the live state.
"""

from __future__ import annotations

import json
import queue
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from corosm.core import Context, IOCompleted, Machine, Reply, StartIO, Stepper
from corosm.core.events import InputArrived
from corosm.io.executor import Completion
from corosm.io.journal import Journal, JournalExecutor, JournalOptions, Recovered, open_journal

BOUND = 10.0


class KV(Machine[dict[str, int], tuple[str, int], int]):
    def initial_state(self) -> dict[str, int]:
        return {}

    async def handle(self, ctx: Context[dict[str, int]], inp: tuple[str, int]) -> int:
        key, delta = inp
        await ctx.append(f"{key}={ctx.state.get(key, 0) + delta}")
        return ctx.state[key]

    def apply(self, state: dict[str, int], record: Any) -> dict[str, int]:
        key, _, value = record.partition("=")
        state[key] = int(value)
        return state

    def encode_record(self, record: Any) -> bytes:
        return str(record).encode()

    def decode_record(self, data: bytes) -> Any:
        return data.decode()

    def snapshot(self, state: dict[str, int]) -> bytes:
        return json.dumps(state).encode()

    def restore(self, data: bytes) -> dict[str, int]:
        return dict(json.loads(data))

    def copy_state(self, state: dict[str, int]) -> dict[str, int]:
        return dict(state)


def run(directory: str, inputs: list[tuple[str, int]]) -> tuple[dict[str, int], list[int]]:
    m = KV()
    journal, rec = open_journal(directory, m, options=JournalOptions(snapshot_every_records=25))
    stepper = Stepper(m, rec.state)
    inbox: queue.SimpleQueue[Sequence[Completion]] = queue.SimpleQueue()
    ex = JournalExecutor(journal, m.encode_record)
    ex.start(inbox.put)
    replies: list[int] = []
    actions = stepper.feed(*(InputArrived(i, inp) for i, inp in enumerate(inputs)))
    while len(replies) < len(inputs):
        starts = [(a.request, a.effect) for a in actions if isinstance(a, StartIO)]
        replies += [a.output for a in actions if isinstance(a, Reply)]
        if starts:
            ex.submit(starts)  # one call per loop iteration
        if len(replies) == len(inputs):
            break
        batch = inbox.get(timeout=BOUND)
        actions = stepper.feed(*(IOCompleted(r, v, e) for r, v, e in batch))
        if journal.snapshot_due():
            snap = m.copy_state(stepper.state)
            journal.start_snapshot(stepper.last_append_value, lambda s=snap: m.snapshot(s))
    ex.close()
    return stepper.state, replies


def test_recovery_rebuilds_the_live_state(tmp_path: Path) -> None:
    inputs = [(f"k{i % 5}", i) for i in range(120)]
    live, replies = run(str(tmp_path), inputs)
    assert len(replies) == 120
    rec = recovered(str(tmp_path))
    assert rec.state == live
    assert rec.report.snapshot_lsn > 0  # a snapshot was taken along the way
    assert rec.report.records_replayed < 120
    # the store continues where it left off
    live2, _ = run(str(tmp_path), [("k0", 1000)])
    assert live2["k0"] == live["k0"] + 1000
    assert recovered(str(tmp_path)).state == live2


def recovered(directory: str) -> Recovered[dict[str, int]]:
    """What a restart would recover, with the journal closed again (it holds the directory)."""
    journal, rec = open_journal(directory, KV())
    journal.close()
    return rec


def test_unstarted_journal_object_is_reusable_by_open_journal(tmp_path: Path) -> None:
    journal, rec = open_journal(str(tmp_path), KV())
    assert isinstance(journal, Journal) and rec.next_lsn == 1
    journal.close()  # never started: closing is harmless
