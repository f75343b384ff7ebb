"""The handler's API, driven by hand: ``start_*`` twins and ``timeout`` over groups.

Each ``await ctx.X(args)`` that performs an effect has a ``ctx.start_X(args)``
twin with the same arguments that starts the effect without suspending.
``ctx.timeout`` takes a future or a ``ctx.all``/``ctx.any`` group.
"""

from __future__ import annotations

from typing import Any

import pytest

from corosm.core import (
    Append,
    Call,
    CancelIO,
    Context,
    Group,
    InputArrived,
    IOCompleted,
    Reply,
    ReplyError,
    Sleep,
    StartIO,
    Stepper,
)
from corosm.errors import EffectCancelled, EffectError, EffectTimeout, UsageError


def blocking(*args: Any) -> Any:
    """Stands for a blocking function; the stepper never runs it."""
    return args


# -- start_* twins --------------------------------------------------------------------------


def test_start_twins_take_the_arguments_of_their_awaiting_methods(fn_machine: Any) -> None:
    marks: list[str] = []

    async def twins(ctx: Context[Any], inp: Any) -> Any:
        futures = (ctx.start_call(blocking, 1, 2), ctx.start_append("rec"), ctx.start_sleep(0.5))
        marks.append("no suspension")
        return await ctx.all(*futures)

    async def effects(ctx: Context[Any], inp: Any) -> Any:
        futures = (
            ctx.start(Call(blocking, (1, 2))),
            ctx.start(Append("rec")),
            ctx.start(Sleep(0.5)),
        )
        return await ctx.all(*futures)

    expected = [
        StartIO(1, Call(blocking, (1, 2))),
        StartIO(2, Append("rec")),
        StartIO(3, Sleep(0.5)),
    ]
    for handler in (twins, effects):
        stepper = Stepper(fn_machine(handler, initial=list, apply=lambda s, r: [*s, r]))
        assert stepper.feed(InputArrived("c", None)) == expected
        assert stepper.feed(IOCompleted(3), IOCompleted(1, "v"), IOCompleted(2, 7)) == [
            Reply("c", ["v", 7, None])
        ]
        assert stepper.state == ["rec"]
    assert marks == ["no suspension"]


