"""The simulated world: the second driver of the shipped host, with virtual time and faults.

Theory of operation
-------------------
:class:`World` drives the very :class:`~corosm.runtime.host.Host` that
production runs (the turn: deliver completions, admit inputs, dispatch
actions, snapshot when due) and the very
:class:`~corosm.io.journal.control.JournalControl` (group commit, fail-stop,
the snapshot rule), but every source of nondeterminism is replaced by one
seeded ``random.Random``:

* Time is a :class:`~.clock.VirtualClock`; nothing sleeps. One loop pops the
  next due event, handles it, runs host turns until nothing is left to
  deliver, checks the host's invariants, then maybe crashes the process (a
  coin toss per event, so a crash can land between any two steps).
* ``Append`` goes to the production :class:`~corosm.io.journal.JournalExecutor`
  over a :class:`~.journal.SimJournal`, which runs the control's steps as
  clock events on a :class:`~corosm.io.journal.files.FaultyFS`. ``Call``,
  ``Sleep`` and custom effects go to :class:`~.executors.SimEffects`, which
  completes them after seeded latencies.
* Simulated clients each send a sequence of inputs drawn from the workload,
  with a timeout; every input becomes an :class:`~.history.Operation`.
* A crash throws the host away, drops what the disk had not synced (maybe
  tearing the last write), cuts the running operations (outcome unknown), and
  later restarts: the real recovery (:func:`corosm.io.journal.recover`, on
  the simulated disk) rebuilds the state, a fresh machine and host take
  over, and a new epoch of history begins.

Only drivers differ between production and simulation: a bug planted in the
host or the journal (:mod:`.mutants`) is a bug this world must find.
Everything that happens goes to the :class:`~.trace.Trace`, so the same seed
gives the same trace byte for byte.
"""

from __future__ import annotations

import contextvars
import logging
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from corosm.core.effects import Append, Effect
from corosm.core.events import ClientId
from corosm.core.machine import Machine
from corosm.errors import UsageError
from corosm.io.executor import Completion, CompletionSink, Executor
from corosm.io.journal import JournalExecutor, recover
from corosm.io.journal.control import JournalControl
from corosm.io.journal.files import FaultyFS, FileSystem
from corosm.io.journal.log import LogWriter
from corosm.io.journal.recovery import Recovered
from corosm.runtime.host import Host
from corosm.testing._args import need_callable, need_instance
from corosm.testing.sim.clock import VirtualClock
from corosm.testing.sim.executors import EffectSim, IODone, SimEffects, need_effects
from corosm.testing.sim.faults import FaultPlan
from corosm.testing.sim.history import Epoch, Operation
from corosm.testing.sim.journal import (
    JOURNAL_DIR,
    JournalSynced,
    JournalWrite,
    SimJournal,
    SnapshotCleanup,
    SnapshotWrite,
)
from corosm.testing.sim.snapshots import CrashNow
from corosm.testing.sim.trace import Trace, short, show_effect, show_error

MachineFactory = Callable[[], Machine[Any, Any, Any]]
Workload = Callable[[random.Random], Any]
"""Draws the next input for a client from the run's random generator."""


_IN_SIMULATION: contextvars.ContextVar[bool] = contextvars.ContextVar("corosm_sim", default=False)


class _QuietInSimulation(logging.Filter):
    """Drops the host's and journal's log records in a simulated run (the trace has them).

    Without it, every torn tail the world makes would reach the root logger
    (or Python's last-resort handler on stderr). Real journals, on other
    threads or outside a run, log as usual: the flag is per context.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not _IN_SIMULATION.get()


for _name in ("corosm.journal", "corosm.runtime"):
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, _QuietInSimulation) for f in _logger.filters):
        _logger.addFilter(_QuietInSimulation())


class RecoverFn(Protocol):
    """The signature of :func:`corosm.io.journal.recover`: the world's recovery hook."""

    def __call__(
        self, directory: str, machine: Machine[Any, Any, Any], *, fs: FileSystem | None = ...
    ) -> Recovered[Any]: ...


@dataclass(frozen=True, slots=True)
class _ClientSend:
    client: int


@dataclass(frozen=True, slots=True)
class _ClientTimeout:
    op: int


@dataclass(frozen=True, slots=True)
class _Restart:
    pass


@dataclass(frozen=True, slots=True)
class _OperatorRestart:
    generation: int


@dataclass(slots=True)
class RunResult:
    """What one simulated run produced."""

    trace: Trace
    epochs: list[Epoch]
    error: str | None = None  # the world itself could not go on (recovery failed, ...)
    stats: dict[str, int] = field(default_factory=dict)
    #: How many operations were answered with an error, by the error's class name.
    errors: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Pending:
    client: int
    input: Any
    called: float


