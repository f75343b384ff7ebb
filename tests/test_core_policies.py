"""Interleaving policies, driven by hand: interleave, per_key, exclusive.

The machine is the read-modify-write counter of the lost-update example in
:mod:`corosm.core.machine`: read ``state[key]``, append ``(key, old + 1)``,
reply ``old + 1``.
"""

from __future__ import annotations

from typing import Any

from corosm.core import (
    Append,
    Call,
    Context,
    InputArrived,
    IOCompleted,
    Policy,
    Reply,
    ReplyError,
    StartIO,
    Stepper,
)
from corosm.errors import HandlerError


async def incr(ctx: Context[dict[str, int]], key: str) -> int:
    old = ctx.state.get(key, 0)
    await ctx.append((key, old + 1))
    return old + 1


def apply(state: dict[str, int], record: tuple[str, int]) -> dict[str, int]:
    key, value = record
    return {**state, key: value}


def counter(fn_machine: Any, policy: Policy, key: Any = lambda k: k) -> Stepper[Any, Any, Any]:
    return Stepper(fn_machine(incr, apply=apply, policy=policy, key=key))


def test_interleave_can_lose_an_update(fn_machine: Any) -> None:
    stepper = counter(fn_machine, Policy.INTERLEAVE)
    # Both increments read 0 before either append completes...
    assert stepper.feed(InputArrived("a", "x"), InputArrived("b", "x")) == [
        StartIO(1, Append(("x", 1))),
        StartIO(2, Append(("x", 1))),
    ]
    # ... so both store 1: one update is lost.
    assert stepper.feed(IOCompleted(1, 1), IOCompleted(2, 2)) == [Reply("a", 1), Reply("b", 1)]
    assert stepper.state == {"x": 1}


def test_per_key_prevents_the_lost_update(fn_machine: Any) -> None:
    stepper = counter(fn_machine, Policy.PER_KEY)
    assert stepper.feed(InputArrived("a", "x"), InputArrived("b", "x")) == [
        StartIO(1, Append(("x", 1)))
    ]
    assert stepper.waiting_for_key == 1
    # a's completion releases the key; b starts at once, reading the applied state.
    assert stepper.feed(IOCompleted(1, 1)) == [Reply("a", 1), StartIO(2, Append(("x", 2)))]
    assert stepper.feed(IOCompleted(2, 2)) == [Reply("b", 2)]
    assert stepper.state == {"x": 2}
    assert stepper.idle()


def test_per_key_waiters_run_in_arrival_order(fn_machine: Any) -> None:
    stepper = counter(fn_machine, Policy.PER_KEY)
    stepper.feed(*(InputArrived(client, "x") for client in "abcd"))
    replies = []
    for request in range(1, 5):
        replies += [a for a in stepper.feed(IOCompleted(request, request)) if isinstance(a, Reply)]
    assert replies == [Reply("a", 1), Reply("b", 2), Reply("c", 3), Reply("d", 4)]
    assert stepper.waiting_for_key == 0 and stepper.idle()


def test_per_key_different_keys_interleave(fn_machine: Any) -> None:
    stepper = counter(fn_machine, Policy.PER_KEY)
    assert stepper.feed(InputArrived("a", "x"), InputArrived("b", "y")) == [
        StartIO(1, Append(("x", 1))),
        StartIO(2, Append(("y", 1))),
    ]
    assert stepper.feed(IOCompleted(2, 1)) == [Reply("b", 1)]  # y finishes while x is suspended
    assert stepper.feed(IOCompleted(1, 2)) == [Reply("a", 1)]


def test_per_key_none_key_is_never_queued(fn_machine: Any) -> None:
    stepper = counter(fn_machine, Policy.PER_KEY, key=lambda k: None)
    actions = stepper.feed(InputArrived("a", "x"), InputArrived("b", "x"))
    assert len(actions) == 2 and stepper.waiting_for_key == 0


