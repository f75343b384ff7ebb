"""The production driver of the host: asyncio on one loop thread.

Theory of operation
-------------------
What happens in a turn (deliver completions, admit inputs, dispatch actions,
start a snapshot when one is due) is decided by :class:`~.host.Host`, which
has no threads or clocks; the simulator drives the very same object. This
module only decides *when*: a turn runs from ``call_soon`` whenever there is
something to do, and again right away while a big batch of completions is
being delivered in slices (the loop polls its sockets in between).

Front ends call :meth:`Runtime.submit_callback` (a direct call per reply,
inside the turn that produced it), :meth:`Runtime.submit_nowait` (an asyncio
future) or ``await submit``, all on the loop's thread: a call from any other
thread raises :class:`UsageError` (:func:`off_loop_thread`) before it touches
anything. Executors hand completions back through
:meth:`Runtime._post`, which is thread-safe and wakes the loop only when its
buffer goes from empty to non-empty, so a batch of completions (a journal
group commit, a burst of finished calls) crosses threads once.

Because every StartIO of a turn reaches its executor in one ``submit`` call,
the journal sees all appends of a turn as one batch, and because completions
are delivered in the order the executor posted them, appends are applied in
log order. Replies to writes are released only by their append's completion,
i.e. after the fsync (the ``beforeSleep`` rule of Redis).

Every turn ends by giving way (``os.sched_yield``): an executor's thread
that the turn woke (the journal, handed a batch) or whose I/O has finished
(an fsync done, completions to post) runs then, not when the loop next goes
idle. Where the loop and that thread share a core, it otherwise waits for
the whole pass of the loop, and the disk with it: the loop holds the GIL
throughout, and compiled code seldom offers it (a shorter switch interval
did not help). Where nothing else is ready to run, giving way is one system
call per turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Generic, TypeAlias, TypeVar

from corosm.core.effects import Append, Call, Effect, Sleep
from corosm.core.machine import Machine
from corosm.core.stepper import NO_STATE, Stepper
from corosm.errors import Overloaded, Stopped, UsageError
from corosm.io.executor import Completion, Executor
from corosm.io.journal.recovery import RecoveryReport
from corosm.io.memory import MemoryJournalExecutor
from corosm.io.threads import ThreadPoolCallExecutor
from corosm.io.timers import LoopTimerExecutor
from corosm.runtime.host import (
    DEFAULT_MAX_INFLIGHT,
    DEFAULT_MAX_QUEUE,
    DEFAULT_TURN_COMPLETIONS,
    Host,
    Snapshots,
)

S = TypeVar("S")
I = TypeVar("I")
O = TypeVar("O")

log = logging.getLogger("corosm.runtime")

_FUTURE: Final = asyncio.Future  # bound once: compiled, a module's attribute is a lookup per use
# The loop-thread check of every submit: the cheapest way to know the calling
# thread (on Python 3.11, asyncio._get_running_loop makes a getpid system call).
_get_ident: Final = threading.get_ident


def _no_other_thread() -> None:
    """Giving way where ``os.sched_yield`` does not exist (Windows): nothing to do."""


_give_way: Final[Callable[[], None]] = getattr(os, "sched_yield", _no_other_thread)

ReplyCallback: TypeAlias = Callable[[Any, "BaseException | None"], None]
"""``fn(output, error)``: called once per input, ``error`` None on success."""


def off_loop_thread(name: str, blocking: str = "") -> UsageError:
    """The error of a submit method of ``name`` (``"runtime"``) called off its loop's thread.

    ``blocking`` is an extra hint for code that has no event loop at all.
    """
    return UsageError(
        f"{name}.submit, submit_nowait and submit_callback must be called on the thread "
        f"that runs its event loop, not from thread {threading.current_thread().name!r}: "
        "they are not thread-safe. From another thread, hand the input to that loop: "
        f"asyncio.run_coroutine_threadsafe({name}.submit(input), loop).result(){blocking}"
    )


class Runtime(Generic[S, I, O]):
    """Runs ``machine`` on the current asyncio loop (see the module docs).

    ``executors`` maps effect types to executors; ``Append``, ``Call`` and
    ``Sleep`` get defaults (an in-memory journal, a thread pool, loop timers)
    unless given. ``state`` is the starting state (e.g. what recovery rebuilt);
    by default the machine's initial state. ``snapshots`` is the journal that
    says when a snapshot is due and writes it (None: no snapshots). At most
    ``max_queue`` inputs wait in the inbox and at most ``max_inflight``
    handlers run (or are suspended) at once. One turn delivers at most
    ``turn_completions`` completions, so that the loop polls its sockets
    between slices of a big batch.
    """

    def __init__(
        self,
        machine: Machine[S, I, O],
        *,
        state: S = NO_STATE,
        executors: Mapping[type[Effect[Any]], Executor] | None = None,
        snapshots: Snapshots | None = None,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        call_threads: int = 16,
        turn_completions: int = DEFAULT_TURN_COMPLETIONS,
    ) -> None:
        routes: dict[type[Effect[Any]], Executor] = {
            Append: MemoryJournalExecutor(),
            Call: ThreadPoolCallExecutor(call_threads),
            Sleep: LoopTimerExecutor(),
        }
        routes.update(executors or {})
        self.machine = machine
        self.host: Host[S, I, O] = Host(
            machine,
            executors=routes,
            reply=_answer,
            state=state,
            snapshots=snapshots,
            max_queue=max_queue,
            max_inflight=max_inflight,
            turn_completions=turn_completions,
        )
        self.stepper: Stepper[S, I, O] = self.host.stepper
        self.stepper.reads_stopped = True  # until start(): see reader
        #: What recovery found, when :func:`corosm.open` started this runtime on a journal.
        self.recovery: RecoveryReport | None = None
        self._completed: list[Completion] = []
        self._completed_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._turn_scheduled = False
        # The loop thread's ident while inputs are accepted, else 0 (no thread's):
        # a submit compares it with its own thread's, one test for both rules.
        self._accepting = 0
        self._stopped = False  # stop() ran: its executors are closed for good
        self._space = asyncio.Event()
        self._idle = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Start the executors and begin accepting inputs."""
        if self._loop is not None:
            raise UsageError("Runtime.start() called twice")
        if self._stopped:
            raise UsageError(
                "a stopped Runtime cannot start again: make a new one (with corosm.open, "
                "open the data directory again)"
            )
        self._loop = asyncio.get_running_loop()
        self.host.start(self._post)
        self._accepting = _get_ident()
        self.stepper.reads_stopped = False
        self._space.set()

    async def stop(self, timeout: float = 30.0, close_timeout: float = 30.0) -> None:
        """Stop accepting inputs, let in-flight ones finish, then close executors.

        Inputs still unfinished after ``timeout`` seconds fail with ``Stopped``.
        The executors then close one after another, in order, on a daemon
        thread of the runtime's own (:func:`_close_executors`). If they have not
        all closed within ``close_timeout`` seconds (a journal stuck on a disk
        that does not answer), stop logs a warning naming those still open and
        returns anyway; the thread goes on closing them, and the interpreter
        does not wait for it at exit. A close that raises does not keep the
        others from closing; stop raises the first such error at the end.
        """
        if self._loop is None:
            return
        self._stopped = True
        self._accepting = 0
        self.stepper.reads_stopped = True
        if not self._is_idle():
            self._idle.clear()
            self._schedule_turn()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout)
            except TimeoutError:
                log.warning("stopping with %d inputs unfinished", self.inflight + self.host.queued)
                self.host.close(Stopped(f"the runtime stopped after {timeout} s"))
        try:
            await _close_executors(self._loop, self.host.executors, close_timeout)
        finally:
            self.host.close(Stopped("the runtime stopped before this input ran"))
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
        when the runtime is not running. Call it on the loop's thread: from
        any other it raises :class:`UsageError` and queues nothing (from
        another thread, ``asyncio.run_coroutine_threadsafe(runtime.submit(input),
        loop)``; without an event loop, :func:`corosm.open_blocking`).
        """
        loop = self._loop
        if loop is None or self._accepting != _get_ident():
            raise self._refusal()
        future: asyncio.Future[O] = loop.create_future()
        self._offer(future, input)
        return future

    def submit_callback(self, input: I, callback: ReplyCallback, *, now: bool = False) -> None:
        """Queue ``input``; call ``callback(output, None)`` or ``callback(None, error)``.

        The callback runs exactly once, on the loop thread, inside the turn
        that finished the input (or when ``stop`` gives up on it, with
        :class:`Stopped`). It must not raise; if it does, the error is
        logged and the loop goes on. Raises :class:`Overloaded`,
        :class:`Stopped` and, called off the loop's thread, :class:`UsageError`
        like :meth:`submit_nowait`, without calling it.

        ``now=True`` steps the input in this very call when the runtime is
        between turns and has room under ``max_inflight`` (see
        :meth:`Host.step_now`), so an input that finishes without I/O (a
        read) calls back before this returns instead of waiting for the next
        loop pass behind everything queued. It may overtake inputs still in
        the inbox: use it only for inputs whose order against other clients'
        inputs does not matter. Effects it starts go to their executors at
        once, outside the turn's batch.
        """
        if self._accepting != _get_ident():
            raise self._refusal()
        if now and self.host.step_now(callback, input):
            return
        self._offer(callback, input)

    @property
    def reader(self) -> Callable[[I], O] | None:
        """``read(input) -> output`` for ``Order.READ`` inputs, or None if there is none.

        The read runs in the call, from the applied state, through
        ``Machine.read``: no handler, no callback, no future. It linearizes
        when it runs, as any read does, and may run at any moment on the
        loop thread, inside a reply callback too. It raises what
        ``Machine.read`` raised (as a :class:`HandlerError` unless a corosm
        error) and :class:`Stopped` once the runtime has stopped. None when
        the machine defines no ``read`` or its policy is not INTERLEAVE (a
        key could be busy): submit the input instead.

        Call it on the loop thread only, as the submit methods. Unlike them
        it does not check: the check would be a second call around every
        read, and would cost a pipelined read several percent.
        """
        # Stepper.query itself: it raises Stopped while the runtime is not
        # running (reads_stopped), so a read is one call, not two.
        return self.host.query

    async def submit(self, input: I) -> O:
        """Run ``input`` and return its output, waiting for queue space if needed.

        Await it on the loop's thread (:meth:`submit_nowait` says why, and
        what to do from another thread).
        """
        while True:
            try:
                future = self.submit_nowait(input)
            except Overloaded:
                await self._space.wait()
                continue
            return await future

    def _refusal(self) -> UsageError:
        """Why a submit was refused: the runtime is not running, or the call is off its thread."""
        if not self._accepting:
            return Stopped("the runtime is not running")
        return off_loop_thread(
            "runtime", "; code without an event loop can use corosm.open_blocking instead"
        )

    def _offer(self, client: asyncio.Future[Any] | ReplyCallback, input: I) -> None:
        try:
            self.host.offer(client, input)
        except Overloaded:
            self._space.clear()
            raise
        if not self._turn_scheduled:  # the call only when needed: most inputs of a pass find it set
            self._schedule_turn()

    # -- observability ------------------------------------------------------------------

    @property
    def inflight(self) -> int:
        """Inputs admitted and not finished (suspended, or waiting for their key)."""
        return self.host.inflight

    @property
    def turns(self) -> int:
        return self.host.turns

    @property
    def completions_delivered(self) -> int:
        return self.host.completions_delivered

    def stats(self) -> dict[str, float]:
        """Counters and gauges, flat, for metrics and tests."""
        return self.host.stats()

    def health(self) -> str | None:
        """None when every executor is healthy, else the first reason why not."""
        return self.host.health()

    # -- driving the host ------------------------------------------------------------------

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
        with self._completed_lock:
            completed, self._completed = self._completed, []
        if self.host.turn(completed):
            self._schedule_turn()  # more completions: after the loop polls its sockets
        _give_way()  # to the executor threads (module docs): the journal starts its batch now
        if self.host.queued < self.host.max_queue:
            self._space.set()
        if not self._accepting and self._is_idle():
            self._idle.set()

    def _is_idle(self) -> bool:
        return self.host.idle() and not self._completed


async def _close_executors(
    loop: asyncio.AbstractEventLoop, executors: Sequence[Executor], timeout: float
) -> None:
    """Close ``executors`` in order on a daemon thread; wait at most ``timeout`` s for it.

    Not the loop's default executor: ``asyncio.run`` joins that one's threads
    at exit with no bound, so a close that never returns would keep the
    process from ever exiting. Raises the first error a close raised.
    """
    done = loop.create_future()
    closed: list[Executor] = []
    errors: list[Exception] = []

    def close_all() -> None:
        try:
            for executor in executors:
                try:
                    executor.close()
                except Exception as exc:
                    errors.append(exc)
                closed.append(executor)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                loop.call_soon_threadsafe(done.set_result, None)

    threading.Thread(target=close_all, name="corosm-close", daemon=True).start()
    await asyncio.wait((done,), timeout=timeout)
    if not done.done():
        still_open = [repr(executor) for executor in executors[len(closed) :]]
        log.warning(
            "stopping with executor(s) %s not closed after %s s: left to close on their own",
            ", ".join(still_open),
            timeout,
        )
    if errors:
        raise errors[0]


def _answer(
    client: asyncio.Future[Any] | ReplyCallback, output: Any, error: BaseException | None
) -> None:
    """The host's ``reply``: resolve the caller's future, or call its callback."""
    if isinstance(client, _FUTURE):
        if not client.done():
            if error is None:
                client.set_result(output)
            else:
                client.set_exception(error)
        return
    try:
        client(output, error)
    except Exception:  # a front end's bug must not stop the loop or other replies
        log.exception("reply callback %r failed", client)
