"""The stepper: runs a machine's handlers as coroutines, one step at a time.

Theory of operation
-------------------
The stepper owns the state, the suspended handlers and the started effects;
it does no I/O. A host feeds it events and carries out the actions it
returns (see :mod:`corosm.core.events`):

* ``InputArrived(client, input)`` starts ``machine.handle(ctx, input)`` as a
  coroutine and runs it until it finishes or suspends. Under the PER_KEY and
  EXCLUSIVE policies an input whose keys are not all free waits instead (see
  "Keys" below).
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
* Under INTERLEAVE, an input that ``machine.log`` maps to a record has no
  handler: it emits ``StartIO(request, Append(record))`` and, right after
  that record is applied, ``Reply(client, machine.logged(state, input))``,
  which is what the handler ``await ctx.append(record); return
  logged(ctx.state, input)`` would do, at a fraction of the cost.

Everything is deterministic: request numbers are a counter and handlers run
in event order, so the same events give the same actions.

Keys (PER_KEY, EXCLUSIVE)
-------------------------
``_busy`` maps each taken key to the queue of inputs waiting for it; a key
absent from it is free. An arriving input takes each of its free keys and
joins the queue of each taken one, all in the same step, and counts the keys
it still misses; it starts when it misses none. When an input finishes, each
of its keys goes to the head of that key's queue. (A single-key input takes
its key only if it suspends: while a handler runs nothing else can queue, so
one that finishes at once never touches ``_busy``.)

Because an input enqueues on all its keys in one step, each queue is in
arrival order, and a key passes only to the earliest input waiting for it.
So an input only ever waits for earlier inputs: no cycle of waits, no
deadlock, whatever order two inputs name their keys in. Holding some keys
while waiting for others is safe for the same reason: whoever queues behind
a held key arrived later. And no starvation: an input waiting for
``Keys(a, b)`` sits in ``a``'s queue ahead of every later input on ``a``, so
a stream of those cannot overtake it. The price is head-of-line waiting: a
later input on ``a`` alone waits behind it even while ``a`` is idle.
EXCLUSIVE is PER_KEY with one key for every input.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Coroutine, Hashable
from types import CoroutineType
from typing import Any, Final, Generic, TypeVar, cast

from corosm.core.context import Context
from corosm.core.effects import Append, Effect, set_append_record
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
from corosm.core.machine import Keys, Machine, Policy, fresh_state
from corosm.core.traps import WAIT_ALL, Wait
from corosm.errors import (
    ApplyFailed,
    CorosmError,
    EffectCancelled,
    EffectError,
    ForeignAwaitError,
    HandlerError,
    HandlerMisuse,
    JournalClosed,
    Stopped,
    UsageError,
)

S = TypeVar("S")
I = TypeVar("I")
O = TypeVar("O")
T = TypeVar("T")

_EXCLUSIVE_KEY: Final = ("corosm", "exclusive")
_new: Final = object.__new__  # looked up once: compiled, the call is then direct
# The slot's own setter (half the cost of object.__setattr__, which looks the
# method up by name and parses three arguments each call), looked up once.
_set_record: Final = set_append_record
# Enum members as module constants: in Python 3.11 ``Policy.INTERLEAVE`` goes
# through the enum metaclass's ``__getattr__`` hook, ~900 instructions a lookup.
_INTERLEAVE: Final = Policy.INTERLEAVE
_EXCLUSIVE: Final = Policy.EXCLUSIVE
NO_STATE: Any = object()
"""Default for a stepper's ``state``: start from ``machine.initial_state()``."""


class _Task:
    """One input, from its arrival (waiting for its keys) until it finishes."""

    __slots__ = ("append", "client", "coro", "input", "key", "missing", "order", "wait")

    def __init__(self, client: ClientId, input: Any, key: Hashable | None, order: int) -> None:
        self.order = order
        self.client = client
        self.input = input
        self.key = key  # None, one key, or a Keys: what the task holds
        self.missing = 0  # keys it still waits for
        self.wait: Wait | None = None
        # Set by Stepper._start(). None while the task waits for its keys, and
        # for an input taken by Machine.log: it has no handler at all.
        self.coro: Coroutine[Any, Any, Any] | None = None
        # The append of an input taken by Machine.log: the task itself is the
        # pending request (no future, no wait), until complete() answers it.
        self.append: Append | None = None


