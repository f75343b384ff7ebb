"""One shard: a durable host on its own journal, running callers' batches in order.

Theory of operation
-------------------
:meth:`ShardHost.recover` does, synchronously, what ``corosm.open`` does
before it serves: check the layout (:mod:`.manifest`), recover the shard's
directory through the machine's ``apply``, and build a
:class:`~corosm.runtime.Runtime` on a group-commit journal that continues it.
It is synchronous on purpose: a Ray actor runs it in its constructor, so
Ray sends the shard no call before recovery is over, and a shard that cannot
recover (a corrupt journal) fails its creation, which Ray reports to every
caller and does not retry. The runtime starts on the first call, on the
loop that will drive it.

Each host draws a random *incarnation* when it is built. A caller learns it
from :meth:`ShardHost.hello` and sends it with every batch; a batch that
names another incarnation was meant for a process that is gone and is
refused unrun (:attr:`BatchReply.refused`). A caller numbers its batches
per *session*, from 0; it starts a new session whenever it lost a call (the
lost batch's number would never come). The first batch of a newer session
makes the host refuse the older session's batches still waiting for their
turn. A batch of the old session that had started goes on, through the
caller's one :class:`CallerGate`, which outlives its sessions: its inputs
still waiting there for their keys stay ahead of the new session's, so no
input runs after one its caller submitted later on the same key.

:meth:`ShardHost.run` takes a caller's batch, lets its :class:`Sequencer`
start it in number order, feeds the inputs through the caller's
:class:`CallerGate` into ``runtime.submit_callback`` and answers when every
input of the batch is answered: outputs by position, errors beside them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from corosm.core.machine import Machine
from corosm.errors import UsageError
from corosm.runtime.durable import DurableOptions, durable_runtime
from corosm.runtime.runtime import Runtime
from corosm.shards.manifest import (
    Layout,
    check_create,
    check_layout,
    check_shard,
    shard_dir,
)
from corosm.shards.order import CallerGate, Sequencer, Ticket
from corosm.shards.routing import check_machine, keys_of

S = TypeVar("S")
I = TypeVar("I")
O = TypeVar("O")


@dataclass(frozen=True, slots=True)
class ShardSpec(Generic[S, I, O]):
    """Everything a shard needs to open itself, wherever it runs (it is pickled to Ray)."""

    machine: Machine[S, I, O]
    data_dir: str
    index: int
    layout: Layout
    options: DurableOptions = field(default_factory=DurableOptions)
    #: May a missing shard directory be made (a new store)? See :mod:`.manifest`.
    create: bool = True

    def __post_init__(self) -> None:
        check_machine(self.machine)
        shard_dir(self.data_dir, self.index)  # the directory's and the index's types
        if not isinstance(self.layout, Layout) or not self.index < self.layout.shards:
            raise UsageError(
                f"ShardSpec: layout must be a Layout that has a shard {self.index}, "
                f"not {self.layout!r:.60}"
            )
        if not isinstance(self.options, DurableOptions):
            raise UsageError(f"ShardSpec: options must be DurableOptions, not {self.options!r:.60}")
        check_create(self.create)


@dataclass(frozen=True, slots=True)
class Hello:
    """What a shard says once it has recovered: who it is and what recovery found."""

    index: int
    shards: int
    data_dir: str
    incarnation: str
    pid: int
    node: str
    records_replayed: int
    recovery_s: float


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """Whose batch this is and where it goes in their order (see the module docs)."""

    caller: str
    session: int
    incarnation: str
    seq: int


@dataclass(frozen=True, slots=True)
class BatchReply:
    """A batch's answer: ``outputs[i]`` for input ``i``, or its error in ``errors[i]``.

    ``refused`` (outputs empty) says why the batch did not run at all: it was
    sent to an earlier incarnation of this shard.
    """

    outputs: list[Any]
    errors: dict[int, BaseException]
    refused: str | None = None


class ShardHost(Generic[S, I, O]):
    """A shard's durable host and its callers' ordering (see the module docs)."""

    def __init__(self, spec: ShardSpec[S, I, O], runtime: Runtime[S, I, O]) -> None:
        self.spec = spec
        self.machine = spec.machine
        self.runtime = runtime
        self.incarnation = uuid.uuid4().hex
        self._callers: dict[str, _Caller] = {}
        self._started = False
        self.batches = 0
        self.inputs = 0

    @classmethod
    def recover(cls, spec: ShardSpec[S, I, O]) -> ShardHost[S, I, O]:
        """Check the layout, recover the shard's journal, build its runtime (blocking)."""
        check_layout(spec.data_dir, spec.layout, create=spec.create)
        directory = check_shard(spec.data_dir, spec.index, spec.layout, create=spec.create)
        runtime: Runtime[S, I, O] = durable_runtime(spec.machine, directory, spec.options)
        return cls(spec, runtime)

    def hello(self) -> Hello:
        report = self.runtime.recovery
        return Hello(
            self.spec.index,
            self.spec.layout.shards,
            self.spec.data_dir,
            self.incarnation,
            os.getpid(),
            socket.gethostname(),
            report.records_replayed if report else 0,
            report.seconds if report else 0.0,
        )

    async def start(self) -> None:
        """Start the runtime on the running loop (once; later calls return at once)."""
        if not self._started:
            self._started = True
            await self.runtime.start()

    async def stop(self) -> None:
        """Finish what is in flight, flush the journal, stop."""
        if self._started:
            await self.runtime.stop()

    def health(self) -> str | None:
        return self.runtime.health()

    def stats(self) -> dict[str, float]:
        stats = self.runtime.stats()
        stats["shard_batches"] = self.batches
        stats["shard_inputs"] = self.inputs
        stats["shard_callers"] = len(self._callers)
        stats["shard_batches_early"] = sum(c.sequencer.waiting for c in self._callers.values())
        return stats

    async def run(self, header: BatchHeader, inputs: Sequence[I]) -> BatchReply:
        """Run batch ``header.seq`` of the caller's session after its earlier batches.

        Answers when every input of the batch is answered, or at once with
        ``refused`` when the batch cannot run: it names another incarnation,
        or a session the caller has left (see the module docs).
        """
        caller, session, incarnation = header.caller, header.session, header.incarnation
        if incarnation != self.incarnation:
            return BatchReply(
                [],
                {},
                f"sent to incarnation {incarnation[:8]} of shard {self.spec.index}, which is "
                f"gone (this is {self.incarnation[:8]}): not run",
            )
        state = self._callers.get(caller)
        if state is None:
            state = self._callers[caller] = _Caller(session)
        elif session > state.session:
            for early in state.sequencer.abandon():
                early.refuse("its caller started a new session before it could run: not run")
            state.session, state.sequencer = session, Sequencer()  # the gate stays
        elif session < state.session:
            return BatchReply([], {}, f"from session {session}, which its caller has left: not run")
        await self.start()
        batch = _Batch(inputs, asyncio.get_running_loop())
        for ready in state.sequencer.arrive(header.seq, batch):
            self._offer(state.gate, ready)
        if batch.remaining:
            await batch.done
        return BatchReply(batch.outputs, batch.errors, batch.refused)

    def _offer(self, gate: CallerGate, batch: _Batch) -> None:
        """Start ``batch``: its inputs go through the caller's gate, in order."""
        self.batches += 1
        self.inputs += len(batch.inputs)
        machine = self.machine
        for index, input in enumerate(batch.inputs):
            slot = _Slot(self.runtime, gate, batch, index, input)
            try:
                slot.ticket = Ticket(keys_of(machine, input), machine.order(input), slot.start)
            except Exception as exc:  # key() or order() raised: this input alone fails
                batch.answer(index, None, exc)
                continue
            gate.offer(slot.ticket)


