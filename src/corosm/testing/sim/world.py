"""The simulated world: a second host for the stepper, with virtual time and faults.

Theory of operation
-------------------
:class:`World` drives a :class:`~corosm.core.Stepper` exactly as the asyncio
runtime does (feed inputs and completions, carry out the actions), but every
source of nondeterminism is replaced by one seeded ``random.Random``:

* Time is a :class:`~.clock.VirtualClock`; nothing sleeps. One loop pops the
  next due event, handles it, carries out the stepper's actions, then maybe
  crashes the process or takes a snapshot (a coin toss per event, so a crash
  can land between any two steps).
* ``Call``, ``Sleep`` and custom effects complete after random latencies, so
  independent I/O finishes in any order. ``Append`` goes to a
  :class:`~.journal.SimJournal`: real frames, group commit, LSN order.
* Simulated clients each send a sequence of inputs drawn from the workload,
  with a timeout; every input becomes an :class:`~.history.Operation`.
* A crash throws the stepper away, drops what the disk had not synced (maybe
  tearing the last write), cuts the running operations (outcome unknown), and
  later restarts: the real recovery (:func:`corosm.io.journal.recover`, on
  the simulated disk) rebuilds the state, a fresh machine and stepper take
  over, and a new epoch of history begins.
* Snapshots follow the server's rule (see :mod:`.snapshots`): when enough
  records went by, copy the state, then write the snapshot, then remove what
  it covers, each step a later event, with crashes possible in between and
  in the middle.

Everything that happens goes to the :class:`~.trace.Trace`, so the same seed
gives the same trace byte for byte.
"""

from __future__ import annotations

import contextvars
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from corosm.core.effects import Append, Call, Effect, Sleep
from corosm.core.events import Action, CancelIO, Reply, ReplyError, StartIO
from corosm.core.machine import Machine
from corosm.core.stepper import Stepper
from corosm.errors import CorosmError, UsageError
from corosm.io.journal import recover
from corosm.io.journal.files import FaultyFS, FileSystem
from corosm.io.journal.recovery import Recovered
from corosm.io.journal.snapshot import remove_covered, write_snapshot
from corosm.testing.sim.clock import VirtualClock
from corosm.testing.sim.faults import FaultPlan, Sabotage
from corosm.testing.sim.history import Epoch, Operation
from corosm.testing.sim.journal import JOURNAL_DIR, JournalSynced, JournalWrite, SimJournal
from corosm.testing.sim.snapshots import CrashingFS, CrashNow, SnapshotJob
from corosm.testing.sim.trace import Trace, short, show_effect, show_error

MachineFactory = Callable[[], Machine[Any, Any, Any]]
Workload = Callable[[random.Random], Any]
"""Draws the next input for a client from the run's random generator."""
EffectSim = Callable[[Effect[Any], random.Random], Any]
"""Simulates a custom effect: returns its result or raises its error."""


_IN_SIMULATION: contextvars.ContextVar[bool] = contextvars.ContextVar("corosm_sim", default=False)


