"""Deterministic simulation testing for coroutine state machines.

Run a machine in a simulated world (virtual time, seeded scheduling, injected
I/O errors, crashes and restarts through the journal's real recovery), record what clients
saw, and check it against a sequential model. See ``docs/testing.md``.

Entry points: :func:`simulate` / :func:`run_campaign` (many seeds),
:func:`run_seed` (one seed, e.g. to replay), :class:`SimSpec`,
:class:`FaultPlan`, and :mod:`corosm.testing.sim.hypothesis` for ``@given``.
"""

from corosm.testing.sim.campaign import (
    CampaignResult,
    SeedFailure,
    SeedResult,
    SimSpec,
    run_campaign,
    run_seed,
    run_with,
    simulate,
)
from corosm.testing.sim.check import Violation, check_epochs, end_states
from corosm.testing.sim.faults import FaultPlan
from corosm.testing.sim.history import Epoch, Operation
from corosm.testing.sim.mutants import MUTANTS, Mutant, planted
from corosm.testing.sim.world import RecoverFn, RunResult, World

__all__ = [
    "CampaignResult",
    "Epoch",
    "FaultPlan",
    "MUTANTS",
    "Mutant",
    "Operation",
    "RecoverFn",
    "RunResult",
    "SeedFailure",
    "SeedResult",
    "SimSpec",
    "Violation",
    "World",
    "check_epochs",
    "end_states",
    "planted",
    "run_campaign",
    "run_seed",
    "run_with",
    "simulate",
]
