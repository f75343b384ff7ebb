"""Testing tools for coroutine state machines: ours, and yours.

- The simulator (:mod:`corosm.testing.sim`): run a machine in a simulated
  world (virtual time, seeded scheduling, injected I/O faults, crashes and
  restarts through the journal's real recovery) and check what clients saw.
  Start with :func:`simulate` and ``docs/testing.md``.
- The linearizability checker (:mod:`corosm.testing.linearizability`): check a
  recorded concurrent history against a sequential model
  (:func:`check_linearizable`, :class:`HistoryRecorder`).

The simulator's own operation record is ``corosm.testing.sim.Operation``; the
one exported here is the checker's.
"""

from corosm.testing.linearizability import (
    UNKNOWN,
    HistoryRecorder,
    LinearizabilityResult,
    Operation,
    check_linearizable,
)
from corosm.testing.sim import (
    CampaignResult,
    FaultPlan,
    SeedFailure,
    SeedResult,
    SimSpec,
    World,
    run_campaign,
    run_seed,
    simulate,
)

__all__ = [
    "UNKNOWN",
    "CampaignResult",
    "FaultPlan",
    "HistoryRecorder",
    "LinearizabilityResult",
    "Operation",
    "SeedFailure",
    "SeedResult",
    "SimSpec",
    "World",
    "check_linearizable",
    "run_campaign",
    "run_seed",
    "simulate",
]