class _QuietInSimulation(logging.Filter):
    """Drops the journal's log records about *simulated* disks (the trace has them).

    Without it, every torn tail the world makes would reach the root logger
    (or Python's last-resort handler on stderr). Real journals, on other
    threads or outside a run, log as usual: the flag is per context.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not _IN_SIMULATION.get()


_JOURNAL_LOG = logging.getLogger("corosm.journal")
if not any(isinstance(f, _QuietInSimulation) for f in _JOURNAL_LOG.filters):
    _JOURNAL_LOG.addFilter(_QuietInSimulation())


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
class _IODone:
    generation: int
    request: int
    effect: Effect[Any]


@dataclass(frozen=True, slots=True)
class _Restart:
    pass


@dataclass(frozen=True, slots=True)
class _OperatorRestart:
    generation: int


@dataclass(frozen=True, slots=True)
class _SnapshotStep:
    job: SnapshotJob
    cleanup: bool  # False: write the snapshot; True: remove what it covers


@dataclass(slots=True)
class RunResult:
    """What one simulated run produced."""

    trace: Trace
    epochs: list[Epoch]
    error: str | None = None  # the world itself could not go on (recovery failed, ...)
    stats: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Pending:
    client: int
    input: Any
    called: float


class World:
    """One simulated run of a machine (see the module docs)."""

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
        sabotage: Sabotage | None = None,
    ) -> None:
        self.factory, self.workload, self.rng = machine_factory, workload, rng
        self.plan = plan if plan is not None else FaultPlan()
        self.observe, self.effects = observe, dict(effects or {})
        self.recover, self.sabotage = recover, sabotage or Sabotage()
        self.clock: VirtualClock[object] = VirtualClock()
        self.trace = Trace()
        self.fs = FaultyFS()
        self.fs.makedirs(JOURNAL_DIR)
        self.generation = 0
        self.epochs = [Epoch(0)]
        self.pending: dict[int, _Pending] = {}
        self.remaining = [self.plan.ops_per_client] * self.plan.clients
        self.parked: list[int] = []  # clients waiting for the process to come back
        self.cancelled: set[int] = set()
        self.next_op = 0
        self.crashes = 0
        self.events = 0
        self.snapshot_lsn = 0
        self.records_since_snapshot = 0
        self.snapshotting = False
        self.error: str | None = None
        self.machine = self._new_machine()
        self.stepper: Stepper[Any, Any, Any] | None = Stepper(self.machine)
        self.journal: SimJournal | None = self._new_journal(1)

    # -- the loop -----------------------------------------------------------------

    def run(self) -> RunResult:
        """Run every client's inputs to the end; return the trace and the history."""
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
            self._handle(event)
            self._maybe_fault()
        end = f"end: {self.events} events, {self.crashes} crashes"
        self.trace.add(self.clock.now, "world", end)
        stats = {"events": self.events, "crashes": self.crashes, "operations": self.next_op}
        return RunResult(self.trace, self.epochs, self.error, stats)

    def _finished(self) -> bool:
        return not self.pending and not any(self.remaining)

    def _handle(self, event: object) -> None:
        match event:
            case _ClientSend(client):
                self._send(client)
            case _ClientTimeout(op):
                self._timeout(op)
            case _IODone(generation, request, effect):
                if generation == self.generation and request not in self.cancelled:
                    self._io_done(request, effect)
            case JournalWrite(generation=g) if g == self.generation and self.journal:
                self.journal.on_write()
            case JournalSynced(generation=g) if g == self.generation and self.journal:
                self.journal.on_synced()
            case _Restart():
                self._restart()
            case _OperatorRestart(generation) if generation == self.generation:
                self._crash("the operator restarts the fail-stopped process")
            case _SnapshotStep(job, cleanup) if job.generation == self.generation:
                (self._snapshot_cleanup if cleanup else self._snapshot_write)(job)
        self._dispatch()

    def _maybe_fault(self) -> None:
        if self.stepper is None:
            return
        rng, plan = self.rng, self.plan
        if self.crashes < plan.max_crashes and rng.random() < plan.crash_probability:
            self.crashes += 1
            self._crash(f"CRASH {self.crashes}")
        elif self._snapshot_due():
            self._snapshot_start()

    # -- clients --------------------------------------------------------------------

    def _send(self, client: int) -> None:
        if not self.remaining[client]:
            return
        if self.stepper is None:
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
        self.stepper.input(op, value)

    def _end(self, op: int, returned: float | None, output: Any, note: str) -> None:
        p = self.pending.pop(op)
        epoch = self.epochs[-1]
        epoch.operations.append(Operation(op, p.client, p.input, p.called, returned, output, note))
        if self.remaining[p.client]:
            if self.stepper is None:
                self.parked.append(p.client)
            else:
                self.clock.schedule(self.rng.uniform(*self.plan.think_time), _ClientSend(p.client))

    def _timeout(self, op: int) -> None:
        if op in self.pending:
            who = f"client {self.pending[op].client}"
            self.trace.add(self.clock.now, who, f"op {op} TIMEOUT: outcome unknown")
            self._end(op, None, None, "timeout")

    # -- the stepper's actions -----------------------------------------------------------

    def _dispatch(self) -> None:
        if self.stepper is None:
            return
        # Completions that an executor delivers at once (a fail-stopped journal)
        # make new actions while we carry these out: loop until none are left.
        while self.stepper is not None and (actions := self.stepper.take_actions()):
            self._carry_out(actions)

    def _carry_out(self, actions: list[Action]) -> None:
        now, trace = self.clock.now, self.trace
        for action in actions:
            match action:
                case Reply(op, output):
                    self._reply(op, output, None)
                case ReplyError(op, error):
                    self._reply(op, None, error)
                case StartIO(request, effect):
                    trace.add(now, "machine", f"start #{request} {show_effect(effect)}")
                    self._start(request, effect)
                case CancelIO(request):
                    trace.add(now, "machine", f"cancel #{request}")
                    self.cancelled.add(request)

    def _reply(self, op: int, output: Any, error: CorosmError | None) -> None:
        p = self.pending.get(op)
        what = short(output) if error is None else f"ERROR {show_error(error)}"
        if p is None:
            self.trace.add(self.clock.now, "machine", f"op {op} late reply dropped: {what}")
            return
        self.trace.add(self.clock.now, f"client {p.client}", f"op {op} <- {what}")
        if error is None:
            self._end(op, self.clock.now, output, "")
        else:
            self._end(op, None, None, show_error(error))

    def _start(self, request: int, effect: Effect[Any]) -> None:
        if type(effect) is Append:
            assert self.journal is not None
            self.journal.submit(request, effect.record)
            return
        if isinstance(effect, Sleep):
            delay = max(0.0, float(effect.seconds))
        else:
            delay = self.rng.uniform(*self.plan.io_latency)
        self.clock.schedule(delay, _IODone(self.generation, request, effect))

    def _io_done(self, request: int, effect: Effect[Any]) -> None:
        value: Any = None
        error: BaseException | None = None
        try:
            value = self._perform(effect)
        except Exception as exc:
            error = exc
        result = short(value) if error is None else f"ERROR {show_error(error)}"
        self.trace.add(self.clock.now, "io", f"#{request} done: {result}")
        assert self.stepper is not None
        self.stepper.complete(request, value, error)

    def _perform(self, effect: Effect[Any]) -> Any:
        if isinstance(effect, Call):
            return effect.fn(*effect.args)
        if isinstance(effect, Sleep):
            return None
        for cls in type(effect).__mro__:
            sim = self.effects.get(cls)
            if sim is not None:
                return sim(effect, self.rng)
        raise UsageError(
            f"no simulated executor for {type(effect).__name__}; pass "
            f"effects={{{type(effect).__name__}: fn}} to the simulator"
        )

    def _journal_done(self, completions: list[tuple[int, Any, BaseException | None]]) -> None:
        """The journal's completions: delivered in the order given, which is log order."""
        stepper = self.stepper
        assert stepper is not None
        for request, lsn, error in completions:
            result = f"lsn {lsn}" if error is None else f"ERROR {show_error(error)}"
            self.records_since_snapshot += error is None
            self.trace.add(self.clock.now, "journal", f"#{request} appended: {result}")
            stepper.complete(request, lsn, error)
        journal = self.journal
        if journal is not None and journal.failed is not None and any(e for _, _, e in completions):
            self.clock.schedule(self.plan.restart_delay, _OperatorRestart(self.generation))

    # -- crashes, restarts, snapshots ------------------------------------------------------

    def _crash(self, why: str) -> None:
        journal = self.journal
        size = journal.last_write_size if journal is not None else 0
        tear = 0
        if size and self.rng.random() < self.plan.tear_probability:
            tear = self.rng.randint(1, size)
        self.trace.add(self.clock.now, "world", f"{why}: unsynced bytes lost, {tear} kept (torn)")
        self.fs.crash(tear=tear)
        self.stepper = None  # first, so that the clients of cut operations park
        for op in sorted(self.pending):
            who = f"client {self.pending[op].client}"
            self.trace.add(self.clock.now, who, f"op {op} cut by the crash: outcome unknown")
            self._end(op, None, None, "crash")
        self.journal = None
        self.generation += 1
        self.epochs[-1].crashed = True
        self.clock.schedule(self.plan.restart_delay, _Restart())

    def _restart(self) -> None:
        self.machine = self._new_machine()
        token = _IN_SIMULATION.set(True)
        try:
            rec = self.recover(JOURNAL_DIR, self.machine, fs=self.fs)
            observed = self.observe(rec.state) if self.observe is not None else None
        except Exception as exc:
            self.error = f"recovery failed: {show_error(exc)}"
            self.trace.add(self.clock.now, "world", self.error)
            return
        finally:
            _IN_SIMULATION.reset(token)
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
        self.snapshot_lsn = report.snapshot_lsn
        self.records_since_snapshot = report.records_replayed
        self.snapshotting = False
        self.stepper = Stepper(self.machine, rec.state)
        self.journal = self._new_journal(rec.next_lsn)
        parked, self.parked = self.parked, []
        for client in parked:
            self.clock.schedule(self.rng.uniform(*self.plan.think_time), _ClientSend(client))

    def _snapshot_due(self) -> bool:
        """The server's rule: enough records since the last snapshot, none running."""
        every = self.plan.snapshot_every_records
        journal = self.journal
        return (
            every > 0
            and not self.snapshotting
            and self.records_since_snapshot >= every
            and journal is not None
            and journal.failed is None
            and self.machine.supports_snapshots()
        )

    def _snapshot_start(self) -> None:
        """On the loop: copy the state as of the last applied LSN; the rest comes later."""
        assert self.stepper is not None and self.journal is not None
        lsn = self.stepper.last_append_value
        if type(lsn) is not int or lsn <= self.snapshot_lsn:
            return
        copy = self.machine.copy_state(self.stepper.state)
        self.snapshotting = True
        self.records_since_snapshot = 0
        self.journal.writer.request_rotation()  # as the real journal does
        self.trace.add(self.clock.now, "world", f"snapshot at lsn {lsn} started")
        job = SnapshotJob(self.generation, lsn, copy)
        self.clock.schedule(
            self.rng.uniform(*self.plan.fsync_latency), _SnapshotStep(job, cleanup=False)
        )

    def _crash_point(self) -> int | None:
        """Where a snapshot step crashes: before its n-th file change, or None."""
        rng, plan = self.rng, self.plan
        if self.crashes < plan.max_crashes and rng.random() < plan.snapshot_crash_probability:
            return rng.randrange(5)
        return None

    def _snapshot_write(self, job: SnapshotJob) -> None:
        payload = self.machine.snapshot(job.state)
        try:
            write_snapshot(CrashingFS(self.fs, self._crash_point()), JOURNAL_DIR, job.lsn, payload)
        except CrashNow as crash:
            self.crashes += 1
            self._crash(f"CRASH {self.crashes} while writing the snapshot (at {crash.what})")
            return
        except OSError as exc:  # a failed snapshot costs restart time, not data
            self.trace.add(self.clock.now, "world", f"snapshot at lsn {job.lsn} failed: {exc}")
            self.snapshotting = False
            return
        self.snapshot_lsn = job.lsn
        what = f"snapshot at lsn {job.lsn} written ({len(payload)} bytes)"
        self.trace.add(self.clock.now, "world", what)
        self.clock.schedule(
            self.rng.uniform(*self.plan.fsync_latency), _SnapshotStep(job, cleanup=True)
        )

    def _snapshot_cleanup(self, job: SnapshotJob) -> None:
        self.snapshotting = False
        try:
            removed = remove_covered(CrashingFS(self.fs, self._crash_point()), JOURNAL_DIR, job.lsn)
        except CrashNow as crash:
            self.crashes += 1
            self._crash(f"CRASH {self.crashes} while removing covered files (at {crash.what})")
            return
        except OSError as exc:
            self.trace.add(self.clock.now, "world", f"removing covered files failed: {exc}")
            return
        names = ", ".join(sorted(removed)) or "nothing"
        self.trace.add(self.clock.now, "world", f"snapshot at lsn {job.lsn}: removed {names}")

    def _new_machine(self) -> Machine[Any, Any, Any]:
        machine = self.factory()
        if not isinstance(machine, Machine):
            raise UsageError(
                f"the machine factory must return a corosm Machine, not {machine!r:.80}"
            )
        return machine

    def _new_journal(self, next_lsn: int) -> SimJournal:
        return SimJournal(
            fs=self.fs,
            machine=self.machine,
            next_lsn=next_lsn,
            generation=self.generation,
            rng=self.rng,
            plan=self.plan,
            sabotage=self.sabotage,
            trace=self.trace,
            now=lambda: self.clock.now,
            schedule=self.clock.schedule,
            deliver=self._journal_done,
        )
