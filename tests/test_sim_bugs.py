"""The simulator finds real bugs, in the machine and in the shipped host and journal.

Each test breaks one rule that corosm's durability and ordering rest on, runs a
bounded seed budget, and asserts that a seed fails, that the report explains
it, and that replaying that seed fails the same way (the report is reproducible).
Host and journal bugs are *mutants* planted in the code that ships
(:mod:`corosm.testing.sim.mutants`): the simulator drives that very code.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import re
from typing import Any

import pytest

from corosm.apps.kv.inputs import Write
from corosm.apps.kv.machine import KVMachine
from corosm.apps.kv.outputs import OK, Output
from corosm.apps.kv.records import Put
from corosm.apps.kv.state import KVState
from corosm.core import Context, Machine, Policy
from corosm.errors import UsageError
from corosm.io.journal import Recovered, recover
from corosm.io.journal.files import FileSystem, OSFileSystem
from corosm.io.journal.format import decode_snapshot
from corosm.runtime.host import Host
from corosm.testing.sim import (
    MUTANTS,
    FaultPlan,
    SimSpec,
    cli,
    planted,
    run_campaign,
    run_seed,
)
from corosm.testing.sim.kv import KV_SPEC
from corosm.testing.sim.world import World

BUDGET = range(600)


def find_bug(spec: SimSpec) -> str:
    """Run the budget; the first failure must replay identically. Return its report."""
    result = run_campaign(spec, BUDGET)
    assert result.failure is not None, f"bug not found in {result.seeds_run} seeds"
    report = result.failure.report()
    again = run_seed(spec, result.failure.seed)
    assert again.violation is not None
    assert again.violation.summary == result.failure.summary
    assert f"--seed {result.failure.seed} --replay" in report or "run_seed(spec" in report
    print(report)
    return report


# (1) the state changes before the append completes --------------------------------


class EagerWriteKV(KVMachine):
    """BUG: a write is visible (and readable) before it is durable."""

    def supports_log(self) -> bool:
        return False  # every input runs handle, where the bug is

    async def handle(self, ctx: Context[KVState], input: Any) -> Output:
        if isinstance(input, Write):
            ctx.state.data[input.key] = input.value  # too early: not yet in the journal
            await ctx.append(Put(input.key, input.value))
            return OK
        return await super().handle(ctx, input)


def test_state_changed_before_append_completes_is_caught() -> None:
    report = find_bug(dataclasses.replace(KV_SPEC, machine_factory=EagerWriteKV, name=None))
    assert "recovery after crash" in report or "not linearizable" in report


# (3) recovery skips the journal after the snapshot -----------------------------------


def recover_snapshot_only(
    directory: str, machine: Machine[Any, Any, Any], *, fs: FileSystem | None = None
) -> Recovered[Any]:
    """BUG: the real recovery, but its state is the newest snapshot's, without the tail."""
    full = recover(directory, machine, fs=fs)
    path = full.report.snapshot_path
    if path is None:
        return full
    _lsn, payload = decode_snapshot(path, (fs or OSFileSystem()).read(path))
    return Recovered(machine.restore(payload), full.next_lsn, full.report)


def test_recovery_that_skips_the_snapshot_tail_is_caught() -> None:
    report = find_bug(dataclasses.replace(KV_SPEC, recover=recover_snapshot_only, name=None))
    assert "recovery after crash" in report
    assert "snapshot at lsn" in report
    # The restart line shows the real recovery did replay records past the snapshot.
    assert re.search(r"RESTART: snapshot lsn [1-9]\d* \+ [1-9]\d* records replayed", report)


# (2) bugs planted in the shipped host and journal -----------------------------------

#: Seeds within which each planted bug must be found. Observed first failing
#: seeds on the default KV spec: reply-before-fsync 0, apply-before-durable 0
#: (the host's own snapshot guard, or at seed 1 a lost write with snapshots
#: off), no-dir-fsync-on-new-segment 0, failed-batch-acknowledged 18,
#: snapshot-ahead-of-apply 28, completions-out-of-log-order 15,
#: admit-past-max-inflight 0. The budget leaves room for changes in the world.
MUTANT_BUDGET = range(200)