class _Caller:
    """One caller on this shard: its session, its batch order, its per-key order (kept)."""

    __slots__ = ("gate", "sequencer", "session")

    def __init__(self, session: int) -> None:
        self.session = session
        self.sequencer: Sequencer[_Batch] = Sequencer()
        self.gate = CallerGate()


class _Batch:
    """The inputs of one batch, their answers, and a future set when the last one is in."""

    __slots__ = ("done", "errors", "inputs", "loop", "outputs", "refused", "remaining")

    def __init__(self, inputs: Sequence[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.inputs = inputs
        self.outputs: list[Any] = [None] * len(inputs)
        self.errors: dict[int, BaseException] = {}
        self.refused: str | None = None
        self.remaining = len(inputs)
        self.loop = loop
        self.done: asyncio.Future[None] = loop.create_future()

    def answer(self, index: int, output: Any, error: BaseException | None) -> None:
        if error is None:
            self.outputs[index] = output
        else:
            self.errors[index] = error
        self.remaining -= 1
        if self.remaining == 0 and not self.done.done():
            self.done.set_result(None)

    def refuse(self, reason: str) -> None:
        """This batch will never start: answer its call with ``reason``."""
        self.outputs, self.refused = [], reason
        if not self.done.done():
            self.done.set_result(None)


class _Slot:
    """One input of a batch: starts it on the runtime, and is its reply callback."""

    __slots__ = ("batch", "gate", "index", "input", "runtime", "ticket")

    def __init__(
        self,
        runtime: Runtime[Any, Any, Any],
        gate: CallerGate,
        batch: _Batch,
        index: int,
        input: Any,
    ) -> None:
        self.runtime = runtime
        self.gate = gate
        self.batch = batch
        self.index = index
        self.input = input
        self.ticket: Ticket | None = None

    def start(self) -> None:
        try:
            self.runtime.submit_callback(self.input, self)
        except Exception as exc:  # Overloaded, Stopped: answer later, never inside the gate
            self.batch.loop.call_soon(self, None, exc)

    def __call__(self, output: Any, error: BaseException | None) -> None:
        if self.ticket is not None:
            self.gate.answered(self.ticket)
        self.batch.answer(self.index, output, error)
