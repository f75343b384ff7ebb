"""The stepper: runs a machine's handlers as coroutines, one step at a time.

Theory of operation
-------------------
The stepper owns the state, the suspended handlers and the started effects;
it does no I/O. A host feeds it events and carries out the actions it
returns (see :mod:`corosm.core.events`):

* ``InputArrived(client, input)`` starts ``machine.handle(ctx, input)`` as a
  coroutine and runs it until it finishes or suspends. Under the PER_KEY and
  EXCLUSIVE policies an input whose key is busy waits in a queue instead.
* ``ctx.start(effect)`` inside a handler emits ``StartIO(request, effect)``
  and returns a future; awaiting an unfinished future suspends the handler
  (the coroutine yields a ``Wait`` trap to the stepper).
* ``IOCompleted(request, ...)`` completes that future. For a journal
  ``Append`` it first runs ``machine.apply(state, record)``, so the state
  follows the order in which the host delivers append completions, which is
  log order. Then, if the waiting handler's wait is satisfied, the handler
  resumes at once and runs until it suspends again or finishes.
* A finished handler emits ``Reply(client, output)``; one that raised emits
  ``ReplyError(client, error)``. Nothing else is affected.

Everything is deterministic: request numbers are a counter and handlers run
in event order, so the same events give the same actions.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Coroutine, Hashable
from types import CoroutineType
from typing import Any, Generic, TypeVar

from corosm.core.context import Context
from corosm.core.effects import Append, Effect
from corosm.core.events import (
    Action,
    CancelIO,
    ClientId,
    Event,
    InputArrived,
    IOCompleted,
    Reply,
    ReplyError,
    StartIO,
)
from corosm.core.futures import Future
from corosm.core.machine import Machine, Policy
from corosm.core.traps import Wait, WaitMode
from corosm.errors import (
    CorosmError,
    EffectCancelled,
    EffectError,
    ForeignAwaitError,
    HandlerError,
    UsageError,
)

S = TypeVar("S")
I = TypeVar("I")
O = TypeVar("O")
T = TypeVar("T")

_EXCLUSIVE_KEY = ("corosm", "exclusive")
NO_STATE: Any = object()
"""Default for a stepper's ``state``: start from ``machine.initial_state()``."""


class _Task:
    """One input's handler while it runs."""

    __slots__ = ("client", "coro", "input", "key", "order", "wait")

    def __init__(
        self,
        client: ClientId,
        input: Any,
        coro: Coroutine[Any, Any, Any],
        key: Hashable | None,
        order: int,
    ) -> None:
        self.order = order
        self.client = client
        self.input = input
        self.coro = coro
        self.key = key
        self.wait: Wait | None = None