def replay_through_the_cli(command: str) -> tuple[int, str]:
    """Run a printed ``corosm sim ...`` replay command through the CLI's own handler."""
    argv = command.split()
    assert argv[:2] == ["corosm", "sim"], command
    parser = argparse.ArgumentParser(prog="corosm")
    cli.register(parser.add_subparsers(dest="command", required=True))
    out, err = io.StringIO(), io.StringIO()
    status = cli.run(parser.parse_args(argv[1:]), out, err)
    return status, out.getvalue()


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_a_bug_planted_in_the_shipped_code_is_caught_and_replays(name: str) -> None:
    spec = dataclasses.replace(KV_SPEC, mutant=name)
    result = run_campaign(spec, MUTANT_BUDGET)
    assert result.failure is not None, f"{name} not found in {result.seeds_run} seeds"
    failure = result.failure
    replay = failure.replay
    assert f"--seed {failure.seed} --mutant {name} --replay" in replay
    status, out = replay_through_the_cli(replay)
    assert status == 1
    assert f"seed {failure.seed}: FAILED: {failure.summary}" in out
    # Not planted, the same seed passes: the mutant, not the seed, is at fault.
    assert run_seed(KV_SPEC, failure.seed).violation is None


def test_a_planted_bug_is_removed_after_the_run() -> None:
    from corosm.io.journal.control import JournalControl

    original = JournalControl.sync_due
    run_seed(dataclasses.replace(KV_SPEC, mutant="reply-before-fsync"), 0)
    assert JournalControl.sync_due is original
    # A host bug is planted in a subclass that the world builds instead of Host.
    with planted("admit-past-max-inflight"):
        assert issubclass(World.host_class, Host) and World.host_class is not Host
    assert World.host_class is Host


def test_an_unknown_mutant_is_refused_with_the_known_names() -> None:
    with pytest.raises(UsageError, match="reply-before-fsync"):
        run_seed(dataclasses.replace(KV_SPEC, mutant="no-such-bug"), 0)


def test_the_same_workload_passes_without_the_bugs() -> None:
    assert run_campaign(KV_SPEC, BUDGET).ok


# (5) interleave where a read-modify-write needs per_key ------------------------------


class Incr:
    """Input: add one to the counter ``key``."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"Incr({self.key!r})"


class CounterMachine(Machine[dict[str, int], Incr, int]):
    """A read-modify-write counter: correct only under PER_KEY."""

    policy = Policy.INTERLEAVE

    def initial_state(self) -> dict[str, int]:
        return {}

    def key(self, input: Incr) -> str:
        return input.key

    async def handle(self, ctx: Context[dict[str, int]], input: Incr) -> int:
        new = ctx.state.get(input.key, 0) + 1  # read ...
        await ctx.append(f"{input.key}={new}".encode())  # ... suspend ...
        return new  # ... and answer what we computed before suspending

    def apply(self, state: dict[str, int], record: Any) -> dict[str, int]:
        key, value = bytes(record).decode().split("=")
        return {**state, key: int(value)}


class PerKeyCounter(CounterMachine):
    policy = Policy.PER_KEY


def counter_step(state: tuple[tuple[str, int], ...], input: Incr) -> tuple[int, Any]:
    data = dict(state)
    data[input.key] = data.get(input.key, 0) + 1
    return data[input.key], tuple(sorted(data.items()))


COUNTER = SimSpec(
    machine_factory=CounterMachine,
    model_init=tuple,
    model_step=counter_step,
    workload=lambda rng: Incr(rng.choice("xy")),
    observe=lambda state: tuple(sorted(state.items())),
    faults=FaultPlan.calm(),
)


def test_interleave_policy_on_read_modify_write_is_caught() -> None:
    report = find_bug(COUNTER)
    assert "not linearizable" in report
    assert "Incr(" in report


def test_per_key_policy_fixes_the_counter() -> None:
    assert run_campaign(dataclasses.replace(COUNTER, machine_factory=PerKeyCounter), BUDGET).ok


class NotAsyncCounter(PerKeyCounter):
    """Every input fails: ``handle`` is not an ``async def``."""

    def handle(self, ctx: Context[dict[str, int]], input: Incr) -> int:  # type: ignore[override]
        return 0


def test_a_campaign_shows_the_operations_answered_with_an_error() -> None:
    # An error is an unknown outcome to the checker, so a machine whose every
    # input fails still passes: the summary has to show what it saw.
    broken = run_campaign(dataclasses.replace(COUNTER, machine_factory=NotAsyncCounter), range(3))
    assert broken.ok and broken.operations > 0
    assert broken.errors == {"HandlerMisuse": broken.operations}  # the machine's bug
    line = (
        "answered with an error (outcome unknown to the checker): "
        f"HandlerMisuse {broken.operations}"
    )
    assert line in broken.summary()
    healthy = run_campaign(dataclasses.replace(COUNTER, machine_factory=PerKeyCounter), range(3))
    assert healthy.ok and healthy.errors == {}
    assert "answered with an error" not in healthy.summary()