class Stepper(Generic[S, I, O]):
    """Drives one machine: events in, actions out (see the module docs)."""

    def __init__(self, machine: Machine[S, I, O], state: S = NO_STATE) -> None:
        self.machine = machine
        self.state: S = fresh_state(machine) if state is NO_STATE else state
        self.ctx: Context[S] = Context(self)
        self._in_handler = False  # True while a handler's code runs (ctx may start effects)
        self._policy = machine.policy
        if not isinstance(self._policy, Policy):
            raise UsageError(
                f"{type(machine).__name__}.policy must be a corosm.Policy (INTERLEAVE, "
                f"EXCLUSIVE or PER_KEY), got {self._policy!r}"
            )
        # Inputs that only append one record skip the handler (see Machine.log),
        # under INTERLEAVE: no key can be busy, so nothing else could wait.
        plain = machine.supports_log() and machine.policy is Policy.INTERLEAVE
        self._log = machine.log if plain else None
        self._logged = machine.logged
        self._apply = machine.apply
        self._read = machine.read
        self._actions: list[Action] = []
        # Started effects not yet completed: request -> its future, or the task
        # of an input taken by Machine.log (see _append_logged).
        self._futures: dict[int, Future[Any] | _Task] = {}
        self._last_request = 0
        # Taken keys (PER_KEY, EXCLUSIVE): key -> inputs waiting for it, in arrival order.
        self._busy: dict[Hashable, deque[_Task]] = {}
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
        # Set when apply() raised: the state no longer follows the journal (a fail-stop).
        self.apply_failure: ApplyFailed | None = None
        #: Set by a host that stops: :meth:`query` then raises :class:`Stopped`.
        self.reads_stopped = False

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
        if policy is _INTERLEAVE:
            task = _Task(client, input, None, self.inputs_received)
            log = self._log
            if log is None or not self._append_logged(task, log):
                self._start(task)
            return
        try:
            key = _EXCLUSIVE_KEY if policy is _EXCLUSIVE else self.machine.key(input)
            several = type(key) is Keys
            queue = None if key is None or several else self._busy.get(key)
        except Exception as exc:  # key() raised, or returned something unhashable
            self._fail(client, exc, where=f"{type(self.machine).__name__}.key()")
            return
        task = _Task(client, input, key, self.inputs_received)
        if queue is not None:
            task.missing = 1
            queue.append(task)
            self.waiting_for_key += 1
        elif several:
            self._acquire(task, cast(Keys, key))
        elif key is None:
            self._start(task)
        elif not self._start(task):
            self._busy[key] = deque()  # taken once it suspends (see the module docs)

    def complete(self, request: int, value: Any = None, error: BaseException | None = None) -> None:
        """Request ``request`` finished (the event ``IOCompleted``)."""
        self.completions += 1
        futures = self._futures
        future = futures.get(request)  # compiled, get and del are direct; pop is not
        if future is None:
            return  # cancelled earlier, or not ours: a late completion is ignored
        del futures[request]
        if isinstance(future, _Task):  # an input taken by Machine.log: apply, then answer
            self._answer_logged(future, value, error)
            return
        effect = future.effect
        if error is not None:
            future.set_error(_as_effect_error(effect, error))
        elif type(effect) is Append:
            failure = self._apply_append(effect.record, value)
            if failure is None:
                future.set_result(value)
            else:
                future.set_error(failure)
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

    def query(self, input: I) -> O:
        """Answer a ``READ`` input through ``machine.read`` now, without a handler.

        For a host's fast path (see :meth:`Machine.read`); counted like any
        input. An exception from ``read`` is raised here as a
        :class:`HandlerError` (cause chained), a corosm error as itself;
        :class:`Stopped` while ``reads_stopped`` is set.
        """
        if self.reads_stopped:
            raise Stopped("the runtime is not running")
        self.inputs_received += 1
        try:
            output = self._read(self.state, input)
        except CorosmError:
            self.inputs_failed += 1
            raise
        except Exception as exc:
            self.inputs_failed += 1
            failure = HandlerError(f"{type(self.machine).__name__}.read() raised {exc!r}")
            failure.__cause__ = exc
            raise failure from exc
        self.inputs_done += 1
        return output

    def take_actions(self) -> list[Action]:
        """Return the actions produced since the last call, and forget them."""
        actions = self._actions
        self._actions = []
        return actions

    # -- services for Context --------------------------------------------------

    def start_effect(self, effect: Effect[T]) -> Future[T]:
        """Begin ``effect``: emit ``StartIO`` and return its future."""
        if not self._in_handler:
            raise UsageError(
                f"ctx started {type(effect).__name__} outside a running handler: a handler's "
                "ctx works only while a handler runs (do not keep it for later, or use it "
                "from other code)"
            )
        request = self._start_io(effect)
        future: Future[T] = Future(request, effect, self)
        self._futures[request] = future
        return future

    def _start_io(self, effect: Effect[Any]) -> int:
        """Emit ``StartIO`` for ``effect`` as the next request, and return its number.

        The caller files what takes the completion under that number in
        ``_futures``: the effect's future, or the task of an input taken by
        ``Machine.log`` (see :meth:`_append_logged`).
        """
        self._last_request = request = self._last_request + 1
        self._actions.append(StartIO(request, effect))
        return request

    def cancel_futures(self, futures: tuple[Future[Any], ...]) -> None:
        """Cancel the unfinished ``futures`` this stepper started, except journal
        appends and futures another handler is suspended on (it resumes when
        they complete)."""
        for future in futures:
            if future.done() or type(future.effect) is Append or future.waiter is not None:
                continue
            if future.owner is not self:
                continue  # another stepper's: its request number may be one of ours
            if self._futures.pop(future.request, None) is None:
                continue
            future.set_error(EffectCancelled(f"{future.effect!r} was cancelled"))
            self._actions.append(CancelIO(future.request))

    def close(self, error: CorosmError) -> None:
        """Abandon every running or waiting input: each fails with ``error``.

        Suspended handlers are closed (their ``finally`` blocks run, but can
        start no effect, and what they raise is dropped); started effects are
        forgotten, so late completions are ignored. For a host that stops
        before its handlers finished.
        """
        for task in sorted(self._suspended, key=lambda t: t.order):
            if task.coro is not None:
                _close(task.coro)
            self.inputs_failed += 1
            self._actions.append(ReplyError(task.client, error))
        # A task waiting for several keys is in several queues: fail it once.
        waiting = {id(task): task for queue in self._busy.values() for task in queue}
        for task in sorted(waiting.values(), key=lambda t: t.order):
            self.inputs_failed += 1
            self._actions.append(ReplyError(task.client, error))
        self._suspended.clear()
        self._busy.clear()
        self._futures.clear()
        self.suspended = 0
        self.waiting_for_key = 0

    def _apply_append(self, record: Any, value: Any) -> CorosmError | None:
        """Apply the record of an append that completed with ``value`` (its LSN).

        Returns the error the append's waiter gets instead: the record is
        durable but the state does not follow the journal (``apply`` raised,
        now or at an earlier record: a fail-stop), else None.
        """
        if self.apply_failure is not None:
            # The state stopped following the journal at an earlier record:
            # this one is durable, and will be applied at the next start.
            return self._parted(value)
        try:
            self.state = self._apply(self.state, record)
        except Exception as exc:
            failure = ApplyFailed(value, type(self.machine).__name__, exc)
            failure.__cause__ = exc
            self.apply_failure = failure
            return failure
        self.appends_applied += 1
        self.last_append_value = value
        return None

    def _parted(self, value: Any) -> JournalClosed:
        failure = self.apply_failure
        assert failure is not None
        error = JournalClosed(
            f"record {value!r} is in the journal but was not applied: {failure.machine}.apply() "
            f"failed earlier, at lsn {failure.lsn}; it will be applied at the next start"
        )
        error.__cause__ = failure
        return error

    # -- introspection -----------------------------------------------------------

    @property
    def pending_requests(self) -> int:
        """Effects started and not yet completed or cancelled."""
        return len(self._futures)

    def idle(self) -> bool:
        """True when no handler is running or waiting and no effect is pending."""
        return not self.suspended and not self._busy and not self._futures

    # -- running handlers ----------------------------------------------------------

    def _start(self, task: _Task) -> bool:
        """Start ``task``'s handler; True if it finished without suspending."""
        try:
            coro: object = self.machine.handle(self.ctx, task.input)
        except Exception as exc:
            self._fail(task.client, exc)
            return True
        # type() first: isinstance against the Coroutine ABC is the slow path.
        if type(coro) is not CoroutineType and not isinstance(coro, Coroutine):
            self._fail(
                task.client,
                HandlerMisuse(
                    f"{type(self.machine).__name__}.handle() must be an 'async def'; "
                    f"it returned {coro!r}"
                ),
            )
            return True
        task.coro = coro
        return self._step(task)

    def _append_logged(self, task: _Task, log: Callable[[Any], Any]) -> bool:
        """Append the record ``Machine.log`` gives for ``task``; False to run its handler.

        The task then waits on the append as a handler would after ``await
        ctx.append(record)``, with no coroutine, and no future or ``Wait``
        either: the task itself is the pending request, and :meth:`complete`
        answers it (:meth:`_answer_logged`) right after applying the record.
        It still emits ``StartIO(request, Append(record))`` as ``ctx.append``
        would.
        """
        try:
            record = log(task.input)
        except Exception as exc:
            self._fail(task.client, exc, where=f"{type(self.machine).__name__}.log()")
            return True
        if record is None:
            return False
        # Append(record), without its interpreted __init__ (one frame per write).
        task.append = effect = _new(Append)
        _set_record(effect, record)
        self._futures[self._start_io(effect)] = task
        self.suspended += 1
        self._suspended.add(task)
        return True

    def _answer_logged(self, task: _Task, value: Any, error: BaseException | None) -> None:
        """Apply and answer the append of a task taken by ``Machine.log`` (see _append_logged).

        What resuming the handler ``await ctx.append(record); return
        logged(ctx.state, input)`` would do: the same reply, or the same error.
        """
        self.suspended -= 1
        self._suspended.discard(task)
        effect = task.append
        assert effect is not None, "only a task taken by Machine.log is a pending request"
        if error is not None:
            self._fail(task.client, _as_effect_error(effect, error))
            return
        failure = self._apply_append(effect.record, value)
        if failure is not None:
            self._fail(task.client, failure)
            return
        try:
            output = self._logged(self.state, task.input)
        except Exception as exc:
            self._fail(task.client, exc, where=f"{type(self.machine).__name__}.logged()")
            return
        self.inputs_done += 1
        self._actions.append(Reply(task.client, output))

    def _step(self, task: _Task) -> bool:
        """Run ``task`` until it suspends (False) or finishes (True)."""
        coro = task.coro
        assert coro is not None, "a task is stepped only once its handler started"
        throw: BaseException | None = None
        while True:
            self._in_handler = True
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
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    raise
                # e.g. asyncio.CancelledError: still this input's failure alone
                self._fail(task.client, exc)
                return True
            finally:
                self._in_handler = False
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
            throw = self._refuse_wait(task, futures)
            if throw is not None:
                continue
            for future in futures:
                future.waiter = task
            task.wait = trap
            self.suspended += 1
            self._suspended.add(task)
            return False

    def _refuse_wait(self, task: _Task, futures: tuple[Future[Any], ...]) -> HandlerMisuse | None:
        """Why ``task`` may not suspend on ``futures`` (all unfinished), or None if it may.

        A future of another stepper would be completed there, and would resume
        this handler inside that machine; one another handler awaits resumes
        only that one.
        """
        for future in futures:
            if future.owner is not self:
                return HandlerMisuse(
                    f"{future!r} was not started by this machine: a future is awaited only "
                    "in handlers of the machine whose ctx started it"
                )
            if future.waiter is not None and future.waiter is not task:
                return HandlerMisuse(
                    f"{future!r} is already awaited by another handler; "
                    "a future is awaited by one handler at a time"
                )
        return None

    def _acquire(self, task: _Task, keys: Keys) -> None:
        """Take ``task``'s free keys and queue it on the others, in one step; start it if it can."""
        busy = self._busy
        missing = 0
        for key in keys._keys:
            queue = busy.get(key)
            if queue is None:
                busy[key] = deque()
            else:
                queue.append(task)
                missing += 1
        if missing:
            task.missing = missing
            self.waiting_for_key += 1
        elif self._start(task):
            self._release(task.key)

    def _release(self, key: Hashable) -> None:
        """The input holding ``key`` (one key or a Keys) finished: pass each key on."""
        self._pass_on(list(key._keys) if type(key) is Keys else [key])

    def _pass_on(self, freed: list[Hashable]) -> None:
        """Give each key of ``freed`` to the head of its queue, and so on.

        A worklist, not recursion: a task that gets its last key and finishes
        at once frees its other keys, and so on down a chain of any length.
        They are appended to ``freed`` while the loop walks it, which a list
        iterator allows: it checks the length at every step.
        """
        busy = self._busy
        for free in freed:
            queue = busy[free]
            while queue:
                task = queue.popleft()  # it now holds ``free``
                task.missing -= 1
                if task.missing:
                    break  # it still waits for another of its keys
                self.waiting_for_key -= 1
                if not self._start(task):
                    break  # it suspended, holding all of its keys
                if type(task.key) is Keys:  # it finished at once: its other keys are free too
                    freed.extend(_others(task.key, free))
            else:
                del busy[free]

    def _fail(self, client: ClientId, exc: BaseException, where: str = "handler") -> None:
        self.inputs_failed += 1
        if isinstance(exc, CorosmError):
            error: CorosmError = exc
        else:
            error = HandlerError(f"{where} raised {type(exc).__name__}: {exc}")
            error.__cause__ = exc
        self._actions.append(ReplyError(client, error))