class Stepper(Generic[S, I, O]):
    """Drives one machine: events in, actions out (see the module docs)."""

    def __init__(self, machine: Machine[S, I, O], state: S = NO_STATE) -> None:
        self.machine = machine
        self.state: S = machine.initial_state() if state is NO_STATE else state
        self.ctx: Context[S] = Context(self)
        self._policy = machine.policy
        self._actions: list[Action] = []
        self._futures: dict[int, Future[Any]] = {}
        self._last_request = 0
        # Busy keys (PER_KEY, EXCLUSIVE): key -> inputs waiting for it, in order.
        self._busy: dict[Hashable, deque[tuple[ClientId, I]]] = {}
        # Suspended handlers, so that close() can fail their inputs.
        self._suspended: set[_Task] = set()
        # Counters, for metrics and tests.
        self.inputs_received = 0
        self.inputs_done = 0
        self.inputs_failed = 0
        self.completions = 0
        self.suspended = 0
        self.waiting_for_key = 0
        self.appends_applied = 0
        # The value of the last applied append (the journal's LSN): where a snapshot stands.
        self.last_append_value: Any = None

    # -- events in -------------------------------------------------------------

    def feed(self, *events: Event) -> list[Action]:
        """Process ``events`` in order and return the actions they caused."""
        for event in events:
            match event:
                case InputArrived(client, input):
                    self.input(client, input)
                case IOCompleted(request, value, error):
                    self.complete(request, value, error)
                case _:
                    raise UsageError(
                        f"Stepper.feed() takes InputArrived and IOCompleted events, not {event!r}"
                    )
        return self.take_actions()

    def input(self, client: ClientId, input: I) -> None:
        """An input arrived from ``client`` (the event ``InputArrived``)."""
        self.inputs_received += 1
        policy = self._policy
        if policy is Policy.INTERLEAVE:
            self._run_new(client, input, None)
            return
        try:
            key = _EXCLUSIVE_KEY if policy is Policy.EXCLUSIVE else self.machine.key(input)
            queue = None if key is None else self._busy.get(key)
        except Exception as exc:  # key() raised, or returned something unhashable
            self._fail(client, exc, where=f"{type(self.machine).__name__}.key()")
            return
        if key is None:
            self._run_new(client, input, None)
            return
        if queue is not None:
            queue.append((client, input))
            self.waiting_for_key += 1
            return
        self._busy[key] = deque()
        if self._run_new(client, input, key):
            self._release(key)

    def complete(self, request: int, value: Any = None, error: BaseException | None = None) -> None:
        """Request ``request`` finished (the event ``IOCompleted``)."""
        self.completions += 1
        future = self._futures.pop(request, None)
        if future is None:
            return  # cancelled earlier, or not ours: a late completion is ignored
        effect = future.effect
        if error is not None:
            future.set_error(_as_effect_error(effect, error))
        elif type(effect) is Append:
            try:
                self.state = self.machine.apply(self.state, effect.record)
            except Exception as exc:
                failure = HandlerError(f"apply() failed on a journaled record: {exc!r}")
                failure.__cause__ = exc
                future.set_error(failure)
            else:
                self.appends_applied += 1
                self.last_append_value = value
                future.set_result(value)
        else:
            future.set_result(value)
        task: _Task | None = future.waiter  # type: ignore[assignment]
        if task is None:
            return
        wait = task.wait
        if wait is None:
            return
        waited = wait.futures
        # A wait on one future waits on this one, which just finished: satisfied.
        if len(waited) != 1 and not _satisfied(wait):
            return
        task.wait = None
        for other in waited:
            other.waiter = None
        self.suspended -= 1
        self._suspended.discard(task)
        if self._step(task) and task.key is not None:
            self._release(task.key)

    def take_actions(self) -> list[Action]:
        """Return the actions produced since the last call, and forget them."""
        actions = self._actions
        self._actions = []
        return actions

    # -- services for Context --------------------------------------------------

    def start_effect(self, effect: Effect[T]) -> Future[T]:
        """Begin ``effect``: emit ``StartIO`` and return its future."""
        self._last_request += 1
        request = self._last_request
        future: Future[T] = Future(request, effect)
        self._futures[request] = future
        self._actions.append(StartIO(request, effect))
        return future

    def cancel_futures(self, futures: tuple[Future[Any], ...]) -> None:
        """Cancel the unfinished ``futures``, except journal appends."""
        for future in futures:
            if future.done() or type(future.effect) is Append:
                continue
            if self._futures.pop(future.request, None) is None:
                continue
            future.set_error(EffectCancelled(f"{future.effect!r} was cancelled"))
            future.waiter = None
            self._actions.append(CancelIO(future.request))

    def close(self, error: CorosmError) -> None:
        """Abandon every running or waiting input: each fails with ``error``.

        Suspended handlers are closed (their ``finally`` blocks run); started
        effects are forgotten, so late completions are ignored. For a host
        that stops before its handlers finished.
        """
        for task in sorted(self._suspended, key=lambda t: t.order):
            task.coro.close()
            self.inputs_failed += 1
            self._actions.append(ReplyError(task.client, error))
        for queue in self._busy.values():
            for client, _input in queue:
                self.inputs_failed += 1
                self._actions.append(ReplyError(client, error))
        self._suspended.clear()
        self._busy.clear()
        self._futures.clear()
        self.suspended = 0
        self.waiting_for_key = 0

    # -- introspection -----------------------------------------------------------

    @property
    def pending_requests(self) -> int:
        """Effects started and not yet completed or cancelled."""
        return len(self._futures)

    def idle(self) -> bool:
        """True when no handler is running or waiting and no effect is pending."""
        return not self.suspended and not self._busy and not self._futures

    # -- running handlers ----------------------------------------------------------

    def _run_new(self, client: ClientId, input: I, key: Hashable | None) -> bool:
        """Start a handler for ``input``; True if it finished without suspending."""
        try:
            coro: object = self.machine.handle(self.ctx, input)
        except Exception as exc:
            self._fail(client, exc)
            return True
        # type() first: isinstance against the Coroutine ABC is the slow path.
        if type(coro) is not CoroutineType and not isinstance(coro, Coroutine):
            self._fail(
                client,
                UsageError(
                    f"{type(self.machine).__name__}.handle() must be an 'async def'; "
                    f"it returned {coro!r}"
                ),
            )
            return True
        return self._step(_Task(client, input, coro, key, self.inputs_received))

    def _step(self, task: _Task) -> bool:
        """Run ``task`` until it suspends (False) or finishes (True)."""
        coro = task.coro
        throw: BaseException | None = None
        while True:
            try:
                trap = coro.send(None) if throw is None else coro.throw(throw)
            except StopIteration as stop:
                self.inputs_done += 1
                self._actions.append(Reply(task.client, stop.value))
                return True
            except Exception as exc:
                self._fail(task.client, exc)
                return True
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit):
                    raise
                # e.g. asyncio.CancelledError: still this input's failure alone
                self._fail(task.client, exc)
                return True
            throw = None
            if type(trap) is not Wait:
                throw = _foreign_await(trap)
                continue
            futures = trap.futures
            if len(futures) == 1:  # the common case, without a call to _satisfied()
                if futures[0].done():
                    continue
            elif _satisfied(trap):
                continue
            for future in futures:
                if future.waiter is not None and future.waiter is not task:
                    throw = UsageError(
                        f"{future!r} is already awaited by another handler; "
                        "a future can be awaited only by the handler that started it"
                    )
                    break
            if throw is not None:
                continue
            for future in futures:
                future.waiter = task
            task.wait = trap
            self.suspended += 1
            self._suspended.add(task)
            return False

    def _release(self, key: Hashable) -> None:
        """The input holding ``key`` is done: run the inputs waiting for it, in order."""
        queue = self._busy[key]
        while queue:
            client, input = queue.popleft()
            self.waiting_for_key -= 1
            if not self._run_new(client, input, key):
                return  # it suspended and now holds the key
        del self._busy[key]

    def _fail(self, client: ClientId, exc: BaseException, where: str = "handler") -> None:
        self.inputs_failed += 1
        if isinstance(exc, CorosmError):
            error: CorosmError = exc
        else:
            error = HandlerError(f"{where} raised {type(exc).__name__}: {exc}")
            error.__cause__ = exc
        self._actions.append(ReplyError(client, error))


def _satisfied(wait: Wait) -> bool:
    futures = wait.futures
    if len(futures) == 1:
        return futures[0].done()
    if wait.mode is WaitMode.ALL:
        return all(f.done() for f in futures) or any(f.failed() for f in futures)
    return any(f.done() for f in futures)


def _as_effect_error(effect: Effect[Any], error: BaseException) -> BaseException:
    """The exception a handler sees for a failed effect: corosm's own, cause chained."""
    if isinstance(error, CorosmError):
        return error
    wrapped = EffectError(f"{effect!r} failed: {type(error).__name__}: {error}")
    wrapped.__cause__ = error
    return wrapped


def _foreign_await(trap: object) -> ForeignAwaitError:
    what = "a bare yield (as asyncio.sleep(0) does)" if trap is None else repr(trap)
    return ForeignAwaitError(
        f"a corosm handler awaited {what}; handlers may only await corosm futures and "
        "ctx methods (ctx.start, ctx.append, ctx.call, ctx.sleep, ctx.all, ctx.any), "
        "never asyncio or other event-loop objects"
    )
