"""The production host: drives a stepper on asyncio.

Theory of operation
-------------------
One loop thread runs every handler step. Front ends call
:meth:`Runtime.submit_nowait` (or ``await submit``), which puts the input in a
bounded inbox and schedules one *turn* of the runtime with ``call_soon``.
:meth:`Runtime.submit_callback` does the same for a front end that wants its
answer by a direct call, inside the turn that produced it, rather than
through an asyncio future (whose done-callbacks cost a handle and another
loop pass per input).
Executors hand completions back through a thread-safe sink that wakes the
loop only when its buffer goes from empty to non-empty, so a batch of
completions (a journal group commit, a burst of finished calls) crosses
threads once.

A turn is a short sequence of named phases, in this order::

    deliver completions   -> the stepper applies appends, resumes handlers
    admit inputs          -> new handlers start, up to max_inflight at once
    dispatch actions      -> StartIO grouped per executor (one submit each),
                             CancelIO, replies resolve the callers' futures
                             or call their callbacks

Because every StartIO of a turn reaches its executor in one ``submit`` call,
the journal sees all appends of a turn as one batch, and because completions
are delivered in the order the executor posted them, appends are applied in
log order. Replies to writes are released only by their append's completion,
i.e. after the fsync (the ``beforeSleep`` rule of Redis).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeAlias, TypeVar

from corosm.core.effects import Append, Call, Effect, Sleep
from corosm.core.events import CancelIO, Reply, ReplyError, StartIO
from corosm.core.machine import Machine
from corosm.core.stepper import NO_STATE, Stepper
from corosm.errors import Overloaded, Stopped, UsageError
from corosm.io.executor import Completion, Executor
from corosm.io.memory import MemoryJournalExecutor
from corosm.io.threads import ThreadPoolCallExecutor
from corosm.io.timers import LoopTimerExecutor

S = TypeVar("S")
I = TypeVar("I")
O = TypeVar("O")

log = logging.getLogger("corosm.runtime")

ReplyCallback: TypeAlias = Callable[[Any, "BaseException | None"], None]
"""``fn(output, error)``: called once per input, ``error`` None on success."""


class Runtime(Generic[S, I, O]):
    """Runs ``machine`` on the current asyncio loop (see the module docs).

    ``executors`` maps effect types to executors; ``Append``, ``Call`` and
    ``Sleep`` get defaults (an in-memory journal, a thread pool, loop timers)
    unless given. ``state`` is the starting state (e.g. what recovery rebuilt);
    by default the machine's initial state. At most ``max_queue`` inputs wait
    in the inbox and at most ``max_inflight`` handlers run (or are suspended)
    at once. One turn delivers at most ``turn_completions`` completions, so
    that the loop polls its sockets between slices of a big batch.
    """

    def __init__(
        self,
        machine: Machine[S, I, O],
        *,
        state: S = NO_STATE,
        executors: Mapping[type[Effect[Any]], Executor] | None = None,
        max_queue: int = 10_000,
        max_inflight: int = 10_000,
        call_threads: int = 16,
        turn_completions: int = 16,
    ) -> None:
        if max_queue < 1 or max_inflight < 1 or turn_completions < 1:
            raise UsageError("max_queue, max_inflight and turn_completions must be at least 1")
        self.machine = machine
        self.stepper: Stepper[S, I, O] = Stepper(machine, state)
        routes: dict[type[Effect[Any]], Executor] = {
            Append: MemoryJournalExecutor(),
            Call: ThreadPoolCallExecutor(call_threads),
            Sleep: LoopTimerExecutor(),
        }
        routes.update(executors or {})
        self._routes = routes
        self._executors: list[Executor] = list(dict.fromkeys(routes.values()))
        self.max_queue = max_queue
        self.max_inflight = max_inflight
        self.turn_completions = turn_completions
        # A client is the caller's future or its ReplyCallback.
        self._inbox: deque[tuple[asyncio.Future[O] | ReplyCallback, I]] = deque()
        self._completed: list[Completion] = []
        self._completed_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._turn_scheduled = False
        self._in_turn = False
        self._running = False
        self._space = asyncio.Event()
        self._idle = asyncio.Event()
        self.completions_delivered = 0
        self.turns = 0

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Start the executors and begin accepting inputs."""
        if self._loop is not None:
            raise UsageError("Runtime.start() called twice")
        self._loop = asyncio.get_running_loop()
        for executor in self._executors:
            executor.start(self._post)
        self._running = True
        self._space.set()

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting inputs, let in-flight ones finish, then close executors.

        Inputs still unfinished after ``timeout`` seconds fail with ``Stopped``.
        """
        if self._loop is None:
            return
        self._running = False
        if not self._is_idle():
            self._idle.clear()
            self._schedule_turn()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout)
            except TimeoutError:
                log.warning("stopping with %d inputs unfinished", self.inflight + len(self._inbox))
                self.stepper.close(Stopped(f"the runtime stopped after {timeout} s"))
                self._dispatch_actions()
        loop = self._loop
        for executor in self._executors:
            await loop.run_in_executor(None, executor.close)
        while self._inbox:
            client, _ = self._inbox.popleft()
            _fail(client, Stopped("the runtime stopped before this input ran"))
        self._loop = None

    async def __aenter__(self) -> Runtime[S, I, O]:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- submitting inputs -----------------------------------------------------------

    def submit_nowait(self, input: I) -> asyncio.Future[O]:
        """Queue ``input``; return a future for its output.

        Raises :class:`Overloaded` when the inbox is full and :class:`Stopped`
        when the runtime is not running. Call it on the loop thread.
        """
        loop = self._loop
        if loop is None or not self._running:
            raise Stopped("the runtime is not running")
        if len(self._inbox) >= self.max_queue:
            self._space.clear()
            raise Overloaded(f"input queue full ({self.max_queue} waiting)")
        future: asyncio.Future[O] = loop.create_future()
        self._inbox.append((future, input))
        self._schedule_turn()
        return future

    def submit_callback(self, input: I, callback: ReplyCallback, *, now: bool = False) -> None:
        """Queue ``input``; call ``callback(output, None)`` or ``callback(None, error)``.

        The callback runs exactly once, on the loop thread, inside the turn
        that finished the input (or when ``stop`` gives up on it, with
        :class:`Stopped`). It must not raise; if it does, the error is
        logged and the loop goes on. Raises :class:`Overloaded` and
        :class:`Stopped` like :meth:`submit_nowait`, without calling it.

        ``now=True`` steps the input in this very call when the runtime is
        between turns and has room under ``max_inflight``, so an input that
        finishes without I/O (a read) calls back before this returns instead
        of waiting for the next loop pass behind everything queued. It may
        overtake inputs still in the inbox: use it only for inputs whose
        order against other clients' inputs does not matter. Effects it
        starts go to their executors at once, outside the turn's batch.
        """
        if self._loop is None or not self._running:
            raise Stopped("the runtime is not running")
        if now and not self._in_turn and self.inflight < self.max_inflight:
            self._in_turn = True  # a callback that submits again queues, never nests
            try:
                self.stepper.input(callback, input)
                self._dispatch_actions()
            finally:
                self._in_turn = False
            return
        if len(self._inbox) >= self.max_queue:
            self._space.clear()
            raise Overloaded(f"input queue full ({self.max_queue} waiting)")
        self._inbox.append((callback, input))
        if not self._turn_scheduled:
            self._turn_scheduled = True
            self._loop.call_soon(self._turn)

    async def submit(self, input: I) -> O:
        """Run ``input`` and return its output, waiting for queue space if needed."""
        while True:
            try:
                future = self.submit_nowait(input)
            except Overloaded:
                await self._space.wait()
                continue
            return await future

    # -- observability ------------------------------------------------------------------

    @property
    def inflight(self) -> int:
        """Inputs admitted and not finished (suspended, or waiting for their key)."""
        return self.stepper.suspended + self.stepper.waiting_for_key

    def stats(self) -> dict[str, float]:
        """Counters and gauges, flat, for metrics and tests."""
        stepper = self.stepper
        stats: dict[str, float] = {
            "inputs_received": stepper.inputs_received,
            "inputs_processed": stepper.inputs_done + stepper.inputs_failed,
            "inputs_failed": stepper.inputs_failed,
            "suspended": stepper.suspended,
            "waiting_for_key": stepper.waiting_for_key,
            "queue_depth": len(self._inbox),
            "completions": self.completions_delivered,
            "pending_requests": stepper.pending_requests,
            "appends_applied": stepper.appends_applied,
            "turns": self.turns,
        }
        for executor in self._executors:
            more = getattr(executor, "stats", None)
            if more is not None:
                stats.update(more())
        return stats

    def health(self) -> str | None:
        """None when every executor is healthy, else the first reason why not."""
        for executor in self._executors:
            check = getattr(executor, "health", None)
            reason = check() if check is not None else None
            if reason is not None:
                return str(reason)
        return None

    # -- the turn ------------------------------------------------------------------------

    def _post(self, completions: Sequence[Completion]) -> None:
        """The executors' sink: buffer completions, wake the loop once per batch."""
        with self._completed_lock:
            wake = not self._completed
            self._completed.extend(completions)
        if wake and self._loop is not None:
            self._loop.call_soon_threadsafe(self._schedule_turn)

    def _schedule_turn(self) -> None:
        if not self._turn_scheduled and self._loop is not None:
            self._turn_scheduled = True
            self._loop.call_soon(self._turn)

    def _turn(self) -> None:
        self._turn_scheduled = False
        self._in_turn = True
        try:
            self.turns += 1
            if self._deliver_completions():
                # Admit new inputs only with the last slice of a batch: their
                # appends then still reach the journal together, in one submit.
                self._admit_inputs()
            self._dispatch_actions()
        finally:
            self._in_turn = False
        if not self._running and self._is_idle():
            self._idle.set()

    def _deliver_completions(self) -> bool:
        """Deliver the next slice of completions; True when none are left after it."""
        # At most ``turn_completions`` per turn: a group commit of hundreds of
        # records would otherwise make one long loop iteration (apply, resume,
        # reply, socket write for each), and every read arriving meanwhile
        # waits for all of it. The rest goes to the next turn, after the loop
        # has polled the sockets again; order is kept (a FIFO buffer).
        chunk = self.turn_completions
        with self._completed_lock:
            completed = self._completed
            last = len(completed) <= chunk
            if last:
                self._completed = []
            else:
                self._completed = completed[chunk:]
                del completed[chunk:]
                self._schedule_turn()
        complete = self.stepper.complete
        for request, value, error in completed:
            complete(request, value, error)
        self.completions_delivered += len(completed)
        return last

    def _admit_inputs(self) -> None:
        inbox, stepper = self._inbox, self.stepper
        room = self.max_inflight - self.inflight
        while inbox and room > 0:
            client, input = inbox.popleft()
            if isinstance(client, asyncio.Future) and client.cancelled():
                continue  # the caller gave up before the input ran
            stepper.input(client, input)
            room = self.max_inflight - self.inflight
        if len(inbox) < self.max_queue:
            self._space.set()

    def _dispatch_actions(self) -> None:
        batches: dict[int, tuple[Executor, list[tuple[int, Effect[Any]]]]] = {}
        for action in self.stepper.take_actions():
            if type(action) is Reply:  # half of all actions: skip the match's class patterns
                _reply(action.client, action.output)
                continue
            match action:
                case Reply(client, output):  # only a subclass of Reply gets here
                    _reply(client, output)
                case ReplyError(client, error):
                    _fail(client, error)
                case StartIO(request, effect):
                    executor = self._route(effect)
                    if executor is None:
                        error = UsageError(f"no executor is registered for {type(effect).__name__}")
                        self._post([(request, None, error)])
                        continue
                    entry = batches.get(id(executor))
                    if entry is None:
                        batches[id(executor)] = (executor, [(request, effect)])
                    else:
                        entry[1].append((request, effect))
                case CancelIO(request):
                    for executor in self._executors:
                        executor.cancel(request)
        for executor, requests in batches.values():
            try:
                executor.submit(requests)
            except Exception as exc:  # an executor bug must not stop the loop
                log.exception("executor %r failed to accept work", executor)
                self._post([(request, None, exc) for request, _ in requests])

    def _route(self, effect: Effect[Any]) -> Executor | None:
        executor = self._routes.get(type(effect))
        if executor is None:
            for cls in type(effect).__mro__:
                executor = self._routes.get(cls)
                if executor is not None:
                    self._routes[type(effect)] = executor
                    break
        return executor

    def _is_idle(self) -> bool:
        return not self._inbox and self.inflight == 0 and not self._completed


def _call(callback: ReplyCallback, output: Any, error: BaseException | None) -> None:
    try:
        callback(output, error)
    except Exception:  # a front end's bug must not stop the loop or other replies
        log.exception("reply callback %r failed", callback)


def _reply(client: asyncio.Future[Any] | ReplyCallback, output: Any) -> None:
    if isinstance(client, asyncio.Future):
        if not client.done():
            client.set_result(output)
    else:
        _call(client, output, None)


def _fail(client: asyncio.Future[Any] | ReplyCallback, error: BaseException) -> None:
    if isinstance(client, asyncio.Future):
        if not client.done():
            client.set_exception(error)
    else:
        _call(client, None, error)