def _close(coro: Coroutine[Any, Any, Any]) -> None:
    """Close a suspended handler, whatever its ``finally`` blocks do.

    One may raise, or start an effect (refused: the handler no longer runs),
    or even await again (``close`` then raises ``RuntimeError``); the input
    fails with the closing error all the same, and the next one is closed.
    """
    with contextlib.suppress(Exception):
        coro.close()


def _others(keys: Keys, key: Hashable) -> list[Hashable]:
    """The keys of ``keys`` other than ``key`` (compared as a dict would)."""
    return [k for k in keys._keys if not (k is key or k == key)]


def _satisfied(wait: Wait) -> bool:
    futures = wait.futures
    if len(futures) == 1:
        return futures[0].done()
    if wait.mode is WAIT_ALL:
        return all(f.done() for f in futures) or any(f.failed() for f in futures)
    return any(f.done() for f in futures)


def _as_effect_error(effect: Effect[Any], error: object) -> BaseException:
    """The exception a handler sees for a failed effect: corosm's own, cause chained.

    ``error`` is what the executor posted: an exception, unless the executor has a bug.
    """
    if isinstance(error, CorosmError):
        return error
    if not isinstance(error, BaseException):  # an executor's bug: e.g. the class, not an instance
        return EffectError(
            f"{effect!r} failed, but its executor reported {error!r} as the error "
            "instead of an exception instance"
        )
    wrapped = EffectError(f"{effect!r} failed: {type(error).__name__}: {error}")
    wrapped.__cause__ = error
    return wrapped


def _foreign_await(trap: object) -> ForeignAwaitError:
    """The error thrown into a handler that yielded ``trap``, not a corosm ``Wait``."""
    what = "a bare yield (as asyncio.sleep(0) does)" if trap is None else repr(trap)
    hint = ""
    # asyncio.isfuture's test, without importing asyncio into the core: an
    # asyncio future or task, as awaiting asyncio.wait_for, gather or create_task gives.
    if getattr(trap, "_asyncio_future_blocking", None) is not None:
        hint = (
            ". Wrapping a ctx effect in asyncio.wait_for, asyncio.gather or "
            "asyncio.create_task is a foreign await too: use ctx.timeout(future, seconds), "
            "ctx.all(*futures) or ctx.start(effect) instead"
        )
    return ForeignAwaitError(
        f"a corosm handler awaited {what}; handlers may only await corosm futures and "
        "ctx methods (ctx.start, ctx.append, ctx.call, ctx.sleep, ctx.all, ctx.any), "
        f"never asyncio or other event-loop objects{hint}"
    )