def test_start_twins_validate_their_arguments_at_once(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        errors = []
        for bad in (lambda: ctx.start_call("not callable"), lambda: ctx.start_sleep(-1)):
            try:
                bad()
            except UsageError as exc:
                errors.append(str(exc))
        return errors

    stepper = Stepper(fn_machine(handler))
    [reply] = stepper.feed(InputArrived("c", None))
    assert isinstance(reply, Reply)
    assert "callable" in reply.output[0] and ">= 0" in reply.output[1]
    assert stepper.pending_requests == 0


# -- all and any return groups -------------------------------------------------------------


def test_all_and_any_return_a_group_that_starts_nothing(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        a, b = ctx.start_call(blocking, "a"), ctx.start_call(blocking, "b")
        group = ctx.all(a, b)
        assert isinstance(group, Group) and not group.done()
        return repr(group), repr(ctx.any(a))

    stepper = Stepper(fn_machine(handler))
    [_, _, reply] = stepper.feed(InputArrived("c", None))
    assert isinstance(reply, Reply)
    call = Call(blocking, ("a",))
    assert reply.output == (f"ctx.all({call!r}, {Call(blocking, ('b',))!r})", f"ctx.any({call!r})")


# -- timeout over ctx.all -----------------------------------------------------------------------


async def all_with_timeout(ctx: Context[Any], inp: Any) -> Any:
    futures = [ctx.start_call(blocking, i) for i in range(2)]
    try:
        return await ctx.timeout(ctx.all(*futures), 1.5)
    except EffectTimeout as exc:
        return ("timeout", str(exc), [f.done() for f in futures])
    except EffectError as exc:
        return ("failed", str(exc.__cause__))


def test_timeout_of_all_returns_every_value_and_cancels_the_timer(fn_machine: Any) -> None:
    stepper = Stepper(fn_machine(all_with_timeout))
    assert stepper.feed(InputArrived("c", None)) == [
        StartIO(1, Call(blocking, (0,))),
        StartIO(2, Call(blocking, (1,))),
        StartIO(3, Sleep(1.5)),
    ]
    assert stepper.feed(IOCompleted(2, "b")) == []  # one of two: still waiting
    assert stepper.feed(IOCompleted(1, "a")) == [CancelIO(3), Reply("c", ["a", "b"])]
    assert stepper.idle()


def test_timeout_of_all_cancels_what_is_unfinished(fn_machine: Any) -> None:
    stepper = Stepper(fn_machine(all_with_timeout))
    stepper.feed(InputArrived("c", None))
    stepper.feed(IOCompleted(1, "a"))
    [cancel, reply] = stepper.feed(IOCompleted(3))  # the timer
    assert cancel == CancelIO(2)  # request 1 finished: nothing to cancel there
    assert isinstance(reply, Reply)
    kind, message, done = reply.output
    assert kind == "timeout" and done == [True, True]  # the cancelled one reports done
    assert message.startswith("ctx.all(Call(") and message.endswith("within 1.5 s")
    assert stepper.feed(IOCompleted(2, "late")) == [] and stepper.idle()


def test_timeout_of_all_raises_the_first_failure_at_once(fn_machine: Any) -> None:
    stepper = Stepper(fn_machine(all_with_timeout))
    stepper.feed(InputArrived("c", None))
    assert stepper.feed(IOCompleted(2, error=OSError("disk"))) == [
        CancelIO(3),
        Reply("c", ("failed", "disk")),
    ]
    assert stepper.pending_requests == 1  # as with a plain ctx.all, the other one keeps running


# -- timeout over ctx.any -------------------------------------------------------------------------


async def any_with_timeout(ctx: Context[Any], inp: Any) -> Any:
    slow = ctx.start_call(blocking, "slow")
    append = ctx.start_append("rec")
    try:
        return await ctx.timeout(ctx.any(slow, append), 2)
    except EffectTimeout:
        try:
            await slow
        except EffectCancelled:
            return "timeout; slow call cancelled"
        return "not reached"


def test_timeout_of_any_returns_the_first_and_cancels_the_rest(fn_machine: Any) -> None:
    stepper = Stepper(fn_machine(any_with_timeout, initial=list, apply=lambda s, r: [*s, r]))
    stepper.feed(InputArrived("c", None))
    assert stepper.feed(IOCompleted(1, "v")) == [CancelIO(3), Reply("c", (0, "v"))]
    assert stepper.feed(IOCompleted(2, 1)) == []  # the append was not cancelled: applied
    assert stepper.state == ["rec"] and stepper.idle()


def test_timeout_of_any_cancels_all_but_appends(fn_machine: Any) -> None:
    stepper = Stepper(fn_machine(any_with_timeout, initial=list, apply=lambda s, r: [*s, r]))
    assert stepper.feed(InputArrived("c", None)) == [
        StartIO(1, Call(blocking, ("slow",))),
        StartIO(2, Append("rec")),
        StartIO(3, Sleep(2)),
    ]
    assert stepper.feed(IOCompleted(3)) == [
        CancelIO(1),
        Reply("c", "timeout; slow call cancelled"),
    ]
    assert stepper.feed(IOCompleted(2, 1)) == [] and stepper.state == ["rec"]


# -- timeout edge cases --------------------------------------------------------------------------


def test_timeout_of_something_finished_starts_no_timer(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        future = ctx.start_call(blocking)
        await future
        return await ctx.timeout(future, 1), await ctx.timeout(ctx.all(future), 1)

    stepper = Stepper(fn_machine(handler))
    stepper.feed(InputArrived("c", None))
    assert stepper.feed(IOCompleted(1, "v")) == [Reply("c", ("v", ["v"]))]


def test_timeout_rejects_other_awaitables_and_starts_nothing(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        coroutine = ctx.sleep(1)
        try:
            await ctx.timeout(coroutine, 1)  # type: ignore[arg-type]
        except UsageError as exc:
            coroutine.close()
            return str(exc)
        return "not reached"

    stepper = Stepper(fn_machine(handler))
    [reply] = stepper.feed(InputArrived("c", None))
    assert isinstance(reply, Reply) and "ctx.all()/ctx.any()" in reply.output
    assert "coroutine" in reply.output and stepper.pending_requests == 0


def test_timer_failure_is_raised_as_itself(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        return await ctx.timeout(ctx.all(ctx.start_call(blocking)), 1)

    stepper = Stepper(fn_machine(handler))
    stepper.feed(InputArrived("c", None))
    [cancel, failure] = stepper.feed(IOCompleted(2, error=OSError("no timers")))
    assert cancel == CancelIO(1)
    assert isinstance(failure, ReplyError) and isinstance(failure.error, EffectError)
    assert not isinstance(failure.error, EffectTimeout)
    assert "no timers" in str(failure.error)


@pytest.mark.parametrize("mode", ["all", "any"])
def test_group_of_one_failed_future_raises_its_error(fn_machine: Any, mode: str) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        future = ctx.start_call(blocking)
        return await getattr(ctx, mode)(future)

    stepper = Stepper(fn_machine(handler))
    stepper.feed(InputArrived("c", None))
    [failure] = stepper.feed(IOCompleted(1, error=ValueError("bad")))
    assert isinstance(failure, ReplyError) and isinstance(failure.error.__cause__, ValueError)
