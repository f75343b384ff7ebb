"""The run checker: epochs, the recovery probe, end-state sets, and the round-1 budget blow-up."""

from __future__ import annotations

import dataclasses
import random
import time

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from corosm.apps.kv.inputs import IncrBy, Read, Write
from corosm.apps.kv.model import EMPTY, ModelState, partition_key, step
from corosm.apps.kv.outputs import OK, IntValue, Value
from corosm.errors import UsageError
from corosm.testing.sim import Epoch, FaultPlan, Operation, check_epochs, end_states, run_seed
from corosm.testing.sim.check import CheckBudgetExceeded
from corosm.testing.sim.hypothesis import assert_linearizable, fault_plans
from corosm.testing.sim.kv import KV_SPEC
from test_sim_bugs import EagerWriteKV, find_bug

# The plan round 1's Hypothesis run shrank to: fsync errors only, p=0.02, no crashes.
FSYNC_ONLY = FaultPlan.calm(fsync_error_probability=0.02, clients=3, ops_per_client=8)
ROUND1_SEED = 329275789352648584075584813967587381818


def op(
    i: int, input: object, called: float, returned: float | None, output: object = None
) -> Operation:
    return Operation(i, i, input, called, returned, output, "" if returned else "crash")


def crashed_epoch(recovered: ModelState) -> list[Epoch]:
    ops = [
        op(0, Write(b"a", b"1"), 0.0, 1.0, OK),
        op(1, IncrBy(b"a", 2), 2.0, None),  # cut by the crash: may or may not have happened
    ]
    return [
        Epoch(0, ops, recovered, crashed=True),
        Epoch(1, [op(2, Read(b"a"), 5.0, 6.0, Value(recovered.get(b"a")))]),
    ]


@pytest.mark.parametrize("partition", [None, partition_key])
def test_recovered_state_must_be_one_the_history_allows(partition: object) -> None:
    for good in (ModelState({b"a": b"1"}), ModelState({b"a": b"3"})):
        assert check_epochs(crashed_epoch(good), lambda: EMPTY, step, partition=partition) is None  # type: ignore[arg-type]
    for lost in (EMPTY, ModelState({b"a": b"2"}), ModelState({b"a": b"1", b"b": b"1"})):
        violation = check_epochs(crashed_epoch(lost), lambda: EMPTY, step, partition=partition)  # type: ignore[arg-type]
        assert violation is not None and violation.epoch == 0
        assert (
            "recovery after crash 1 rebuilt a state the history does not allow" in violation.summary
        )


def test_a_wrong_reply_is_reported_with_the_operation_and_what_the_model_allows() -> None:
    ops = [op(0, Write(b"a", b"1"), 0.0, 1.0, OK), op(1, IncrBy(b"a", 2), 2.0, 3.0, IntValue(2))]
    violation = check_epochs([Epoch(0, ops)], lambda: EMPTY, step, partition=partition_key)
    assert violation is not None
    assert "not linearizable" in violation.summary and "IncrBy" in violation.summary
    assert "model would give IntValue(n=3)" in violation.details


def test_end_state_sets_without_observe_cover_every_unknown_outcome() -> None:
    ops = [op(0, Write(b"a", b"1"), 0.0, 1.0, OK), op(1, IncrBy(b"a", 2), 2.0, None)]
    ends = end_states(ops, [EMPTY], step)
    assert ends == {ModelState({b"a": b"1"}), ModelState({b"a": b"3"})}


def unknown_heavy_seed() -> tuple[int, list[Epoch]]:
    """A seed of the round-1 plan whose first epoch holds a dozen unknown outcomes."""
    spec = dataclasses.replace(KV_SPEC, faults=FSYNC_ONLY)
    for s in range(1000):
        epochs = run_seed(spec, s).run.epochs
        if sum(not o.known for o in epochs[0].operations) >= 12 and epochs[0].crashed:
            return s, epochs
    raise AssertionError("no seed with a dozen unknown outcomes in 1000")


def test_round1_blow_up_many_unknown_outcomes_are_decided_fast() -> None:
    s, epochs = unknown_heavy_seed()
    # Round 1 enumerated every end state: exponential in the unknown outcomes.
    with pytest.raises(CheckBudgetExceeded):
        end_states(epochs[0].operations, [EMPTY], step, budget=20_000)
    # Now the recovered state is checked with one probe: no enumeration at all.
    started = time.monotonic()
    result = run_seed(dataclasses.replace(KV_SPEC, faults=FSYNC_ONLY, check_budget=20_000), s)
    assert result.ok, result.violation
    assert time.monotonic() - started < 2.0


def test_round1_plan_campaign_passes_within_a_small_budget() -> None:
    spec = dataclasses.replace(
        KV_SPEC, faults=dataclasses.replace(FSYNC_ONLY, clients=4), check_budget=20_000
    )
    for s in range(300):
        result = run_seed(spec, s)
        assert result.ok, (s, result.violation)


@seed(ROUND1_SEED)
@settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(rng=st.randoms(use_true_random=False), plan=fault_plans())
def test_round1_hypothesis_seed_passes(rng: random.Random, plan: FaultPlan) -> None:
    assert_linearizable(KV_SPEC, rng, plan)


def test_eager_write_bug_is_caught_without_observe_through_end_state_sets() -> None:
    spec = dataclasses.replace(
        KV_SPEC, machine_factory=EagerWriteKV, observe=None, partition=None, name=None
    )
    report = find_bug(spec)
    assert "not linearizable" in report
    assert dataclasses.replace(KV_SPEC, observe=None, partition=None).faults == KV_SPEC.faults


def test_partition_with_states_that_are_not_mappings_is_a_clear_usage_error() -> None:
    ops = [op(0, Write(b"a", b"1"), 0.0, 1.0, OK)]
    epochs = [Epoch(0, ops, recovered=(("a", "1"),), crashed=True)]

    def tuple_step(state: object, input: object) -> tuple[object, object]:
        return OK, (("a", "1"),)

    with pytest.raises(UsageError, match="must be Mappings from the partition keys"):
        check_epochs(epochs, tuple, tuple_step, partition=partition_key)
