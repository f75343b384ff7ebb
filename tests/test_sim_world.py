"""The simulated world: determinism, the CI seed budget, effects, timeouts, bad input."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from corosm.core import Context, Machine
from corosm.core.effects import Effect
from corosm.errors import UsageError
from corosm.testing.sim import FaultPlan, SimSpec, World, run_campaign, run_seed
from corosm.testing.sim.kv import KV_SPEC


def test_same_seed_gives_the_same_trace_byte_for_byte() -> None:
    first, second = run_seed(KV_SPEC, 12345), run_seed(KV_SPEC, 12345)
    assert first.trace == second.trace
    assert first.trace.count("\n") > 20
    assert run_seed(KV_SPEC, 12346).trace != first.trace


def test_same_seed_same_trace_over_the_real_host_and_journal_under_every_fault() -> None:
    # The shipped Host and JournalControl under crashes, I/O errors, snapshots
    # and completion slices: still one trace per seed, byte for byte.
    plan = FaultPlan(
        clients=4,
        max_inflight=2,
        crash_probability=0.05,
        max_crashes=3,
        write_error_probability=0.05,
        fsync_error_probability=0.05,
        snapshot_every_records=2,
        snapshot_crash_probability=0.2,
    )
    spec = dataclasses.replace(KV_SPEC, faults=plan)
    for seed in range(20):
        first, second = run_seed(spec, seed), run_seed(spec, seed)
        assert first.trace == second.trace, f"seed {seed} is not deterministic"
    text = "".join(run_seed(spec, seed).trace for seed in range(20))
    # The host's snapshot phase and the journal control's steps are in the trace.
    assert "snapshot at lsn" in text and "started" in text
    assert "fdatasync ok" in text and "RESTART" in text


def test_ci_budget_thousands_of_kv_seeds_all_pass() -> None:
    # ~4 s on the 2-core CI box: the default run's share of the campaign.
    result = run_campaign(KV_SPEC, range(4000))
    assert result.ok, result.summary()
    assert result.seeds_run == 4000
    assert result.crashes > 1000  # the budget really exercises crash + recovery


def test_hostile_plan_exercises_every_fault_and_still_passes() -> None:
    plan = FaultPlan(
        crash_probability=0.05,
        max_crashes=3,
        write_error_probability=0.1,
        enospc_probability=0.1,
        fsync_error_probability=0.1,
        snapshot_every_records=2,
        snapshot_crash_probability=0.3,
    )
    spec = dataclasses.replace(KV_SPEC, faults=plan)
    text = "".join(run_seed(spec, seed).trace for seed in range(200))
    for needle in (
        "CRASH",
        "RESTART",
        "torn",
        "No space left",
        "fdatasync failed",
        "snapshot at lsn",
        "while writing the snapshot",
        "while removing covered files",
        "removed journal-",
        "torn tail cut at byte",
    ):
        assert needle in text, needle
    assert run_campaign(spec, range(300)).ok


class Fetch(Effect[int]):
    """A custom effect: fetch a number from somewhere."""


class Slow(Machine[tuple[int, ...], int, Any]):
    """Uses Call, Sleep, a custom effect and ctx.timeout: independent I/O."""

    def initial_state(self) -> tuple[int, ...]:
        return ()

    async def handle(self, ctx: Context[tuple[int, ...]], input: int) -> Any:
        if input == 0:
            return await ctx.call(pow, 2, 10)
        if input == 1:
            await ctx.sleep(0.001)
            return "slept"
        if input == 2:
            return await ctx.perform(Fetch())
        try:
            return await ctx.timeout(ctx.start(Fetch()), 0.0000001)
        except Exception as exc:
            return type(exc).__name__


def slow_step(state: Any, input: int) -> tuple[Any, Any]:
    return {0: 1024, 1: "slept", 2: 7, 3: "EffectTimeout"}[input], state


SLOW = SimSpec(
    machine_factory=Slow,
    model_init=tuple,
    model_step=slow_step,
    workload=lambda rng: rng.randrange(4),
    effects={Fetch: lambda effect, rng: 7},
    faults=FaultPlan.calm(),
)


def test_call_sleep_custom_effects_and_timeouts_run_in_virtual_time() -> None:
    result = run_seed(SLOW, 3)
    assert result.ok, result.violation
    assert "Call(pow(2, 10))" in result.trace
    assert "cancel #" in result.trace or "EffectTimeout" in result.trace
    assert run_campaign(SLOW, range(200)).ok


def test_unknown_custom_effect_fails_that_input_with_a_clear_error() -> None:
    spec = dataclasses.replace(
        SLOW, effects=None, workload=lambda rng: 2, faults=FaultPlan.calm(ops_per_client=2)
    )
    result = run_seed(spec, 1)
    assert "no simulated executor for Fetch" in result.trace


def test_client_timeout_makes_the_outcome_unknown_not_wrong() -> None:
    class Stuck(Slow):
        async def handle(self, ctx: Context[tuple[int, ...]], input: int) -> Any:
            await ctx.sleep(0.06)  # longer than the client's 0.05 s timeout
            return input

    spec = dataclasses.replace(
        SLOW,
        machine_factory=Stuck,
        model_step=lambda s, i: (-1, s),
        faults=FaultPlan.calm(ops_per_client=3),
    )
    result = run_seed(spec, 0)
    assert result.ok  # every op timed out, so any output is allowed
    ops = [op for epoch in result.run.epochs for op in epoch.operations]
    assert ops and all(op.note == "timeout" and not op.known for op in ops)
    assert "late reply dropped" in result.trace


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("clients", 0, "an int >= 1"),
        ("crash_probability", 1.5, "a number in [0, 1]"),
        ("io_latency", (0.2, 0.1), "0 <= low <= high"),
        ("client_timeout", float("nan"), "a positive number"),
    ],
)
def test_bad_fault_plan_is_rejected_with_what_was_expected(
    field: str, value: object, expected: str
) -> None:
    with pytest.raises(UsageError, match=field) as info:
        FaultPlan(**{field: value})  # type: ignore[arg-type]
    assert expected in str(info.value)


def test_factory_that_is_not_a_machine_is_rejected() -> None:
    with pytest.raises(UsageError, match="must return a corosm Machine"):
        World(object, lambda rng: 1, random.Random(0))  # type: ignore[arg-type]


def test_unhashable_model_state_is_rejected_clearly() -> None:
    spec = dataclasses.replace(KV_SPEC, model_init=dict)
    with pytest.raises(UsageError, match="not hashable"):
        run_seed(spec, 0)


def test_a_sleep_too_long_for_a_float_waits_and_fails_nothing_else() -> None:
    """As the runtime's timers do: 10**400 s is armed as LONGEST, not an OverflowError."""

    class Forever(Slow):
        async def handle(self, ctx: Context[tuple[int, ...]], input: int) -> Any:
            return await ctx.any(ctx.start_sleep(10**400), ctx.start(Fetch()))

    spec = dataclasses.replace(
        SLOW,
        machine_factory=Forever,
        model_step=lambda s, i: ((1, 7), s),
        faults=FaultPlan.calm(ops_per_client=2),
    )
    result = run_seed(spec, 0)
    assert result.ok, result.violation
    ops = [op for epoch in result.run.epochs for op in epoch.operations]
    assert ops and all(op.known and op.output == (1, 7) for op in ops), ops[0].describe()
