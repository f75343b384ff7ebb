"""Hypothesis integration: let ``@given`` drive the simulator and shrink failures.

Theory of operation
-------------------
The world takes every decision (latencies, completion order, workload inputs,
faults, crash points) from one ``random.Random``. Hypothesis's
``st.randoms(use_true_random=False)`` gives a ``Random`` whose every draw is
recorded in Hypothesis's choice sequence, so when a run fails Hypothesis can
shrink the *choices themselves*: fewer operations, earlier crashes, simpler
inputs. :func:`fault_plans` draws the shape of the run (clients, operations,
fault rates) so that shrinking also simplifies the plan. Use::

    @given(rng=st.randoms(use_true_random=False), plan=fault_plans())
    def test_my_machine(rng, plan):
        assert_linearizable(replace(MY_SPEC, faults=plan), rng)
"""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import reject
from hypothesis import strategies as st

from corosm.testing._args import need, need_instance, need_int
from corosm.testing.sim.campaign import SimSpec, failure_of, run_with
from corosm.testing.sim.faults import FaultPlan


def fault_plans(
    *, max_clients: int = 4, max_ops_per_client: int = 8, faults: bool = True
) -> st.SearchStrategy[FaultPlan]:
    """Fault plans from calm to hostile; shrinks toward one client, few ops, no faults."""
    need_int("fault_plans(max_clients=...)", max_clients, 1)
    need_int("fault_plans(max_ops_per_client=...)", max_ops_per_client, 1)
    need(isinstance(faults, bool), "fault_plans(faults=...)", faults, "True or False")
    return _fault_plans(max_clients, max_ops_per_client, faults)


@st.composite
def _fault_plans(
    draw: st.DrawFn, max_clients: int, max_ops_per_client: int, faults: bool
) -> FaultPlan:
    probability = st.sampled_from([0.0, 0.005, 0.02, 0.1]) if faults else st.just(0.0)
    return FaultPlan(
        clients=draw(st.integers(1, max_clients)),
        ops_per_client=draw(st.integers(1, max_ops_per_client)),
        crash_probability=draw(probability),
        max_crashes=draw(st.integers(0, 3)) if faults else 0,
        tear_probability=draw(st.sampled_from([0.0, 0.5, 1.0])),
        write_error_probability=draw(probability),
        enospc_probability=draw(probability),
        fsync_error_probability=draw(probability),
        snapshot_every_records=draw(st.sampled_from([0, 2, 5])),
        snapshot_crash_probability=draw(probability),
    )


def schedules(spec: SimSpec) -> st.SearchStrategy[tuple[random.Random, FaultPlan]]:
    """Pairs of (Hypothesis-controlled random generator, fault plan) for ``spec``."""
    need_instance("spec", spec, SimSpec)
    return st.tuples(st.randoms(use_true_random=False), fault_plans())


def assert_linearizable(spec: SimSpec, rng: random.Random, plan: FaultPlan | None = None) -> None:
    """Run ``spec`` with choices from ``rng``; raise AssertionError with the report if it fails."""
    need_instance("spec", spec, SimSpec)
    need_instance("plan", plan, FaultPlan, optional=True)
    if plan is not None:
        spec = replace(spec, faults=plan)
    result = run_with(spec, rng)
    if result.violation is not None and result.violation.epoch < 0:
        # The checker ran out of budget (Hypothesis's draws can make every I/O fail,
        # leaving too many unknown outcomes): undecided, so not a counterexample.
        reject()
    if result.violation is not None:
        failure = failure_of(replace(spec, name=None), result)
        raise AssertionError(
            f"{failure.summary}\n{failure.operations}\n--- trace ---\n{result.trace}"
        )
