"""The host core: one turn of the host, with no threads, sockets or clocks.

Theory of operation
-------------------
Everything between the front ends and the pure stepper that decides *what
happens next* lives in :class:`Host`; what decides *when* lives in a driver.
Two drivers exist: :class:`corosm.runtime.Runtime` (asyncio, executors on
real threads) and the simulator's world (:mod:`corosm.testing.sim`: virtual
clock, faulty disk, simulated executors). Both call the same methods of the
same object, so a bug planted here is a bug the simulator can find.

A driver hands the host inputs (:meth:`Host.offer`, bounded by
``max_queue``) and completions (the argument of :meth:`Host.turn`). One turn
is a short sequence of named phases, in this order::

    deliver completions  -> at most ``turn_completions`` of them: the stepper
                            applies appends (in log order) and resumes handlers
    admit inputs         -> only after the last slice of completions; up to
                            ``max_inflight`` handlers at once
    dispatch actions     -> every StartIO of the turn grouped per executor (one
                            ``submit`` each: the journal sees one batch), then
                            CancelIO, and replies through the driver's ``reply``
    snapshot if due      -> the journal says when (its rule, written once);
                            the host copies the state as of the last applied
                            LSN and hands the copy over to be written

The ordering rule that durability rests on: a reply to a write is released
only by its append's completion, which the journal posts after the fsync of
its batch. The host never replies on its own to an input that appended.

Executors post completions through the sink given to :meth:`Host.start`;
the driver buffers them (thread-safely, if it has threads) and passes them to
the next :meth:`Host.turn`. A turn that leaves completions undelivered
returns True: the driver runs another turn soon, after polling its sockets.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Generic, Protocol, TypeAlias, TypeVar

from corosm._mypyc import mypyc_attr
from corosm.core.effects import Append, Effect
from corosm.core.events import CancelIO, ClientId, Reply, ReplyError, StartIO
from corosm.core.machine import Machine, Policy
from corosm.core.stepper import NO_STATE, Stepper
from corosm.errors import (
    ApplyFailed,
    CorosmError,
    InternalError,
    JournalClosed,
    Overloaded,
    UsageError,
)
from corosm.io.executor import Completion, CompletionSink, Executor

S = TypeVar("S")
I = TypeVar("I")
O = TypeVar("O")

log = logging.getLogger("corosm.runtime")

#: The bounds a host has unless told otherwise (the runtime, ``corosm.open``
#: and the server take theirs from here): inputs waiting in the inbox, inputs
#: admitted and not finished, and completions delivered in one turn.
DEFAULT_MAX_QUEUE: Final = 10_000
DEFAULT_MAX_INFLIGHT: Final = 10_000
DEFAULT_TURN_COMPLETIONS: Final = 16

ReplyFn: TypeAlias = Callable[[ClientId, Any, "BaseException | None"], None]
"""``reply(client, output, error)``: the driver's way to answer a client."""


class Snapshots(Protocol):
    """What the host needs of a journal to take snapshots (the journal owns the rule)."""

    def snapshot_due(self) -> bool:
        """True when a snapshot should start now."""
        ...

    def start_snapshot(self, lsn: int, produce: Callable[[], bytes]) -> bool:
        """Write ``produce()`` as the snapshot at ``lsn``, off the loop; False if refused."""
        ...


