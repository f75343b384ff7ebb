"""Hypothesis drives the simulator: a correct machine passes, a broken one shrinks to a failure."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corosm.testing.sim import FaultPlan
from corosm.testing.sim.hypothesis import assert_linearizable, fault_plans
from corosm.testing.sim.kv import KV_SPEC
from test_sim_bugs import COUNTER

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(rng=st.randoms(use_true_random=False), plan=fault_plans())
def test_kv_machine_is_linearizable_under_any_schedule(rng: random.Random, plan: FaultPlan) -> None:
    assert_linearizable(KV_SPEC, rng, plan)


def test_broken_counter_is_found_and_shrunk() -> None:
    failures: list[str] = []

    @settings(max_examples=200, deadline=None, database=None)
    @given(rng=st.randoms(use_true_random=False), plan=fault_plans(faults=False))
    def check(rng: random.Random, plan: FaultPlan) -> None:
        try:
            assert_linearizable(COUNTER, rng, plan)
        except AssertionError as exc:
            failures.append(str(exc))
            raise

    with pytest.raises(AssertionError, match="not linearizable"):
        check()
    # The shrunk (last) example needs two concurrent increments of one key, nothing more.
    shrunk = failures[-1]
    assert shrunk.count("sends Incr(") <= 3, shrunk


@FAST
@given(plan=fault_plans(faults=False))
def test_calm_fault_plans_have_no_faults(plan: FaultPlan) -> None:
    assert plan.max_crashes == 0 and plan.crash_probability == 0.0
    assert dataclasses.replace(plan).clients >= 1
