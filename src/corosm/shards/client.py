"""The caller's side of a sharded machine: route, batch per shard, keep order.

Theory of operation
-------------------
:class:`ShardedClient` routes each input to its shard (:mod:`.routing`) and
queues it on that shard's :class:`ShardLink`. A link sends the queue as
batches over a :class:`Transport` (Ray actors, or hosts in this process),
at most ``window`` calls in flight per shard. When a call returns, the link
sends everything that queued meanwhile (up to ``max_batch``) in the next
one: group commit across the boundary, so the batch size follows the load
by itself, one input per call when idle and hundreds under load. A send is
never made inside ``submit``: it is scheduled for the end of the current
pass of the event loop, so that every input submitted in that pass (all the
callers one reply woke, every request of one socket read) goes in one call.

Order. A link numbers its batches per *session*, from 0, and the shard runs
them in that order (:mod:`.order`); within a batch, inputs keep their order.
So one client's inputs on one key run in the order they were submitted, and
a read sees the client's earlier writes on its key.

Failure. A link is a small state machine::

    SYNCING --hello--> READY --call lost, refused, timed out or miscounted--> SYNCING
    SYNCING --no hello in time--> DOWN --next submit--> SYNCING
    SYNCING --shard cannot start--> FAILED (for good)

``hello`` returns once the shard has recovered, with its incarnation; every
batch carries it. A call lost with the shard's process fails its inputs with
:class:`OutcomeUnknown` (they may have run: nothing is retried blindly); a
batch the shard refused (sent to an incarnation that is gone, or left behind
by a new session) fails with :class:`ShardUnavailable` (it did not run). A
call with no reply within ``Limits.call_timeout`` (a shard whose process is
alive but stuck: stopped, or waiting on a disk that does not return) is
lost too: the link stops waiting, fails its inputs with OutcomeUnknown
("no reply in N s") and counts them lost and timed out. So is a call
whose reply has more or fewer outputs than it had inputs (a transport's
bug, or a shard of another version): no output can be matched to its
input, so every input fails with OutcomeUnknown naming both counts; and
one whose reply is not a :class:`BatchReply` at all (None, say), or one
whose fields are not of their types: its inputs fail with OutcomeUnknown
naming what came back. In
each case the link then says hello again (SYNCING:
:meth:`ShardedClient.health` says so) and starts a new session; inputs
still queued wait for it, and other shards' links go on meanwhile. A
shard that does not answer that hello within ``hello_timeout`` makes the
link DOWN, which fails what is queued with ShardUnavailable. A shard that
cannot start (its creation failed: e.g. a corrupt journal) makes the link
FAILED: its inputs fail at once with :class:`ShardFailed` naming the
cause, and :meth:`ShardedClient.health` says so.

What the late batch of a lost call can still do on the shard
(:mod:`.host`): a batch of the old session that has not started there when
the new session's first batch arrives never runs (the shard refuses it).
One that started goes on, ahead of the new session's inputs on the same
keys: a caller keeps one per-key gate across its sessions. So an input
that failed with OutcomeUnknown may still run, but never after an input
submitted later on its key.

Closing. Every input handed to a link gets exactly one outcome, also when
the client closes: what is queued fails with ``Stopped`` (not sent), and a
call in flight that gets no reply in the time :meth:`ShardedClient.close`
gives it fails with OutcomeUnknown (it was sent: it may have run), as it
does when close itself is cancelled or the loop ends with the call in
flight. A link answers a call's inputs once: whoever takes the call's
items from ``_flying`` first (the call, or close) answers them. A second
close returns when the first one ends, not before.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeAlias, TypeVar, runtime_checkable

from corosm.core.machine import Machine
from corosm.errors import Overloaded, Stopped, UsageError
from corosm.runtime.runtime import off_loop_thread
from corosm.shards.errors import OutcomeUnknown, ShardError, ShardFailed, ShardUnavailable
from corosm.shards.host import BatchHeader, BatchReply, Hello
from corosm.shards.routing import Router

I = TypeVar("I")
O = TypeVar("O")

log = logging.getLogger("corosm.shards")

ReplyCallback: TypeAlias = Callable[[Any, "BaseException | None"], None]
Reply: TypeAlias = "asyncio.Future[Any] | ReplyCallback"


@runtime_checkable
class Transport(Protocol):
    """How a client reaches its shards (Ray actors, or hosts in this process)."""

    async def hello(self, shard: int) -> Hello:
        """Wait until ``shard`` has recovered; raise ShardFailed or ShardUnavailable."""
        ...

    async def run(self, shard: int, header: BatchHeader, inputs: list[Any]) -> BatchReply:
        """Run one batch; raise OutcomeUnknown when the call is lost."""
        ...

    async def health(self, shard: int) -> str | None: ...

    async def stats(self, shard: int) -> dict[str, float]: ...

    async def close(self) -> None:
        """Stop the shards (journals flushed), in a bounded time: the client's close awaits it."""
        ...