def test_per_key_key_raising_fails_only_that_input(fn_machine: Any) -> None:
    def key(inp: str) -> str:
        if inp == "bad":
            raise ValueError("no key for 'bad'")
        return inp

    stepper = counter(fn_machine, Policy.PER_KEY, key=key)
    actions = stepper.feed(InputArrived("a", "x"), InputArrived("b", "bad"), InputArrived("c", "y"))
    assert actions[0] == StartIO(1, Append(("x", 1)))
    failure = actions[1]
    assert isinstance(failure, ReplyError) and failure.client == "b"
    assert isinstance(failure.error, HandlerError)
    assert isinstance(failure.error.__cause__, ValueError)
    assert actions[2] == StartIO(2, Append(("y", 1)))
    assert stepper.feed(IOCompleted(1, 1), IOCompleted(2, 2)) == [Reply("a", 1), Reply("c", 1)]


def test_per_key_failing_holder_releases_the_key(fn_machine: Any) -> None:
    stepper = counter(fn_machine, Policy.PER_KEY)
    stepper.feed(InputArrived("a", "x"), InputArrived("b", "x"))
    [failure, start] = stepper.feed(IOCompleted(1, error=OSError("EIO")))
    assert isinstance(failure, ReplyError) and failure.client == "a"
    assert start == StartIO(2, Append(("x", 1)))  # a's append failed: not applied
    assert stepper.feed(IOCompleted(2, 1)) == [Reply("b", 1)]


def test_per_key_unhashable_key_fails_only_that_input(fn_machine: Any) -> None:
    stepper = counter(fn_machine, Policy.PER_KEY, key=lambda k: [k])
    [failure] = stepper.feed(InputArrived("a", "x"))
    assert isinstance(failure, ReplyError) and "unhashable" in str(failure.error)


def test_exclusive_runs_one_input_at_a_time(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: str) -> str:
        await ctx.call(str, inp)
        return inp

    stepper = Stepper(fn_machine(handler, policy=Policy.EXCLUSIVE))
    assert stepper.feed(InputArrived("a", "x"), InputArrived("b", "y"), InputArrived("c", "z")) == [
        StartIO(1, Call(str, ("x",)))
    ]
    assert stepper.waiting_for_key == 2
    assert stepper.feed(IOCompleted(1, "x")) == [Reply("a", "x"), StartIO(2, Call(str, ("y",)))]
    assert stepper.feed(IOCompleted(2, "y")) == [Reply("b", "y"), StartIO(3, Call(str, ("z",)))]
    assert stepper.feed(IOCompleted(3, "z")) == [Reply("c", "z")]
    assert stepper.idle()


def test_exclusive_does_not_call_key(fn_machine: Any) -> None:
    def key(inp: Any) -> Any:
        raise AssertionError("key() must not be called under EXCLUSIVE")

    stepper = counter(fn_machine, Policy.EXCLUSIVE, key=key)
    stepper.feed(InputArrived("a", "x"), InputArrived("b", "y"))
    assert stepper.feed(IOCompleted(1, 1)) == [Reply("a", 1), StartIO(2, Append(("y", 1)))]


def test_per_key_input_that_never_suspends_waits_its_turn_and_holds_nothing(
    fn_machine: Any,
) -> None:
    async def handler(ctx: Context[dict[str, int]], inp: tuple[str, str]) -> int:
        op, key = inp
        if op == "incr":
            return await incr(ctx, key)
        return ctx.state.get(key, 0)  # a read: no await at all

    stepper = Stepper(fn_machine(handler, apply=apply, policy=Policy.PER_KEY, key=lambda i: i[1]))
    assert stepper.feed(InputArrived("r0", ("read", "x"))) == [Reply("r0", 0)]
    assert stepper.idle()  # it finished at once: no key was left taken
    # Behind a suspended increment of x, a read of x waits; a read of y does not.
    stepper.feed(InputArrived("i", ("incr", "x")))
    assert stepper.feed(InputArrived("r1", ("read", "x")), InputArrived("r2", ("read", "y"))) == [
        Reply("r2", 0)
    ]
    assert stepper.feed(IOCompleted(1, 1)) == [Reply("i", 1), Reply("r1", 1)]
    assert stepper.idle() and stepper.waiting_for_key == 0
