"""The linearizability checker: known verdicts, unknown outcomes, and brute force."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corosm.apps.kv.inputs import Read, Write
from corosm.apps.kv.model import EMPTY, partition_key
from corosm.apps.kv.model import step as kv_step
from corosm.apps.kv.outputs import OK, Value
from corosm.errors import UsageError
from corosm.testing.linearizability import (
    UNKNOWN,
    HistoryRecorder,
    Operation,
    check_linearizable,
)

Op = Operation[Any, Any]

# A single register of ints, with read, write and compare-and-set, as the model.


@dataclass(frozen=True, slots=True)
class W:
    v: int


@dataclass(frozen=True, slots=True)
class R:
    pass


@dataclass(frozen=True, slots=True)
class Cas:
    old: int
    new: int


def register(state: int, inp: W | R | Cas) -> tuple[object, int]:
    match inp:
        case W(v):
            return "ok", v
        case R():
            return state, state
        case Cas(old, new):
            return (True, new) if state == old else (False, state)


def op(client: Any, inp: object, out: object, call: float, ret: float = float("inf")) -> Op:
    return Operation(client, inp, out, call, ret)


def check(history: Sequence[Op]) -> bool:
    return bool(check_linearizable(history, register, 0))


def test_empty_and_sequential_histories_are_linearizable() -> None:
    assert check([])
    assert check(
        [op(1, W(1), "ok", 0, 1), op(1, R(), 1, 2, 3), op(2, W(2), "ok", 4, 5), op(2, R(), 2, 6, 7)]
    )


def test_concurrent_write_may_be_seen_or_not() -> None:
    # The read overlaps the write: it may see 0 or 1.
    for seen in (0, 1):
        assert check([op(1, W(1), "ok", 0, 10), op(2, R(), seen, 1, 2)])


def test_stale_read_is_caught() -> None:
    history = [op(1, W(1), "ok", 0, 1), op(2, R(), 0, 2, 3)]
    result = check_linearizable(history, register, 0)
    assert not result
    assert "R() -> 0" in result.explanation
    assert history[1] in result.stuck


def test_read_of_a_never_written_value_is_caught() -> None:
    assert not check([op(1, W(1), "ok", 0, 5), op(2, R(), 7, 1, 2)])


def test_lost_update_is_caught() -> None:
    # Two compare-and-sets from 0 both succeed: one update was lost.
    history = [op(1, Cas(0, 1), True, 0, 10), op(2, Cas(0, 2), True, 1, 11)]
    assert not check(history)
    assert check([history[0], op(2, Cas(0, 2), False, 1, 11)])


def test_effect_visible_before_its_call_is_caught() -> None:
    # The read returned 1 before the write of 1 was even called.
    assert not check([op(2, R(), 1, 0, 1), op(1, W(1), "ok", 2, 3)])


def test_read_order_must_be_consistent() -> None:
    # Two sequential reads during one write cannot see new then old.
    write = op(1, W(1), "ok", 0, 10)
    assert check([write, op(2, R(), 0, 1, 2), op(2, R(), 1, 3, 4)])
    assert not check([write, op(2, R(), 1, 1, 2), op(2, R(), 0, 3, 4)])


def test_unknown_operation_may_happen_late_or_never() -> None:
    lost = op(1, W(1), UNKNOWN, 0)
    assert check([lost, op(2, R(), 0, 5, 6)])  # never happened (or not yet)
    assert check([lost, op(2, R(), 0, 5, 6), op(2, R(), 1, 100, 101)])  # happened late
    # ... but not before it was called.
    assert not check([op(2, R(), 1, 0, 1), op(1, W(1), UNKNOWN, 5)])
    # ... and once seen it cannot be unseen.
    assert not check([lost, op(2, R(), 1, 5, 6), op(2, R(), 0, 7, 8)])


def test_explanation_lists_the_order_found_and_the_candidates() -> None:
    history = [op(1, W(1), "ok", 0, 1), op(1, W(2), "ok", 2, 3), op(2, R(), 1, 4, 5)]
    result = check_linearizable(history, register, 0)
    assert not result.ok
    assert result.linearized == (history[0], history[1])
    assert result.stuck == (history[2],)
    assert "model would give 2" in result.explanation


def test_bad_histories_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="returned before it was called"):
        check([op(1, R(), 0, 5, 1)])
    with pytest.raises(UsageError, match="Operation values"):
        check_linearizable([("not", "an", "op")], register, 0)  # type: ignore[list-item]


def test_partitioned_kv_history_names_the_failing_key() -> None:
    history = [
        op(1, Write(b"a", b"1"), OK, 0, 1),
        op(2, Write(b"b", b"1"), OK, 0, 1),
        op(1, Read(b"a"), Value(b"1"), 2, 3),
        op(2, Read(b"b"), Value(None), 2, 3),
    ]
    result = check_linearizable(history, kv_step, EMPTY, partition_key)
    assert not result
    assert result.partition == b"b"
    assert "partition b'b'" in result.explanation
    assert check_linearizable(history[:3], kv_step, EMPTY, partition_key)


def test_long_history_with_many_concurrent_clients_is_fast() -> None:
    # 8 clients, 3000 operations on one register, every write overlapping
    # others: the memoised search stays linear-ish. Reads return the value of
    # the last write that *completed*, which is a valid linearization.
    history: list[Op] = []
    for t in range(3000):
        i = t
        client = i % 8
        if i % 3 == 0:
            history.append(op(client, W(i), "ok", t, t + 8))
        else:
            history.append(op(client, R(), None, t, t + 8))
    # Fill in reads: each sees the latest write called before its call -
    # writes take effect at their call time, within their interval.
    current = 0
    filled: list[Op] = []
    for o in history:
        if isinstance(o.input, W):
            current = o.input.v
            filled.append(o)
        else:
            filled.append(op(o.client, o.input, current, o.call, o.ret))
    assert check(filled)
    broken = list(filled)
    broken[-1] = op(broken[-1].client, R(), -1, broken[-1].call, broken[-1].ret)
    assert not check(broken)


# -- against brute force on tiny histories -------------------------------------------


def brute_force(history: Sequence[Op]) -> bool:
    """Try every order of every subset that keeps all known operations."""
    known = [o for o in history if o.output is not UNKNOWN]
    unknown = [o for o in history if o.output is UNKNOWN]
    for r in range(len(unknown) + 1):
        for extra in itertools.combinations(unknown, r):
            for order in itertools.permutations(known + list(extra)):
                if respects_real_time(order) and outputs_match(order):
                    return True
    return False


def respects_real_time(order: Sequence[Op]) -> bool:
    return all(
        not (b.output is not UNKNOWN and b.ret < a.call)
        for i, a in enumerate(order)
        for b in order[i + 1 :]
    )


def outputs_match(order: Sequence[Op]) -> bool:
    state = 0
    for o in order:
        out, state = register(state, o.input)
        if o.output is not UNKNOWN and out != o.output:
            return False
    return True


@st.composite
def tiny_histories(draw: st.DrawFn) -> list[Op]:
    n = draw(st.integers(0, 5))
    history = []
    for i in range(n):
        inp = draw(st.sampled_from([W(1), W(2), R(), Cas(0, 1), Cas(1, 2)]))
        call = draw(st.integers(0, 6))
        ret = call + draw(st.integers(0, 4))
        if draw(st.integers(0, 5)) == 0:
            out: object = UNKNOWN
        elif isinstance(inp, R):
            out = draw(st.sampled_from([0, 1, 2]))
        elif isinstance(inp, Cas):
            out = draw(st.booleans())
        else:
            out = "ok"
        history.append(op(i, inp, out, call, ret))
    return history


@settings(max_examples=400, deadline=None)
@given(tiny_histories())
def test_agrees_with_brute_force(history: list[Op]) -> None:
    assert check(history) == brute_force(history)


def blind_writes(n: int, in_flight: int) -> list[Op]:
    """Writes pending for ``in_flight`` ticks (a group commit), an instant read per tick.

    A write takes effect at call + in_flight - 1; the read at t + 0.5 sees the
    write called at t - in_flight + 1.
    """
    history: list[Op] = []
    for t in range(n):
        history.append(op(t % in_flight, W(t + 1), "ok", t, t + in_flight))
        seen = t - in_flight + 2 if t >= in_flight - 1 else 0
        history.append(op(100, R(), seen, t + 0.5, t + 0.5))
    return history


def test_sixteen_writes_in_flight_do_not_blow_up_the_search() -> None:
    # Trying candidates in call order would explore 2^16 subsets of pending
    # writes before each read; earliest-return-first goes straight through.
    assert check(blind_writes(2000, 16))


def test_a_wrong_read_among_writes_in_flight_is_found() -> None:
    history = blind_writes(300, 4)
    history[-1] = op(100, R(), 5, history[-1].call, history[-1].ret)
    result = check_linearizable(history, register, 0)
    assert not result.ok and not result.inconclusive
    assert history[-1] in result.stuck


def test_the_search_gives_up_inconclusively_at_its_budget() -> None:
    # Refuting this needs every subset of 16 writes in flight: exponential.
    history = blind_writes(100, 16)
    history[-1] = op(100, R(), 5, history[-1].call, history[-1].ret)
    result = check_linearizable(history, register, 0, max_steps=20_000)
    assert not result.ok and result.inconclusive
    assert "inconclusive: gave up after 20000 model steps" in result.explanation


def test_history_recorder_from_threads() -> None:
    ticks = itertools.count()
    recorder: HistoryRecorder[Any, Any] = HistoryRecorder(clock=lambda: next(ticks))
    lock = threading.Lock()
    register_value = [0]

    def client(cid: int) -> None:
        for i in range(50):
            if i % 2:
                token = recorder.call(cid, W(cid * 100 + i))
                with lock:
                    register_value[0] = cid * 100 + i
                recorder.ret(token, "ok")
            else:
                token = recorder.call(cid, R())
                with lock:
                    seen = register_value[0]
                recorder.ret(token, seen)
        recorder.unknown(recorder.call(cid, W(-1)))  # timed out: may or may not apply
        recorder.call(cid, W(-2))  # never answered at all

    threads = [threading.Thread(target=client, args=(c,)) for c in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    history = recorder.history()
    assert len(history) == 4 * 52
    assert sum(o.output is UNKNOWN for o in history) == 8
    assert check(history)
    # A read that saw a value nobody wrote is caught.
    reads = [i for i, o in enumerate(history) if isinstance(o.input, R)]
    bad = history[reads[-1]]
    history[reads[-1]] = op(bad.client, R(), 12345, bad.call, bad.ret)
    assert not check(history)


def _bad(value: object) -> Any:
    """``value`` typed Any: a wrong-typed argument that type checkers let through."""
    return value


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"history": None}, "history must be a sequence of Operation values, got None"),
        ({"history": 3}, "history must be a sequence of Operation values, got 3"),
        ({"model_step": None}, "model_step must be a function, got None"),
        ({"partition": 3}, "partition must be None or a function, got 3"),
        ({"max_steps": 0}, "max_steps must be None (no limit) or an int >= 1, got 0"),
        ({"max_steps": -1}, "max_steps must be None (no limit) or an int >= 1, got -1"),
        ({"max_steps": "5"}, "max_steps must be None (no limit) or an int >= 1, got '5'"),
        ({"max_steps": True}, "max_steps must be None (no limit) or an int >= 1, got True"),
    ],
)
def test_bad_arguments_to_the_checker_are_named(arguments: dict[str, Any], message: str) -> None:
    call: dict[str, Any] = {
        "history": [op(1, W(1), "ok", 0, 1)],
        "model_step": register,
        "initial_state": 0,
    }
    with pytest.raises(UsageError) as info:
        check_linearizable(**(call | arguments))
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("call", "ret", "words"),
    [
        ("0", 1, ["the call time of", "must be a finite number, got '0'"]),
        (None, 1, ["the call time of", "must be a finite number, got None"]),
        (float("nan"), 1, ["the call time of", "must be a finite number, got nan"]),
        (True, 1, ["the call time of", "must be a finite number, got True"]),
        (0, "1", ["the return time of", "must be a number (inf: never returned), got '1'"]),
        (0, float("nan"), ["the return time of", "got nan"]),
    ],
)
def test_operation_times_must_be_numbers(call: object, ret: object, words: list[str]) -> None:
    with pytest.raises(UsageError) as info:
        check([Operation(1, W(1), "ok", _bad(call), _bad(ret))])
    for word in words:
        assert word in str(info.value)


def test_times_that_were_always_fine_still_are() -> None:
    assert check([op(1, W(1), "ok", 0, 1), op(2, R(), 1, 1.5)])  # ints, floats, ret = inf
    assert check([op(1, W(1), UNKNOWN, 0, _bad("ignored: the outcome is unknown"))])
    assert check_linearizable([op(1, W(1), "ok", 0, 1)], register, 0, max_steps=None)


def test_a_model_that_breaks_the_contract_is_named() -> None:
    history = [op(1, W(1), "ok", 0, 1)]
    with pytest.raises(UsageError, match=r"model_step must return an \(output, next_state\) pair"):
        check_linearizable(history, lambda state, input: 3, 0)
    with pytest.raises(UsageError, match="model states must be hashable") as info:
        check_linearizable(history, lambda state, input: ("ok", [state]), 0)
    assert "[0]" in str(info.value)
    with pytest.raises(UsageError, match=r"partition\(input\) must return a hashable key or None"):
        check_linearizable(history, register, 0, lambda input: [input])


def test_a_history_given_as_a_generator_is_checked_whole() -> None:
    # Before, the argument check consumed the generator and the search saw no
    # operations: any history passed.
    bad = [op(1, W(1), "ok", 0, 1), op(2, R(), 2, 2, 3)]
    assert not check_linearizable((o for o in bad), register, 0)


def test_recorder_checks_its_clock_and_tokens() -> None:
    with pytest.raises(UsageError, match=r"HistoryRecorder\(clock=...\) must be a function"):
        HistoryRecorder(_bad(0.0))
    recorder: HistoryRecorder[Any, Any] = HistoryRecorder()
    token = recorder.call(1, R())
    with pytest.raises(UsageError, match=r"token must be a value that call\(\) returned, got 5"):
        recorder.ret(token + 5, 0)
    with pytest.raises(UsageError, match="got -1"):
        recorder.unknown(-1)
    recorder.ret(token, 0)
    assert recorder.history()[0].output == 0