@dataclass(frozen=True, slots=True)
class Limits:
    """How a client batches: calls in flight per shard, inputs per call, inputs queued.

    ``window=1`` (one call in flight per shard, the next one carrying all
    that queued meanwhile) gave the most writes per second in
    docs/scaling.md's runs: a wider window splits the same load into
    smaller batches, and each Ray call has a fixed cost. ``hello_timeout``
    bounds the wait for a restarting shard before its inputs fail.

    ``call_timeout`` bounds the wait for one batch's reply; past it the
    batch's inputs fail with OutcomeUnknown and the link says hello again
    (see the module docs). It must stay above what a healthy batch takes,
    or healthy inputs fail and the link resyncs for nothing: a batch
    carries up to ``max_batch`` inputs, queued on the shard behind other
    callers' work, and even if each were fsynced on its own at 10 ms,
    1024 of them take about 10 s. The default, 60 s as for
    ``hello_timeout``, is far above that: it only catches a shard that is
    stuck (a stopped process, a disk that does not return), on the same
    scale as one that does not come back. It also bounds how long
    :meth:`ShardedClient.close` waits for calls in flight.
    """

    window: int = 1
    max_batch: int = 1024
    max_queue: int = 100_000
    hello_timeout: float = 60.0
    call_timeout: float = 60.0

    def __post_init__(self) -> None:
        # A zero (or a float) would leave inputs queued for ever: nothing would send them.
        for name in ("window", "max_batch", "max_queue"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise UsageError(f"Limits.{name} must be an int of at least 1, not {value!r:.60}")
        check_seconds("Limits.hello_timeout", self.hello_timeout)
        check_seconds("Limits.call_timeout", self.call_timeout)


def check_seconds(name: str, value: object) -> float:
    """``value`` if it is a bound in seconds (a finite number above 0), else a UsageError."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < math.inf:
        return value
    raise UsageError(f"{name} must be a finite number of seconds above 0, not {value!r:.60}")


class LinkState(enum.Enum):
    SYNCING = "syncing"
    READY = "ready"
    DOWN = "down"
    FAILED = "failed"


class ShardLink:
    """One client's queue, calls and state for one shard (see the module docs)."""

    def __init__(self, transport: Transport, shard: int, caller: str, limits: Limits) -> None:
        self.transport = transport
        self.shard = shard
        self.caller = caller
        self.limits = limits
        self.state = LinkState.SYNCING
        self.reason: str | None = None
        #: The loop the link runs on, set by :meth:`resync` (on it): READY implies it is set.
        self.loop: asyncio.AbstractEventLoop | None = None
        self.hello: Hello | None = None
        self.session = 0
        self.seq = 0
        self.queue: deque[tuple[Any, Reply]] = deque()
        self.inflight = 0
        self.space = asyncio.Event()
        self.space.set()
        self.ready = asyncio.Event()  # set on READY, DOWN or FAILED: the link has a verdict
        self._tasks: set[asyncio.Task[None]] = set()
        #: The inputs of each call in flight, by call number (``batches`` when it was sent).
        self._flying: dict[int, list[tuple[Any, Reply]]] = {}
        self._hello_task: asyncio.Task[None] | None = None
        self._pump_scheduled = False
        self.down_since: float | None = time.monotonic()
        # Counters for stats() and the benchmark.
        self.batches = 0
        self.inputs_sent = 0
        self.sizes: Counter[int] = Counter()
        self.lost = 0  # inputs failed with OutcomeUnknown: lost, timed out or abandoned at close
        self.timed_out = 0  # of those, the inputs of calls with no reply within call_timeout
        self.refused = 0
        #: Seconds from losing the shard (or, first, from creating the link) to its hello.
        self.gaps: list[float] = []

    # -- submitting ------------------------------------------------------------------

    def submit(self, input: Any, reply: Reply) -> None:
        """Queue ``input``; ``reply`` gets its output or error (raises if refused now)."""
        state = self.state
        if state is LinkState.FAILED:
            raise ShardFailed(self.shard, self.reason or "it cannot start")
        if len(self.queue) >= self.limits.max_queue:
            self.space.clear()
            raise Overloaded(f"shard {self.shard}: {len(self.queue)} inputs queued for it")
        self.queue.append((input, reply))
        if state is LinkState.READY:
            if self.inflight < self.limits.window and not self._pump_scheduled:
                self._schedule_pump()
        elif state is LinkState.DOWN:
            self.resync("a new input arrived")

    def _schedule_pump(self) -> None:
        """Run :meth:`_pump` at the end of this pass of the loop (READY: the loop is known)."""
        self._pump_scheduled = True
        assert self.loop is not None
        self.loop.call_soon(self._pump)

    def _pump(self) -> None:
        """Send what is queued, while calls are free in the window."""
        self._pump_scheduled = False
        limits = self.limits
        queue = self.queue
        while self.state is LinkState.READY and self.inflight < limits.window and queue:
            n = min(len(queue), limits.max_batch)
            items = [queue.popleft() for _ in range(n)]
            self.inflight += 1
            self.batches += 1
            self.inputs_sent += n
            self.sizes[n] += 1
            seq, self.seq = self.seq, self.seq + 1
            assert self.hello is not None
            self._flying[self.batches] = items
            self._spawn(self._call(self.session, self.hello.incarnation, seq, self.batches))
        if len(queue) < limits.max_queue:
            self.space.set()

    async def _call(self, session: int, incarnation: str, seq: int, call: int) -> None:
        inputs = [input for input, _ in self._flying[call]]
        assert self.loop is not None  # READY: resync set it
        # No task of its own (as wait_for's): a timer, cancelled when the reply comes.
        deadline = asyncio.timeout_at(self.loop.time() + self.limits.call_timeout)
        try:
            header = BatchHeader(self.caller, session, incarnation, seq)
            async with deadline:
                reply = await self.transport.run(self.shard, header, inputs)
                reply = _checked(self.shard, reply, len(inputs))
        except Exception as exc:  # lost, timed out, or a transport's bug: never a silent retry
            if (items := self._take(call)) is not None:
                expired = deadline.expired()
                self.timed_out += len(items) if expired else 0
                self._lose(session, items, self._loss(exc, expired, len(items)))
        except asyncio.CancelledError:  # close gave up on it, or the loop is ending
            self._abandon(call)
            raise
        else:
            if (items := self._take(call)) is not None:  # None: close answered them already
                self._answer_reply(session, items, reply)
        finally:  # also when the deadline cancelled the call: the window frees up
            self.inflight -= 1
            if self.state is LinkState.READY and not self._pump_scheduled:
                # After the callers this reply woke have queued their next inputs.
                self._schedule_pump()

    def _answer_reply(
        self, session: int, items: list[tuple[Any, Reply]], reply: BatchReply
    ) -> None:
        if reply.refused is not None:
            self.refused += len(items)
            _fail_all(items, ShardUnavailable(self.shard, reply.refused))
            self._trouble(session, reply.refused)
        elif len(reply.outputs) != len(items):  # with _checked, all a good reply pays for
            self._lose(session, items, self._miscounted(len(reply.outputs), len(items)))
        else:
            _deliver(items, reply)

    def _lose(self, session: int, items: list[tuple[Any, Reply]], error: ShardError) -> None:
        """Fail a call's inputs with ``error`` (they may have run), then say hello again."""
        self._fail_sent(items, error)
        self._trouble(session, error.detail)

    def _fail_sent(self, items: list[tuple[Any, Reply]], error: ShardError) -> None:
        """Fail the inputs of a call that was sent (they may have run): lost, to the stats."""
        self.lost += len(items)
        _fail_all(items, error)

    def _take(self, call: int) -> list[tuple[Any, Reply]] | None:
        """The inputs of ``call``, for the one who answers them; None once they are taken."""
        return self._flying.pop(call, None)

    def _abandon(self, call: int) -> None:
        """Fail ``call``'s inputs (unless answered) as closed with the call in flight."""
        if (items := self._take(call)) is not None:  # no resync: the client is closing
            self._fail_sent(
                items,
                OutcomeUnknown(
                    self.shard,
                    f"the client closed with the call in flight (or its event loop ended): "
                    f"the call's {len(items)} input(s) may or may not have run",
                ),
            )

    def _loss(self, exc: Exception, expired: bool, n: int) -> ShardError:
        """The error for the inputs of a call that raised ``exc`` (``expired``: timed out)."""
        if expired:
            return OutcomeUnknown(
                self.shard,
                f"no reply in {self.limits.call_timeout} s (Limits.call_timeout): the shard may "
                f"be stuck; the call's {n} input(s) may or may not have run",
            )
        if isinstance(exc, ShardError):
            return exc
        return OutcomeUnknown(self.shard, f"the call failed: {exc!r}")

    def _miscounted(self, outputs: int, inputs: int) -> OutcomeUnknown:
        """The error for the inputs of a call whose reply has ``outputs`` outputs, not ``inputs``.

        Which output is whose cannot be told, so none is delivered: the
        transport, or a shard of another corosm version, is at fault.
        """
        return OutcomeUnknown(
            self.shard,
            f"the reply has {outputs} output(s) for the call's {inputs} input(s): no output "
            "can be matched to its input (a transport's bug, or a shard of another corosm "
            "version?); they may or may not have run",
        )

    # -- failure and recovery ----------------------------------------------------------

    def _trouble(self, session: int, reason: str) -> None:
        """A call of ``session`` failed: say hello again, unless a resync already began."""
        if session == self.session and self.state is LinkState.READY:
            log.warning("shard %d: %s; reconnecting", self.shard, reason)
            self.resync(reason)

    def resync(self, reason: str) -> None:
        """Leave READY/DOWN: wait for the shard's hello, then start a new session."""
        self.loop = asyncio.get_running_loop()
        if self.state is LinkState.FAILED or (
            self._hello_task is not None and not self._hello_task.done()
        ):
            return
        if self.down_since is None:
            self.down_since = time.monotonic()
        self.state, self.reason = LinkState.SYNCING, reason
        self.ready.clear()
        self._hello_task = self._spawn(self._hello())

    async def _hello(self) -> None:
        timeout = self.limits.hello_timeout
        try:
            hello = await asyncio.wait_for(self.transport.hello(self.shard), timeout)
        except ShardFailed as exc:
            self._settle(LinkState.FAILED, exc.detail)
            _fail_all(self._drain(), exc)
        except Exception as exc:  # timed out, unreachable, or a transport's bug
            why = f"no answer in {timeout} s" if isinstance(exc, TimeoutError) else _detail(exc)
            self._settle(LinkState.DOWN, why)
            _fail_all(self._drain(), ShardUnavailable(self.shard, f"down ({why}); not sent"))
        else:
            self.hello, self.session, self.seq = hello, self.session + 1, 0
            if self.down_since is not None:
                self.gaps.append(time.monotonic() - self.down_since)
                self.down_since = None
            self._settle(LinkState.READY, None)
            self._pump()

    def _settle(self, state: LinkState, reason: str | None) -> None:
        self.state, self.reason = state, reason
        self.ready.set()
        if state is not LinkState.READY:
            log.error("shard %d is %s: %s", self.shard, state.value, reason)

    def _drain(self) -> list[tuple[Any, Reply]]:
        items = list(self.queue)
        self.queue.clear()
        self.space.set()
        return items

    # -- tasks -------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        assert self.loop is not None  # resync set it before the first task
        task = self.loop.create_task(coro)
        self._tasks.add(task)  # a reference, so that the task is not collected mid-way
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self, error: BaseException, wait: float) -> None:
        """Fail what is queued with ``error``; give calls in flight ``wait`` s, then abandon them.

        An abandoned call's inputs fail with OutcomeUnknown, and so do those of
        calls still in flight when close itself is cancelled.
        """
        self.state = LinkState.FAILED if self.state is LinkState.FAILED else LinkState.DOWN
        if self._hello_task is not None:
            self._hello_task.cancel()  # a shard still restarting is not waited for
        _fail_all(self._drain(), error)
        tasks = [t for t in self._tasks if not t.done()]
        try:
            if tasks:
                await asyncio.wait(tasks, timeout=wait)
        finally:  # cancelled or not: no input is left without an outcome
            for call in list(self._flying):
                self._abandon(call)
            for task in tasks:
                task.cancel()

    def health(self) -> str | None:
        if self.state is LinkState.READY:
            return None
        return f"shard {self.shard} {self.state.value}: {self.reason}"

    def stats(self) -> dict[str, float]:
        p = f"shard{self.shard}_"
        return {
            p + "ready": float(self.state is LinkState.READY),
            p + "queued": len(self.queue),
            p + "inflight_calls": self.inflight,
            p + "batches": self.batches,
            p + "inputs_sent": self.inputs_sent,
            p + "inputs_lost": self.lost,
            p + "inputs_timed_out": self.timed_out,
            p + "inputs_refused": self.refused,
            p + "restarts_seen": max(0, len(self.gaps) - 1),
            p + "last_gap_s": self.gaps[-1] if len(self.gaps) > 1 else 0.0,
        }


