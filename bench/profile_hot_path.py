"""CPU cost of each piece of the durable write path, per input, without sockets.

Theory of operation
-------------------
On a shared machine wall-clock rates swing by 2x from run to run, so this
script reports *CPU time of the measuring thread* (``time.thread_time``),
best of several repetitions, in microseconds per input or record:

* ``kv stepper``: a ``Write`` input of the key-value machine through a bare
  :class:`Stepper` (input, StartIO, completion, apply, Reply);
* ``runtime turn``: the same through :class:`Runtime` on uvloop, 64 inputs in
  flight, with an executor that completes each submitted batch through the
  thread-safe sink (as the journal does, minus the disk): the loop thread's
  share of a durable write, except HTTP; once with ``submit_nowait`` (an
  asyncio future per input) and once with ``submit_callback`` (as HTTP does);
* ``journal submit``: :meth:`JournalExecutor.submit` encoding 64 Put records;
* ``frame + deliver``: what the journal thread does per record while holding
  the GIL (framing, CRCs, completions), fsync excluded.

    .venv/bin/python bench/profile_hot_path.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from corosm.apps.kv.inputs import Write
from corosm.apps.kv.machine import KVMachine
from corosm.apps.kv.records import Put
from corosm.core import Stepper
from corosm.core.effects import Append, Effect
from corosm.core.events import StartIO
from corosm.io.executor import CompletionSink
from corosm.io.journal import (
    JournalControl,
    JournalExecutor,
    JournalOptions,
    LogWriter,
    OSFileSystem,
)
from corosm.runtime import Runtime, run


def best_us(body: Callable[[], int], repeat: int) -> float:
    """Best thread-CPU microseconds per item over ``repeat`` runs of ``body`` (returns items)."""
    body()  # warm up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time()
        items = body()
        best = min(best, (time.thread_time() - t0) / items * 1e6)
    return best


def kv_stepper(n: int = 50_000) -> int:
    stepper = Stepper(KVMachine())
    for i in range(n):
        stepper.input(i, Write(b"k%d" % (i & 1023), b"%d" % i))
        [start] = stepper.take_actions()
        assert type(start) is StartIO
        stepper.complete(start.request, i, None)
        stepper.take_actions()
    return n


class EchoExecutor:
    """Completes each submitted batch at once through the sink, like a zero-latency journal."""

    def __init__(self) -> None:
        self._sink: CompletionSink | None = None

    def start(self, sink: CompletionSink) -> None:
        self._sink = sink

    def submit(self, requests: Sequence[tuple[int, Effect[Any]]]) -> None:
        assert self._sink is not None
        self._sink([(request, 0, None) for request, _ in requests])

    def cancel(self, request: int) -> None:
        pass

    def close(self) -> None:
        pass


async def _runtime_turns(n: int, inflight: int) -> None:
    async with Runtime(KVMachine(), executors={Append: EchoExecutor()}) as rt:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        sent = 0

        def submit_one(_: object = None) -> None:
            # A new input as each reply lands: a closed loop of ``inflight`` clients.
            nonlocal sent
            if sent == n:
                if rt.inflight == 0 and not done.done():
                    done.set_result(None)
                return
            sent += 1
            rt.submit_nowait(Write(b"k%d" % (sent & 1023), b"1")).add_done_callback(submit_one)

        for _ in range(inflight):
            submit_one()
        await done


def runtime_turn(n: int = 50_000) -> int:
    run(_runtime_turns(n, 64))
    return n


async def _runtime_callback_turns(n: int, inflight: int) -> None:
    async with Runtime(KVMachine(), executors={Append: EchoExecutor()}) as rt:
        done = asyncio.get_running_loop().create_future()
        sent = 0

        def submit_one(_output: object = None, _error: object = None) -> None:
            nonlocal sent
            if sent == n:
                if rt.inflight == 0 and not done.done():
                    done.set_result(None)
                return
            sent += 1
            rt.submit_callback(Write(b"k%d" % (sent & 1023), b"1"), submit_one)

        for _ in range(inflight):
            submit_one()
        await done


def runtime_callback_turn(n: int = 50_000) -> int:
    run(_runtime_callback_turns(n, 64))
    return n


def journal_submit(batches: int = 1000) -> int:
    sent: list[int] = []

    class FakeJournal:
        def start(self, sink: object) -> None:
            pass

        def submit(self, entries: Sequence[tuple[Any, bytes]]) -> None:
            sent.append(len(entries))

    executor = JournalExecutor(FakeJournal(), KVMachine().encode_record)  # type: ignore[arg-type]
    executor.start(lambda completions: None)
    requests = [(i, Append(Put(b"k%d" % i, b"%d" % i))) for i in range(64)]
    for _ in range(batches):
        executor.submit(requests)
    return 64 * batches


def frame_and_deliver(batches: int = 2000) -> int:
    with tempfile.TemporaryDirectory() as d:
        # The journal's thread-free control, driven by hand: no thread, no sink.
        writer = LogWriter(OSFileSystem(), d, 1)
        options = JournalOptions(fsync="never")
        control = JournalControl(writer, options, lambda completions: None, now=time.perf_counter)
        control.open()
        batch = [(i, b"\x01\x02\x00\x00\x00k1" + b"%d" % i) for i in range(64)]
        for _ in range(batches):
            control.commit(batch)
        control.close()
    return 64 * batches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    for label, body in (
        ("kv stepper (Write: input..reply)", kv_stepper),
        ("runtime turn, 64 in flight (future)", runtime_turn),
        ("runtime turn, 64 in flight (callback)", runtime_callback_turn),
        ("journal executor submit", journal_submit),
        ("journal frame + write + deliver", frame_and_deliver),
    ):
        print(f"{label:40s} {best_us(body, args.repeat):6.2f} us CPU per input")


if __name__ == "__main__":
    main()