@mypyc_attr(allow_interpreted_subclasses=True)
class Host(Generic[S, I, O]):
    """The turn of a corosm host (see the module docs).

    ``executors`` maps effect types to executors (looked up along the
    effect's MRO). ``snapshots`` is the journal that decides when a snapshot
    is due, or None for a host that takes none. ``reply`` answers a client.

    The compiled build compiles this class; it may still be subclassed, and
    a subclass's methods override the host's own (the simulator plants its
    bugs that way, see :mod:`corosm.testing.sim.mutants`). Patching a method
    on the class itself does not reach the compiled host's own calls.
    """

    def __init__(
        self,
        machine: Machine[S, I, O],
        *,
        executors: Mapping[type[Effect[Any]], Executor],
        reply: ReplyFn,
        state: S = NO_STATE,
        snapshots: Snapshots | None = None,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        turn_completions: int = DEFAULT_TURN_COMPLETIONS,
    ) -> None:
        limits = ("max_queue", max_queue), ("max_inflight", max_inflight)
        for name, value in (*limits, ("turn_completions", turn_completions)):
            if type(value) is not int or value < 1:  # a float would fail every turn
                raise UsageError(f"{name} must be an int of at least 1, got {value!r}")
        self.machine = machine
        self.stepper: Stepper[S, I, O] = Stepper(machine, state)
        self._routes: dict[type[Effect[Any]], Executor] = dict(executors)
        self.executors: list[Executor] = list(dict.fromkeys(executors.values()))
        self._reply = reply
        self._snapshots = snapshots if machine.supports_snapshots() else None
        plain = machine.supports_read() and machine.policy is Policy.INTERLEAVE
        #: ``query(input) -> output``: a READ input answered at once from the
        #: applied state by ``machine.read`` (see :meth:`Stepper.query`), or
        #: None when the machine has no ``read`` or its keys can be busy (a
        #: policy other than INTERLEAVE): then a read must be stepped.
        self.query: Callable[[I], O] | None = self.stepper.query if plain else None
        self.max_queue = max_queue
        self.max_inflight = max_inflight
        self.turn_completions = turn_completions
        # A list, not a deque: compiled, its append and slicing are direct
        # calls; admission takes each batch it steps with one del.
        self.inbox: list[tuple[ClientId, I]] = []
        self._backlog: list[Completion] = []  # completions left for later turns
        self._backlog_at = 0  # the first of them not delivered yet
        self._sink: CompletionSink | None = None
        self._in_turn = False
        self.completions_delivered = 0
        self.turns = 0

    # -- driver interface ------------------------------------------------------------

    def start(self, sink: CompletionSink) -> None:
        """Start every executor, posting completions to ``sink``."""
        self._sink = sink
        for executor in self.executors:
            executor.start(sink)

    def offer(self, client: ClientId, input: I) -> None:
        """Queue ``input`` for the next turn; :class:`Overloaded` when the inbox is full."""
        if len(self.inbox) >= self.max_queue:
            raise Overloaded(f"input queue full ({self.max_queue} waiting)")
        self.inbox.append((client, input))

    def step_now(self, client: ClientId, input: I) -> bool:
        """Step ``input`` at once, between turns; False (nothing done) if not possible now.

        For inputs the machine declares ``Order.READ`` (their order against
        other clients' inputs does not matter): one that finishes without
        I/O is answered before this returns, instead of waiting for the next
        turn behind the inbox. When the machine defines ``read()`` (and its
        policy is INTERLEAVE) that one call answers it, with no handler.
        """
        if self._in_turn or self.inflight >= self.max_inflight:
            return False
        self._in_turn = True  # a reply that offers again queues, never nests
        try:
            if self.query is not None:  # one plain call: see Machine.read
                try:
                    output = self.query(input)
                except Exception as exc:
                    self._reply(client, None, exc)
                else:
                    self._reply(client, output, None)
            else:
                self.stepper.input(client, input)
                self._dispatch_actions()
        finally:
            self._in_turn = False
        return True

    def turn(self, completions: Sequence[Completion] = ()) -> bool:
        """Run one turn (see the module docs); True when completions are left for another."""
        self._in_turn = True
        try:
            self.turns += 1
            if self._deliver_completions(completions):
                # Admit new inputs only with the last slice of a batch: their
                # appends then still reach the journal together, in one submit.
                self._admit_inputs()
            self._dispatch_actions()
            self._snapshot_if_due()
        finally:
            self._in_turn = False
        return bool(self._backlog)

    def close(self, error: CorosmError) -> None:
        """Fail every input that is running, waiting for its key or still queued."""
        self.stepper.close(error)
        self._dispatch_actions()
        inbox, self.inbox = self.inbox, []
        for client, _ in inbox:
            self._reply(client, None, error)

    # -- observability ---------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Inputs offered and not yet admitted."""
        return len(self.inbox)

    @property
    def inflight(self) -> int:
        """Inputs admitted and not finished (suspended, or waiting for their key)."""
        return self.stepper.suspended + self.stepper.waiting_for_key

    def idle(self) -> bool:
        """Nothing queued, in flight or left to deliver."""
        return not self.queued and self.inflight == 0 and not self._backlog

    def stats(self) -> dict[str, float]:
        """Counters and gauges, flat, for metrics and tests (executors' included)."""
        stepper = self.stepper
        stats: dict[str, float] = {
            "inputs_received": stepper.inputs_received,
            "inputs_processed": stepper.inputs_done + stepper.inputs_failed,
            "inputs_failed": stepper.inputs_failed,
            "suspended": stepper.suspended,
            "waiting_for_key": stepper.waiting_for_key,
            "queue_depth": self.queued,
            "completions": self.completions_delivered,
            "pending_requests": stepper.pending_requests,
            "appends_applied": stepper.appends_applied,
            "turns": self.turns,
            "apply_failed_lsn": _lsn_of(stepper.apply_failure),
        }
        for executor in self.executors:
            more = getattr(executor, "stats", None)
            if more is not None:
                stats.update(more())
        return stats

    def health(self) -> str | None:
        """None when the host and every executor are healthy, else the first reason why not."""
        failure = self.stepper.apply_failure
        if failure is not None:
            return f"fail-stopped, writes refused: {failure}"
        for executor in self.executors:
            check = getattr(executor, "health", None)
            reason = check() if check is not None else None
            if reason is not None:
                return str(reason)
        return None

    # -- the phases ------------------------------------------------------------------

    def _deliver_completions(self, completions: Sequence[Completion]) -> bool:
        """Deliver the next slice of completions; True when none are left after it."""
        # At most ``turn_completions`` per turn: a group commit of hundreds of
        # records would otherwise make one long turn (apply, resume, reply for
        # each) while every read that arrives meanwhile waits for all of it.
        # The rest is kept, in order, for the next turn: read from
        # ``_backlog_at`` on, and compacted once that passes its middle, so
        # that a completion is copied a bounded number of times however big
        # the burst (slicing off the rest each turn copied all of it, each turn).
        backlog, chunk = self._backlog, self.turn_completions
        if backlog:
            backlog.extend(completions)
            at = self._backlog_at
            completions = backlog[at : at + chunk]
            at += chunk
            if at >= len(backlog):
                self._backlog, self._backlog_at = [], 0
            elif at > len(backlog) >> 1:
                del backlog[:at]
                self._backlog_at = 0
            else:
                self._backlog_at = at
        elif len(completions) > chunk:
            self._backlog = list(completions[chunk:])
            completions = completions[:chunk]
        stepper = self.stepper  # compiled: a native call, not a bound method's
        for request, value, error in completions:
            stepper.complete(request, value, error)
        self.completions_delivered += len(completions)
        return not self._backlog

    def _admit_inputs(self) -> None:
        inbox, stepper = self.inbox, self.stepper  # compiled: stepper.input is a native call
        # An input adds at most one to ``inflight`` (it suspends or waits for
        # its key), so ``room`` inputs can go in before the bound is looked at again.
        while inbox:
            room = self.max_inflight - self.inflight
            if room <= 0:
                return
            # Out of the inbox before they step: ``queued`` and ``offer``'s bound
            # never count an input already admitted.
            batch = inbox[:room]
            del inbox[:room]
            for i, (client, input) in enumerate(batch):
                try:
                    stepper.input(client, input)
                except BaseException:
                    inbox[0:0] = batch[i + 1 :]  # not admitted: back at the front, in order
                    raise

    def _dispatch_actions(self) -> None:
        batches: dict[int, tuple[Executor, list[tuple[int, Effect[Any]]]]] = {}
        reply, routes = self._reply, self._routes
        refuse_writes = self.stepper.apply_failure  # a fail-stop: see _refusal
        # Exact-type tests rather than ``match``: half of all actions are
        # replies, and class patterns cost an isinstance and __match_args__
        # lookups each. The stepper makes these four classes and no others.
        for action in self.stepper.take_actions():
            if type(action) is Reply:
                reply(action.client, action.output, None)
            elif type(action) is StartIO:
                request, effect = action.request, action.effect
                if refuse_writes is not None and isinstance(effect, Append):
                    self._post([(request, None, self._refusal(refuse_writes))])
                    continue
                executor = routes.get(type(effect))
                if executor is None:  # a type not seen yet: look along its MRO
                    executor = self._route(type(effect))
                if executor is None:
                    error = UsageError(f"no executor is registered for {type(effect).__name__}")
                    self._post([(request, None, error)])
                    continue
                entry = batches.get(id(executor))
                if entry is None:
                    batches[id(executor)] = (executor, [(request, effect)])
                else:
                    entry[1].append((request, effect))
            elif type(action) is ReplyError:
                reply(action.client, None, action.error)
            elif type(action) is CancelIO:
                for executor in self.executors:
                    executor.cancel(action.request)
            else:
                raise InternalError(f"the stepper made an unknown action {action!r}")
        for executor, requests in batches.values():
            try:
                executor.submit(requests)
            except Exception as exc:  # it took none of them (see Executor.submit)
                log.exception("executor %r refused %d request(s)", executor, len(requests))
                self._post([(request, None, exc) for request, _ in requests])

    def _snapshot_if_due(self) -> None:
        snapshots = self._snapshots
        if snapshots is None or not snapshots.snapshot_due():
            return
        # Every record up to the last applied LSN is in the state, and no later
        # one is: completions are delivered in log order.
        lsn = self.stepper.last_append_value
        if type(lsn) is not int:
            return
        machine = self.machine
        try:
            frozen = machine.copy_state(self.stepper.state)
        except Exception as exc:
            # Started all the same, to fail as a snapshot() that raised does:
            # logged by the journal, due again later, and no turn cut short.
            produce = _raising(exc, f"{type(machine).__name__}.copy_state()")
        else:
            produce = functools.partial(machine.snapshot, frozen)
        if snapshots.start_snapshot(lsn, produce):
            log.info("snapshot started at lsn %d", lsn)

    # -- helpers ---------------------------------------------------------------------

    def _route(self, kind: type) -> Executor | None:
        """The executor of ``kind``'s nearest registered class (then remembered for ``kind``)."""
        for cls in kind.__mro__:
            executor = self._routes.get(cls)
            if executor is not None:
                self._routes[kind] = executor
                return executor
        return None

    @staticmethod
    def _refusal(failure: ApplyFailed) -> JournalClosed:
        """The error for an append after ``apply`` failed: the state left the journal."""
        error = JournalClosed(
            f"writes are refused: {failure.machine}.apply() failed at lsn {failure.lsn}, so "
            "the state no longer follows the journal (reads go on; fix apply() and restart)"
        )
        error.__cause__ = failure
        return error

    def _post(self, completions: list[Completion]) -> None:
        if self._sink is None:
            raise UsageError("Host.start() was not called")
        self._sink(completions)


def _raising(error: Exception, where: str) -> Callable[[], bytes]:
    """A snapshot producer that fails with ``error``, raised earlier by ``where``."""

    def produce() -> bytes:
        raise UsageError(f"{where} raised {type(error).__name__}: {error}") from error

    return produce


def _lsn_of(failure: ApplyFailed | None) -> float:
    """The LSN at which apply() failed, for metrics: 0 while healthy (LSNs start at 1)."""
    if failure is None:
        return 0
    return failure.lsn if isinstance(failure.lsn, int) else -1