def _checked(shard: int, reply: object, inputs: int) -> BatchReply:
    """``reply``, if its fields have the types :class:`BatchReply` declares; else OutcomeUnknown.

    Anything else (None, another object, a BatchReply whose ``outputs`` is
    not a list) is a transport's bug, and no input of the call can be
    answered from it: the call is lost, as one that raised is. A reply with
    the wrong number of outputs is checked later (``_answer_reply``).
    """
    expected = "a corosm.shards.host.BatchReply"
    if isinstance(reply, BatchReply):
        outputs: object = reply.outputs
        errors: object = reply.errors
        refused: object = reply.refused
        if (
            isinstance(outputs, list)
            and isinstance(errors, dict)
            and all(isinstance(error, BaseException) for error in errors.values())
            and (refused is None or isinstance(refused, str))
        ):
            return reply
        expected = (
            "a BatchReply with outputs a list, errors a dict of exceptions, refused a str or None"
        )
    try:
        shown = f"{reply!r:.100}"
    except Exception:  # a broken __repr__: its type still says what came back
        shown = f"a {type(reply).__name__} whose repr() failed"
    raise OutcomeUnknown(
        shard,
        f"the transport answered the call with {shown}, where {expected} was expected (a "
        f"transport's bug?): the call's {inputs} input(s) may or may not have run",
    )


