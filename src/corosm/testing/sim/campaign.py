"""Campaigns: run many seeds of a machine in the simulated world and check each.

Theory of operation
-------------------
A :class:`SimSpec` names everything a run needs: the machine factory, the
sequential reference model (``model_init() -> state``, ``model_step(state,
input) -> (output, state)``, the convention of
:func:`~corosm.testing.linearizability.check_linearizable`), the workload that
draws inputs, the fault plan, and optionally ``observe`` (machine state ->
model state, for the check after each recovery) and ``partition`` (the one key
an input touches, so the checker can split the history per key).
:func:`run_seed` runs one seed and checks it; :func:`simulate` runs many
and stops at the first failure, which it reports with the tail of the trace,
the operations involved, and the one command that replays that seed. Seeds
are independent, so a failure is reproduced by its seed alone.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from corosm.core.effects import Effect
from corosm.errors import UsageError
from corosm.io.journal import recover
from corosm.testing._args import is_int, need, need_callable, need_instance, need_int
from corosm.testing.sim.check import (
    DEFAULT_BUDGET,
    CheckBudgetExceeded,
    ModelStep,
    Partition,
    Violation,
    check_epochs,
)
from corosm.testing.sim.executors import EffectSim, need_effects
from corosm.testing.sim.faults import FaultPlan
from corosm.testing.sim.mutants import MUTANTS, planted
from corosm.testing.sim.world import (
    MachineFactory,
    RecoverFn,
    RunResult,
    Workload,
    World,
)

TRACE_TAIL = 60


@dataclass(frozen=True, slots=True)
class SimSpec:
    """How to simulate one machine (see the module docs).

    ``name`` is ``"module:attribute"`` of this spec when it is importable; the
    replay command printed for a failing seed uses it. ``mutant`` names a bug
    planted in the shipped host or journal for the run (see :mod:`.mutants`).
    """

    machine_factory: MachineFactory
    model_init: Callable[[], Any]
    model_step: ModelStep
    workload: Workload
    faults: FaultPlan = field(default_factory=FaultPlan)
    observe: Callable[[Any], Any] | None = None
    partition: Partition | None = None
    effects: Mapping[type[Effect[Any]], EffectSim] | None = None
    recover: RecoverFn = recover
    mutant: str | None = None
    name: str | None = None
    check_budget: int = DEFAULT_BUDGET

    def __post_init__(self) -> None:
        for name in ("machine_factory", "model_init", "model_step", "workload", "recover"):
            need_callable(f"SimSpec.{name}", getattr(self, name))
        for name in ("observe", "partition"):
            need_callable(f"SimSpec.{name}", getattr(self, name), optional=True)
        need_instance("SimSpec.faults", self.faults, FaultPlan)
        need_effects("SimSpec.effects", self.effects)
        mutant, target = self.mutant, self.name
        named = ", ".join(sorted(MUTANTS))
        known = isinstance(mutant, str) and mutant in MUTANTS
        need(mutant is None or known, "SimSpec.mutant", mutant, f"None or one of: {named}")
        importable = isinstance(target, str) and all(target.partition(":")[::2])
        need(target is None or importable, "SimSpec.name", target, "None or 'module:attribute'")
        need_int("SimSpec.check_budget", self.check_budget, 1)

    def replay_command(self, seed: int) -> str:
        """The command that replays ``seed`` and prints its whole trace."""
        if self.name is not None:
            mutant = "" if self.mutant is None else f" --mutant {self.mutant}"
            return f"corosm sim --machine {self.name} --seed {seed}{mutant} --replay"
        return f"corosm.testing.sim.run_seed(spec, {seed}).trace  # spec: this SimSpec"


@dataclass(frozen=True, slots=True)
class SeedResult:
    """One checked run: its trace and history, and what was wrong, if anything."""

    seed: int
    run: RunResult
    violation: Violation | None

    @property
    def ok(self) -> bool:
        return self.violation is None

    @property
    def trace(self) -> str:
        return self.run.trace.text()


@dataclass(frozen=True, slots=True)
class SeedFailure:
    """The first failing seed of a campaign, ready to print."""

    seed: int
    summary: str
    operations: str
    trace_tail: str
    replay: str

    def report(self) -> str:
        return (
            f"seed {self.seed} FAILED: {self.summary}\n"
            f"--- the failing epoch ---\n{self.operations}\n"
            f"--- last {TRACE_TAIL} trace lines ---\n{self.trace_tail}\n"
            f"--- replay ---\n{self.replay}"
        )


@dataclass(frozen=True, slots=True)
class CampaignResult:
    """What a campaign found."""

    seeds_run: int
    operations: int
    crashes: int
    failure: SeedFailure | None
    #: Operations answered with an error, by the error's class name. Their
    #: outcome counts as unknown to the checker, so a machine whose every
    #: input fails still passes: the summary shows them.
    errors: Mapping[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failure is None

    def summary(self) -> str:
        head = f"{self.seeds_run} seeds, {self.operations} operations, {self.crashes} crashes: " + (
            "all linearizable, no acknowledged write lost" if self.ok else "FAILED"
        )
        if self.errors:
            counts = ", ".join(f"{name} {n}" for name, n in sorted(self.errors.items()))
            head += f"\nanswered with an error (outcome unknown to the checker): {counts}"
        return head if self.failure is None else head + "\n" + self.failure.report()


def run_seed(spec: SimSpec, seed: int) -> SeedResult:
    """Run ``spec`` with ``seed`` and check the history; the same seed, the same result."""
    need(is_int(seed), "seed", seed, "an int")
    return run_with(spec, random.Random(seed), seed)


def run_with(spec: SimSpec, rng: random.Random, seed: int = -1) -> SeedResult:
    """Run ``spec`` drawing every choice from ``rng`` (e.g. Hypothesis's), and check it."""
    need_instance("spec", spec, SimSpec)
    need_instance("rng", rng, random.Random)
    need(is_int(seed), "seed", seed, "an int")
    world = World(
        spec.machine_factory,
        spec.workload,
        rng,
        spec.faults,
        observe=spec.observe,
        effects=spec.effects,
        recover=spec.recover,
    )
    with planted(spec.mutant):
        run = world.run()
    if run.error is not None:
        return SeedResult(seed, run, Violation(len(run.epochs) - 1, run.error, ""))
    try:
        violation = check_epochs(
            run.epochs, spec.model_init, spec.model_step, spec.check_budget, spec.partition
        )
    except CheckBudgetExceeded as exc:
        violation = Violation(-1, f"could not decide linearizability: {exc}", "")
    return SeedResult(seed, run, violation)


def simulate(
    machine_factory: MachineFactory,
    model_step: ModelStep,
    model_init: Callable[[], Any],
    workload: Workload,
    *,
    seeds: Iterable[int] = range(1000),
    faults: FaultPlan | None = None,
    progress: Callable[[int, CampaignResult], None] | None = None,
    **options: Any,
) -> CampaignResult:
    """Run every seed until one fails; ``options`` are the other :class:`SimSpec` fields."""
    for name in options:
        if name not in _OPTIONS:
            known = ", ".join(_OPTIONS)
            raise UsageError(f"simulate() has no option {name!r}; the options are: {known}")
    spec = SimSpec(machine_factory, model_init, model_step, workload, **options)
    if faults is not None:
        spec = replace(spec, faults=faults)
    return run_campaign(spec, seeds, progress)


def run_campaign(
    spec: SimSpec,
    seeds: Iterable[int],
    progress: Callable[[int, CampaignResult], None] | None = None,
) -> CampaignResult:
    """Run ``spec`` for each seed; stop at the first failure. ``progress`` sees each seed."""
    need_instance("spec", spec, SimSpec)
    iterable = isinstance(seeds, Iterable) and not isinstance(seeds, str | bytes)
    need(iterable, "seeds", seeds, "an iterable of ints, e.g. range(1000)")
    need_callable("progress", progress, optional=True)
    done = operations = crashes = 0
    errors: Counter[str] = Counter()
    for seed in seeds:
        result = run_seed(spec, seed)
        done += 1
        operations += result.run.stats.get("operations", 0)
        crashes += result.run.stats.get("crashes", 0)
        errors.update(result.run.errors)
        if result.violation is not None:
            failure = failure_of(spec, result)
            return CampaignResult(done, operations, crashes, failure, dict(errors))
        if progress is not None:
            progress(seed, CampaignResult(done, operations, crashes, None, dict(errors)))
    return CampaignResult(done, operations, crashes, None, dict(errors))


_NAMED = ("machine_factory", "model_init", "model_step", "workload", "faults")
_OPTIONS = [f.name for f in fields(SimSpec) if f.name not in _NAMED]
"""The keyword arguments of :func:`simulate` that it passes to :class:`SimSpec` as they are."""


def failure_of(spec: SimSpec, result: SeedResult) -> SeedFailure:
    """Turn a failed :class:`SeedResult` into a printable :class:`SeedFailure`."""
    violation = result.violation
    assert violation is not None
    return SeedFailure(
        result.seed,
        violation.summary,
        violation.details,
        result.run.trace.tail(TRACE_TAIL),
        spec.replay_command(result.seed),
    )