class World:
    """One simulated run of a machine (see the module docs)."""

    #: The shipped classes the world builds: each is the shipped class, or a
    #: subclass of it with one bug planted (see :mod:`.mutants`).
    host_class: type[Host[Any, Any, Any]] = Host
    executor_class: type[JournalExecutor] = JournalExecutor
    control_class: type[JournalControl] = JournalControl
    log_writer_class: type[LogWriter] = LogWriter

    def __init__(
        self,
        machine_factory: MachineFactory,
        workload: Workload,
        rng: random.Random,
        plan: FaultPlan | None = None,
        *,
        observe: Callable[[Any], Any] | None = None,
        effects: Mapping[type[Effect[Any]], EffectSim] | None = None,
        recover: RecoverFn = recover,
    ) -> None:
        need_callable("World(machine_factory=...)", machine_factory)
        need_callable("World(workload=...)", workload)
        need_instance("World(rng=...)", rng, random.Random)
        need_instance("World(plan=...)", plan, FaultPlan, optional=True)
        need_callable("World(observe=...)", observe, optional=True)
        need_effects("World(effects=...)", effects)
        need_callable("World(recover=...)", recover)
        self.factory, self.workload, self.rng = machine_factory, workload, rng
        self.plan = plan if plan is not None else FaultPlan()
        self.observe, self.effects = observe, dict(effects or {})
        self.recover = recover
        self.clock: VirtualClock[object] = VirtualClock()
        self.trace = Trace()
        self.fs = FaultyFS()
        self.fs.makedirs(JOURNAL_DIR)
        self.generation = 0
        self.epochs = [Epoch(0)]
        self.pending: dict[int, _Pending] = {}
        self.remaining = [self.plan.ops_per_client] * self.plan.clients
        self.parked: list[int] = []  # clients waiting for the process to come back
        self.next_op = 0
        self.crashes = 0
        self.answered_errors: Counter[str] = Counter()
        self.events = 0
        self.error: str | None = None
        self._completed: list[Completion] = []
        self._restart_scheduled = False
        self.host: Host[Any, Any, Any] | None = None
        self.journal: SimJournal | None = None
        self.io: SimEffects | None = None
        self._boot(self._new_machine(), state=None, next_lsn=1, snapshot_lsn=0, since=0)

    # -- the loop -----------------------------------------------------------------

    def run(self) -> RunResult:
        """Run every client's inputs to the end; return the trace and the history."""
        token = _IN_SIMULATION.set(True)
        try:
            self._loop()
        finally:
            _IN_SIMULATION.reset(token)
        end = f"end: {self.events} events, {self.crashes} crashes"
        self.trace.add(self.clock.now, "world", end)
        stats = {"events": self.events, "crashes": self.crashes, "operations": self.next_op}
        return RunResult(self.trace, self.epochs, self.error, stats, dict(self.answered_errors))

    def _loop(self) -> None:
        for client in range(self.plan.clients):
            self.clock.schedule(self.rng.uniform(*self.plan.think_time), _ClientSend(client))
        while self.error is None and not self._finished():
            event = self.clock.pop()
            if event is None:
                self.error = "the world stalled: no event due and clients still waiting"
                break
            self.events += 1
            if self.events > self.plan.max_events:
                self.error = f"more than {self.plan.max_events} events (a livelock?)"
                break
            try:
                self._handle(event)
                self._run_host()
            except Exception as exc:  # the host or the journal broke: a bug to report
                self.error = f"the host raised {show_error(exc)}"
                self.trace.add(self.clock.now, "world", self.error)
                break
            self._check_invariants()
            self._maybe_crash()

    def _finished(self) -> bool:
        return not self.pending and not any(self.remaining)

    def _handle(self, event: object) -> None:
        journal, io, gen = self.journal, self.io, self.generation
        match event:
            case _ClientSend(client):
                self._send(client)
            case _ClientTimeout(op):
                self._timeout(op)
            case IODone(generation=g) if g == gen and io is not None:
                io.on_done(event)
            case JournalWrite(generation=g) if g == gen and journal is not None:
                journal.on_write()
            case JournalSynced(g, batch, result) if g == gen and journal is not None:
                journal.on_synced(batch, result)
            case SnapshotWrite(generation=g) if g == gen and journal is not None:
                self._crashable(journal.on_snapshot_write, event, "writing the snapshot")
            case SnapshotCleanup(generation=g) if g == gen and journal is not None:
                self._crashable(journal.on_snapshot_cleanup, event, "removing covered files")
            case _Restart():
                self._restart()
            case _OperatorRestart(generation) if generation == gen:
                self._crash("the operator restarts the fail-stopped process")

    def _run_host(self) -> None:
        """Turns of the host until every posted completion is delivered."""
        host = self.host
        while host is not None and host is self.host:
            completed, self._completed = self._completed, []
            more = host.turn(completed)
            if not more and not self._completed:
                break
        journal = self.journal
        if journal is not None and journal.failure is not None and not self._restart_scheduled:
            self._restart_scheduled = True
            self.clock.schedule(self.plan.restart_delay, _OperatorRestart(self.generation))

    def _post(self, completions: Sequence[Completion]) -> None:
        """The executors' sink: completions wait for the next host turn."""
        self._completed.extend(completions)

    def _check_invariants(self) -> None:
        """What the host promises whatever the machine does; a breach ends the run."""
        host = self.host
        if host is not None and host.inflight > host.max_inflight:
            self.error = (
                f"host invariant broken: {host.inflight} inputs in flight, "
                f"max_inflight is {host.max_inflight}"
            )
            self.trace.add(self.clock.now, "world", self.error)

    def _maybe_crash(self) -> None:
        if self.host is None:
            return
        rng, plan = self.rng, self.plan
        if self.crashes < plan.max_crashes and rng.random() < plan.crash_probability:
            self.crashes += 1
            self._crash(f"CRASH {self.crashes}")

    # -- clients --------------------------------------------------------------------

    def _send(self, client: int) -> None:
        if not self.remaining[client]:
            return
        if self.host is None:
            self.parked.append(client)
            return
        self.remaining[client] -= 1
        op = self.next_op
        self.next_op += 1
        try:
            value = self.workload(self.rng)
        except Exception as exc:
            raise UsageError(f"the workload raised {type(exc).__name__}: {exc}") from exc
        self.pending[op] = _Pending(client, value, self.clock.now)
        self.trace.add(self.clock.now, f"client {client}", f"op {op} sends {short(value)}")
        self.clock.schedule(self.plan.client_timeout, _ClientTimeout(op))
        self.host.offer(op, value)

    def _end(self, op: int, returned: float | None, output: Any, note: str) -> None:
        p = self.pending.pop(op)
        epoch = self.epochs[-1]
        epoch.operations.append(Operation(op, p.client, p.input, p.called, returned, output, note))
        if self.remaining[p.client]:
            if self.host is None:
                self.parked.append(p.client)
            else:
                self.clock.schedule(self.rng.uniform(*self.plan.think_time), _ClientSend(p.client))

    def _timeout(self, op: int) -> None:
        if op in self.pending:
            who = f"client {self.pending[op].client}"
            self.trace.add(self.clock.now, who, f"op {op} TIMEOUT: outcome unknown")
            self._end(op, None, None, "timeout")

    def _reply(self, op: ClientId, output: Any, error: BaseException | None) -> None:
        """The host's ``reply``: the client sees its answer (or its error)."""
        p = self.pending.get(op)
        what = short(output) if error is None else f"ERROR {show_error(error)}"
        if p is None:
            self.trace.add(self.clock.now, "machine", f"op {op} late reply dropped: {what}")
            return
        self.trace.add(self.clock.now, f"client {p.client}", f"op {op} <- {what}")
        if error is None:
            self._end(op, self.clock.now, output, "")
        else:
            self.answered_errors[type(error).__name__] += 1
            self._end(op, None, None, show_error(error))

    # -- the host and its executors -----------------------------------------------------

    def _boot(
        self,
        machine: Machine[Any, Any, Any],
        *,
        state: Any,
        next_lsn: int,
        snapshot_lsn: int,
        since: int,
    ) -> None:
        """Start a process: a journal on the disk, the effect executors, the host."""
        self.machine = machine
        now, schedule = (lambda: self.clock.now), self.clock.schedule
        self.journal = SimJournal(
            fs=self.fs,
            next_lsn=next_lsn,
            generation=self.generation,
            rng=self.rng,
            plan=self.plan,
            trace=self.trace,
            now=now,
            schedule=schedule,
            snapshot_lsn=snapshot_lsn,
            records_since_snapshot=since,
            control_class=self.control_class,
            log_writer_class=self.log_writer_class,
        )
        self.io = SimEffects(
            generation=self.generation,
            rng=self.rng,
            latency=self.plan.io_latency,
            effects=self.effects,
            trace=self.trace,
            now=now,
            schedule=schedule,
        )
        executors: dict[type[Effect[Any]], Executor] = {
            Append: _Traced(
                self.executor_class(self.journal, machine.encode_record), self.trace, now
            ),
            Effect: _Traced(self.io, self.trace, now),
        }
        kwargs = {} if state is None else {"state": state}
        self.host = self.host_class(
            machine,
            executors=executors,
            reply=self._reply,
            snapshots=self.journal,
            max_inflight=self.plan.max_inflight,
            turn_completions=self.plan.turn_completions,
            **kwargs,
        )
        self._restart_scheduled = False
        self.host.start(self._post)

    def _crashable(self, step: Callable[[Any, int | None], None], event: Any, what: str) -> None:
        """Run a snapshot step that may crash the world in its middle."""
        try:
            step(event, self._crash_point())
        except CrashNow as crash:
            self.crashes += 1
            self._crash(f"CRASH {self.crashes} while {what} (at {crash.what})")

    def _crash_point(self) -> int | None:
        """Where a snapshot step crashes: before its n-th file change, or None."""
        rng, plan = self.rng, self.plan
        if self.crashes < plan.max_crashes and rng.random() < plan.snapshot_crash_probability:
            return rng.randrange(5)
        return None

    # -- crashes and restarts ------------------------------------------------------------

    def _crash(self, why: str) -> None:
        journal = self.journal
        size = journal.last_write_size if journal is not None else 0
        tear, hole = 0, (0, 0)
        if size and self.rng.random() < self.plan.tear_probability:
            tear = self.rng.randint(1, size)
            # Over reserved space a sync may keep a later page and lose an earlier one.
            if journal is not None and journal.control.writer.reserve and self.rng.random() < 0.5:
                start = self.rng.randrange(tear)
                hole = (start, self.rng.randint(1, tear - start))
        lost = f", bytes {hole[0]}..{hole[0] + hole[1] - 1} of them lost" if hole[1] else ""
        self.trace.add(
            self.clock.now, "world", f"{why}: unsynced bytes lost, {tear} kept (torn){lost}"
        )
        self.fs.crash(tear=tear, hole=hole)
        self.host = None  # first, so that the clients of cut operations park
        for op in sorted(self.pending):
            who = f"client {self.pending[op].client}"
            self.trace.add(self.clock.now, who, f"op {op} cut by the crash: outcome unknown")
            self._end(op, None, None, "crash")
        self.journal = None
        self.io = None
        self._completed = []
        self.generation += 1
        self.epochs[-1].crashed = True
        self.clock.schedule(self.plan.restart_delay, _Restart())

    def _restart(self) -> None:
        machine = self._new_machine()
        try:
            rec = self.recover(JOURNAL_DIR, machine, fs=self.fs)
            observed = self.observe(rec.state) if self.observe is not None else None
        except Exception as exc:
            self.error = f"recovery failed: {show_error(exc)}"
            self.trace.add(self.clock.now, "world", self.error)
            return
        self.epochs[-1].recovered = observed
        report = rec.report
        shown = f", state {short(observed)}" if self.observe is not None else ""
        torn = report.torn_tail
        notes = f"; torn tail cut at byte {torn.offset} ({torn.reason})" if torn else ""
        self.trace.add(
            self.clock.now,
            "world",
            f"RESTART: snapshot lsn {report.snapshot_lsn} + {report.records_replayed} records "
            f"replayed, next lsn {rec.next_lsn}{shown}{notes}",
        )
        self.epochs.append(Epoch(len(self.epochs)))
        self._boot(
            machine,
            state=rec.state,
            next_lsn=rec.next_lsn,
            snapshot_lsn=report.snapshot_lsn,
            since=report.records_replayed,
        )
        parked, self.parked = self.parked, []
        for client in parked:
            self.clock.schedule(self.rng.uniform(*self.plan.think_time), _ClientSend(client))

    def _new_machine(self) -> Machine[Any, Any, Any]:
        machine = self.factory()
        if not isinstance(machine, Machine):
            raise UsageError(
                f"the machine factory must return a corosm Machine, not {machine!r:.80}"
            )
        return machine


class _Traced:
    """An executor that writes each started and cancelled effect to the trace first."""

    def __init__(self, inner: Executor, trace: Trace, now: Callable[[], float]) -> None:
        self._inner, self._trace, self._now = inner, trace, now

    def start(self, sink: CompletionSink) -> None:
        self._inner.start(sink)

    def submit(self, requests: Sequence[tuple[int, Effect[Any]]]) -> None:
        for request, effect in requests:
            self._trace.add(self._now(), "machine", f"start #{request} {show_effect(effect)}")
        self._inner.submit(requests)

    def cancel(self, request: int) -> None:
        self._trace.add(self._now(), "machine", f"cancel #{request}")
        self._inner.cancel(request)

    def close(self) -> None:
        self._inner.close()