def _detail(exc: BaseException) -> str:
    return exc.detail if isinstance(exc, ShardError) else f"{type(exc).__name__}: {exc}"


def _deliver(items: list[tuple[Any, Reply]], reply: BatchReply) -> None:
    errors = reply.errors
    for index, ((_, sink), output) in enumerate(zip(items, reply.outputs, strict=True)):
        error = errors.get(index) if errors else None
        _answer(sink, output, error)


def _fail_all(items: Sequence[tuple[Any, Reply]], error: BaseException) -> None:
    for _, sink in items:
        _answer(sink, None, error)


def _answer(sink: Reply, output: Any, error: BaseException | None) -> None:
    if isinstance(sink, asyncio.Future):
        if not sink.done():
            if error is None:
                sink.set_result(output)
            else:
                sink.set_exception(error)
        return
    try:
        sink(output, error)
    except Exception:  # a front end's bug must not stop the other replies
        log.exception("reply callback %r failed", sink)


class ShardedClient(Generic[I, O]):
    """Routes inputs of ``machine`` to its shards over ``transport`` (module docs).

    It has the submit interface of :class:`corosm.runtime.Runtime`
    (``submit``, ``submit_nowait``, ``submit_callback``, ``stats``,
    ``health``, ``machine``), so a front end can serve it in place of one host.
    As there, the submit methods must be called on the thread of the loop
    that connected it; from another thread they raise :class:`UsageError`.
    """

    def __init__(
        self,
        machine: Machine[Any, I, O],
        transport: Transport,
        shards: int,
        limits: Limits | None = None,
    ) -> None:
        self.machine = machine
        self.router: Router[I] = Router(machine, shards)
        if not isinstance(transport, Transport):
            raise UsageError(
                f"transport must have the methods of corosm.shards.Transport (hello, run, "
                f"health, stats, close), not {transport!r:.60}"
            )
        if limits is not None and not isinstance(limits, Limits):
            raise UsageError(f"limits must be a corosm.shards.Limits or None, not {limits!r:.60}")
        self.transport = transport
        self.limits = limits or Limits()
        self.caller = uuid.uuid4().hex
        self.links = [ShardLink(transport, i, self.caller, self.limits) for i in range(shards)]
        # The loop thread's ident while inputs are accepted, else 0 (as Runtime's), and
        # the loop: asyncio.get_running_loop() makes a getpid() system call on 3.11.
        self._accepting = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Whether there is nothing (left) to close: until connect, and once a close finished.
        self._closed = True
        #: While a close runs, an event set when it ends (finished, failed or cancelled).
        self._closing: asyncio.Event | None = None

    @property
    def shards(self) -> int:
        return len(self.links)

    async def connect(self) -> None:
        """Say hello to every shard; return when each is ready, down or failed (bounded)."""
        self._loop = asyncio.get_running_loop()
        self._accepting = threading.get_ident()
        self._closed = False
        for link in self.links:
            link.resync("connecting")
        await asyncio.gather(*(link.ready.wait() for link in self.links))

    async def close(self) -> None:
        """Stop accepting inputs, answer every input handed over, close the transport.

        Inputs still queued fail at once with :class:`Stopped` (they were not
        sent). Each call in flight gets its reply, or fails its inputs with
        OutcomeUnknown once ``Limits.call_timeout`` has passed since it was
        sent, as any call does: so close waits at most ``call_timeout`` for
        calls (60 s by default), then for the transport's close, which the
        transport bounds (:meth:`corosm.shards.ray.RayTransport.close`,
        :meth:`corosm.shards.local.LocalTransport.close`: 30 s per shard,
        all at once). When close returns, or is cancelled, every input
        handed to the client has its one outcome: a call still in flight
        then fails with OutcomeUnknown ("the client closed with the call in
        flight").

        A close (or :meth:`stop`) called while another runs returns when that
        one ends; if that one was cancelled, this one does what it left (the
        transport's close). After a close has finished, close returns at once.
        """
        await self._close(self.limits.call_timeout)

    async def stop(self, timeout: float = 30.0) -> None:
        """:meth:`close` under :class:`~corosm.runtime.Runtime`'s name, calls given ``timeout`` s.

        As ``Runtime.stop(timeout)`` fails what is unfinished after ``timeout``
        seconds with Stopped, calls still in flight after ``timeout`` seconds
        (or ``call_timeout``, if that ends them first) fail with OutcomeUnknown:
        they were sent, so they may have run. The transport's close comes after.
        """
        await self._close(check_seconds("timeout", timeout))

    async def _close(self, wait: float) -> None:
        while self._closing is not None:  # another close runs: this one returns when it ends
            await self._closing.wait()
        if self._closed:  # never connected, or closed already (a close cut short is not)
            return
        ended = self._closing = asyncio.Event()
        self._accepting = 0
        self._loop = None
        try:
            stopped = Stopped("the sharded client is closing")
            await asyncio.gather(*(link.close(stopped, wait) for link in self.links))
            await self.transport.close()
            self._closed = True
        finally:
            self._closing = None
            ended.set()

    async def __aenter__(self) -> ShardedClient[I, O]:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- submitting ------------------------------------------------------------------

    def submit_callback(self, input: I, callback: ReplyCallback, *, now: bool = False) -> None:
        """Route and queue ``input``; ``callback(output, None)`` or ``callback(None, error)``.

        Raises at once (without calling back) a :class:`ShardingError` when
        the input cannot go to one shard, :class:`Overloaded` when its shard's
        queue is full, :class:`ShardFailed` when its shard cannot start,
        :class:`Stopped` when the client is closed and :class:`UsageError`
        when called off the loop's thread. ``now`` is accepted for
        the front ends' sake and ignored: every input crosses to its shard.
        """
        if self._accepting != threading.get_ident():
            raise self._refusal()
        self.links[self.router.shard_for(input)].submit(input, callback)

    def submit_nowait(self, input: I) -> asyncio.Future[O]:
        """Route and queue ``input``; return a future of its output (raises as above)."""
        loop = self._loop
        if loop is None or self._accepting != threading.get_ident():
            raise self._refusal()
        link = self.links[self.router.shard_for(input)]
        future: asyncio.Future[O] = loop.create_future()
        link.submit(input, future)
        return future

    async def submit(self, input: I) -> O:
        """Run ``input`` on its shard and return its output, waiting for queue space."""
        loop = self._loop
        if loop is None or self._accepting != threading.get_ident():
            raise self._refusal()
        link = self.links[self.router.shard_for(input)]
        future: asyncio.Future[O] = loop.create_future()
        while True:
            if not self._accepting:
                raise Stopped("the sharded client is not running")
            try:
                link.submit(input, future)
            except Overloaded:
                await link.space.wait()
                continue
            return await future

    def _refusal(self) -> UsageError:
        """Why a submit was refused: the client is not running, or the call is off its thread."""
        if not self._accepting:
            return Stopped("the sharded client is not running")
        return off_loop_thread("client")

    # -- observability ---------------------------------------------------------------------

    def health(self) -> str | None:
        """None when every shard is ready, else why not, one shard per clause."""
        reasons = [r for link in self.links if (r := link.health()) is not None]
        return "; ".join(reasons) if reasons else None

    def stats(self) -> dict[str, float]:
        """The client's counters: totals, then per shard (``shard3_batches``, ...)."""
        stats: dict[str, float] = {
            "shards": self.shards,
            "shards_ready": sum(link.state is LinkState.READY for link in self.links),
            "batches_sent": sum(link.batches for link in self.links),
            "inputs_sent": sum(link.inputs_sent for link in self.links),
            "inputs_lost": sum(link.lost for link in self.links),
            "inputs_timed_out": sum(link.timed_out for link in self.links),
            "inputs_refused": sum(link.refused for link in self.links),
            "queue_depth": sum(len(link.queue) for link in self.links),
        }
        sent = stats["batches_sent"]
        stats["mean_batch"] = stats["inputs_sent"] / sent if sent else 0.0
        for link in self.links:
            stats.update(link.stats())
        return stats

    def batch_sizes(self) -> Counter[int]:
        """How many calls carried each number of inputs, over all shards."""
        total: Counter[int] = Counter()
        for link in self.links:
            total.update(link.sizes)
        return total

    async def check_health(self, timeout: float = 10.0) -> dict[int, str | None]:
        """Ask every shard itself (bounded): None for a healthy one, else why not."""
        check_seconds("timeout", timeout)

        async def one(link: ShardLink) -> str | None:
            if link.state is LinkState.FAILED:
                return link.health()
            try:
                reason = await asyncio.wait_for(self.transport.health(link.shard), timeout)
            except ShardError as exc:
                return str(exc)
            except TimeoutError:
                return f"shard {link.shard}: no health answer in {timeout} s"
            return None if reason is None else f"shard {link.shard}: {reason}"

        answers = await asyncio.gather(*(one(link) for link in self.links))
        return dict(enumerate(answers))
