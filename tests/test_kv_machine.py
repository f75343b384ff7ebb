"""The key-value machine driven by hand through the Stepper, against the model."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corosm.apps.kv import inputs as kvi
from corosm.apps.kv.machine import KVMachine
from corosm.apps.kv.model import EMPTY, ModelState, partition_key, step
from corosm.apps.kv.outputs import (
    NOT_INTEGER,
    OK,
    OVERFLOW,
    Count,
    IntValue,
    Output,
    SetOutcome,
    Value,
    Values,
)
from corosm.apps.kv.records import Clear, Increment, Put, decode_record, encode_record
from corosm.apps.kv.state import KVState, apply_record
from corosm.core import (
    Append,
    InputArrived,
    IOCompleted,
    Machine,
    Reply,
    ReplyError,
    StartIO,
    Stepper,
)
from corosm.core.context import Context
from corosm.errors import EffectError, UsageError
from corosm.testing.linearizability import UNKNOWN, Operation, check_linearizable

KEYS = st.sampled_from([b"a", b"b", b"c"])
VALUES = st.sampled_from([b"", b"1", b"-7", b"x", b"9223372036854775807", b"007"])


def inputs() -> st.SearchStrategy[kvi.Input]:
    keys = st.lists(KEYS, min_size=1, max_size=3).map(tuple)
    return st.one_of(
        st.builds(kvi.Write, KEYS, VALUES),
        st.builds(kvi.Read, KEYS),
        st.builds(kvi.Delete, KEYS),
        st.just(kvi.Reset()),
        st.builds(kvi.Exists, keys),
        st.builds(kvi.ReadMany, keys),
        st.builds(kvi.WriteMany, st.lists(st.tuples(KEYS, VALUES), max_size=3).map(tuple)),
        st.builds(
            lambda k, v, mode, old: kvi.SetIf(k, v, mode == "nx", mode == "xx", old),
            KEYS, VALUES, st.sampled_from(["", "nx", "xx"]), st.booleans(),
        ),
        st.builds(kvi.IncrBy, KEYS, st.sampled_from([1, -1, 5, 2**62, -(2**63)])),
        st.builds(kvi.AppendBytes, KEYS, VALUES),
        st.builds(kvi.StrLen, KEYS),
        st.just(kvi.Size()),
        st.builds(kvi.DeleteMany, keys),
    )  # fmt: skip


class Driver:
    """Feeds a stepper by hand; completes appends in log order when asked."""

    def __init__(self, machine: Machine[Any, Any, Any] | None = None) -> None:
        self.stepper: Stepper[Any, Any, Any] = Stepper(machine or KVMachine())
        self.pending: deque[int] = deque()
        self.journal: list[bytes] = []  # encoded records, in completion order
        self.records: dict[int, Any] = {}
        self.replies: dict[Any, Any] = {}
        self.now = 0

    def _take(self, actions: list[Any]) -> None:
        for action in actions:
            match action:
                case StartIO(request, Append(record)):
                    self.pending.append(request)
                    self.records[request] = record
                case Reply(client, output) | ReplyError(client, output):
                    self.replies[client] = (output, self.now)
                case _:
                    raise AssertionError(f"unexpected action {action!r}")

    def send(self, client: Any, inp: Any) -> None:
        self.now += 1
        self._take(self.stepper.feed(InputArrived(client, inp)))

    def complete_one(self, error: BaseException | None = None) -> None:
        self.now += 1
        request = self.pending.popleft()
        if error is None:
            self.journal.append(encode_record(self.records[request]))
        self._take(self.stepper.feed(IOCompleted(request, None, error)))

    def run(self, client: Any, inp: Any) -> Any:
        self.send(client, inp)
        while self.pending:
            self.complete_one()
        return self.replies.pop(client)[0]


def replay(journal: Sequence[bytes]) -> KVState:
    state = KVState()
    for blob in journal:
        state = apply_record(state, decode_record(blob))
    return state


@settings(max_examples=150, deadline=None)
@given(st.lists(inputs(), max_size=40))
def test_sequential_runs_match_the_model_and_recovery_rebuilds_the_state(
    seq: list[kvi.Input],
) -> None:
    driver = Driver()
    model: ModelState = EMPTY
    for i, inp in enumerate(seq):
        expected, model = step(model, inp)
        assert driver.run(i, inp) == expected
        assert driver.stepper.state.data == dict(model)
    assert replay(driver.journal).data == dict(model)
    machine = KVMachine()
    assert machine.restore(machine.snapshot(driver.stepper.state)).data == dict(model)


@st.composite
def schedules(draw: st.DrawFn) -> list[kvi.Input | None]:
    """Inputs interleaved with None, meaning "complete the oldest pending append"."""
    return draw(st.lists(st.one_of(inputs(), st.none()), max_size=60))


@settings(max_examples=150, deadline=None)
@given(schedules(), st.booleans())
def test_interleaved_runs_are_linearizable_and_recoverable(
    schedule: list[kvi.Input | None], crash: bool
) -> None:
    driver = Driver()
    calls: dict[int, tuple[kvi.Input, int]] = {}
    for item in schedule:
        if item is None:
            if driver.pending:
                driver.complete_one()
            continue
        client = len(calls)
        calls[client] = (item, driver.now + 1)
        driver.send(client, item)
    # A crash leaves the appends in flight unanswered: their outcome is unknown.
    while driver.pending and not crash:
        driver.complete_one()
    history: list[Operation[Any, Any]] = []
    for client, (inp, call) in calls.items():
        if client in driver.replies:
            output, ret = driver.replies[client]
            history.append(Operation(client, inp, output, call, ret))
        else:
            assert crash
            history.append(Operation(client, inp, UNKNOWN, call))
    result = check_linearizable(history, step, EMPTY, partition_key)
    assert result.ok, result.explanation
    # Recovery from the journal gives exactly the state the live machine had.
    assert replay(driver.journal).data == driver.stepper.state.data


def test_concurrent_increments_do_not_lose_updates() -> None:
    driver = Driver()
    driver.send(1, kvi.IncrBy(b"n", 1))
    driver.send(2, kvi.IncrBy(b"n", 1))
    driver.send(3, kvi.IncrBy(b"n", 5))
    assert len(driver.pending) == 3 and not driver.replies  # all suspended at once
    for _ in range(3):
        driver.complete_one()
    assert [driver.replies[c][0] for c in (1, 2, 3)] == [IntValue(1), IntValue(2), IntValue(7)]
    assert driver.stepper.state.data == {b"n": b"7"}


def test_increment_of_a_value_that_changed_meanwhile_is_a_rejected_no_op() -> None:
    driver = Driver()
    driver.send(1, kvi.IncrBy(b"n", 1))
    driver.send(2, kvi.Write(b"n", b"text"))
    driver.send(3, kvi.IncrBy(b"n", 1))
    for _ in range(3):
        driver.complete_one()
    assert driver.replies[1][0] == IntValue(1)
    assert driver.replies[3][0] == NOT_INTEGER
    assert driver.stepper.state.data == {b"n": b"text"}
    assert replay(driver.journal).data == {b"n": b"text"}


def test_overflow_is_rejected_and_changes_nothing() -> None:
    driver = Driver()
    driver.run(0, kvi.Write(b"n", b"9223372036854775806"))
    assert driver.run(1, kvi.IncrBy(b"n", 1)) == IntValue(2**63 - 1)
    assert driver.run(2, kvi.IncrBy(b"n", 1)) == OVERFLOW
    assert driver.run(3, kvi.Read(b"n")) == Value(b"9223372036854775807")


def test_set_nx_xx_get() -> None:
    driver = Driver()
    assert driver.run(0, kvi.SetIf(b"k", b"1", xx=True)) == SetOutcome(False, None)
    assert driver.run(1, kvi.SetIf(b"k", b"1", nx=True)) == SetOutcome(True, None)
    assert driver.run(2, kvi.SetIf(b"k", b"2", nx=True, return_old=True)) == SetOutcome(False, b"1")
    assert driver.run(3, kvi.SetIf(b"k", b"3", return_old=True)) == SetOutcome(True, b"1")
    assert driver.run(4, kvi.Read(b"k")) == Value(b"3")


def test_multi_key_commands() -> None:
    driver = Driver()
    assert driver.run(0, kvi.WriteMany(((b"a", b"1"), (b"b", b"2"), (b"a", b"3")))) == OK
    assert len(driver.journal) == 1  # MSET is one record: atomic
    assert driver.run(1, kvi.ReadMany((b"a", b"b", b"z"))) == Values((b"3", b"2", None))
    assert driver.run(2, kvi.Exists((b"a", b"a", b"z"))) == Count(2)
    assert driver.run(3, kvi.AppendBytes(b"a", b"45")) == Count(3)
    assert driver.run(4, kvi.StrLen(b"a")) == Count(3)
    assert driver.run(5, kvi.Size()) == Count(2)
    assert driver.run(6, kvi.DeleteMany((b"a", b"a", b"z"))) == Count(1)
    before = len(driver.journal)
    assert driver.run(7, kvi.DeleteMany((b"a", b"z"))) == Count(0)
    assert len(driver.journal) == before  # nothing to delete: no record
    assert driver.run(8, kvi.Reset()) == OK
    assert driver.journal[-1] == encode_record(Clear())
    assert driver.run(9, kvi.Size()) == Count(0)


def test_nothing_is_applied_or_acknowledged_before_the_append_completes() -> None:
    driver = Driver()
    driver.send(1, kvi.Write(b"k", b"1"))
    assert driver.stepper.state.data == {}
    assert 1 not in driver.replies
    driver.send(2, kvi.Read(b"k"))
    assert driver.replies[2][0] == Value(None)  # reads see only durable state
    driver.complete_one()
    assert driver.replies[1][0] == OK
    assert driver.stepper.state.data == {b"k": b"1"}


def test_a_failed_append_fails_that_input_and_changes_nothing() -> None:
    driver = Driver()
    driver.send(1, kvi.Write(b"k", b"1"))
    driver.complete_one(error=OSError(28, "No space left on device"))
    output = driver.replies[1][0]
    assert isinstance(output, EffectError) and "No space left" in str(output)
    assert driver.stepper.state.data == {}
    assert driver.run(2, kvi.Write(b"k", b"2")) == OK


def test_bad_inputs_are_clear_usage_errors() -> None:
    with pytest.raises(UsageError, match=r"Write.key must be bytes, not str"):
        kvi.Write("k", b"1")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="nx and xx exclude each other"):
        kvi.SetIf(b"k", b"1", nx=True, xx=True)
    with pytest.raises(UsageError, match="64-bit signed int"):
        kvi.IncrBy(b"k", 2**63)
    with pytest.raises(UsageError, match="sequence of bytes keys"):
        kvi.Exists(b"abc")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="key, value"):
        kvi.WriteMany(((b"k",),))  # type: ignore[arg-type]
    driver = Driver()
    error = driver.run(1, "Write x 1")
    assert isinstance(error, UsageError) and "does not take" in str(error)
    assert driver.run(2, kvi.Size()) == Count(0)  # the machine goes on


class NaiveIncr(Machine[KVState, Any, Output]):
    """Reads, then suspends, then writes: the bug intent records prevent."""

    def initial_state(self) -> KVState:
        return KVState()

    async def handle(self, ctx: Context[KVState], input: Any) -> Output:
        new = int(ctx.state.data.get(input.key, b"0")) + input.delta
        await ctx.append(Put(input.key, str(new).encode()))
        return IntValue(new)

    def apply(self, state: KVState, record: Any) -> KVState:
        return apply_record(state, record)


def test_the_checker_catches_the_naive_read_modify_write() -> None:
    driver = Driver(NaiveIncr())
    driver.send(1, kvi.IncrBy(b"n", 1))
    driver.send(2, kvi.IncrBy(b"n", 1))
    driver.complete_one()
    driver.complete_one()
    history = [
        Operation(c, kvi.IncrBy(b"n", 1), driver.replies[c][0], c, driver.replies[c][1])
        for c in (1, 2)
    ]
    assert [op.output for op in history] == [IntValue(1), IntValue(1)]
    assert not check_linearizable(history, step, EMPTY, partition_key)
    # The real machine under the same schedule is linearizable.
    good = Driver()
    good.send(1, kvi.IncrBy(b"n", 1))
    good.send(2, kvi.IncrBy(b"n", 1))
    good.complete_one()
    good.complete_one()
    assert good.replies[1][0] == IntValue(1) and good.replies[2][0] == IntValue(2)
    assert decode_record(good.journal[0]) == Increment(b"n", 1)
