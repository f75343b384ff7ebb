"""The pure core driven by hand: one test per semantic of DESIGN.md.

Each test plays host for a :class:`Stepper`: it feeds ``InputArrived`` and
``IOCompleted`` events and checks the returned actions exactly. No loop, no
threads, no clock.
"""

from __future__ import annotations

import asyncio
import inspect
import traceback
from typing import Any

import pytest

from corosm.core import (
    Append,
    Call,
    CancelIO,
    Context,
    Effect,
    InputArrived,
    IOCompleted,
    Reply,
    ReplyError,
    Sleep,
    StartIO,
    Stepper,
)
from corosm.errors import (
    ApplyFailed,
    EffectCancelled,
    EffectError,
    EffectTimeout,
    ForeignAwaitError,
    HandlerError,
    UsageError,
)


def blocking(x: Any = None) -> Any:
    """Stands for a blocking function; the stepper never runs it."""
    return x


def line_of_next_statement() -> int:
    """The line number right after the caller's current line."""
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno + 1


# -- state and suspension points ---------------------------------------------------


def test_state_is_latest_after_resume(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        if inp == "set":
            ctx.state = {"v": 5}
            return "set"
        before = ctx.state.get("v")
        await ctx.call(blocking)
        return (before, ctx.state.get("v"))

    stepper = Stepper(fn_machine(handler))
    assert stepper.feed(InputArrived("a", "read")) == [StartIO(1, Call(blocking))]
    assert stepper.feed(InputArrived("b", "set")) == [Reply("b", "set")]
    assert stepper.feed(IOCompleted(1, None)) == [Reply("a", (None, 5))]


def test_code_between_awaits_does_not_interleave(fn_machine: Any) -> None:
    log: list[str] = []

    async def helper(name: str) -> None:  # a plain coroutine: awaiting it does not suspend
        log.append(f"{name}-helper")

    async def handler(ctx: Context[Any], name: str) -> str:
        log.append(f"{name}1")
        await ctx.call(blocking)
        log.append(f"{name}2")
        await helper(name)
        log.append(f"{name}3")
        await ctx.call(blocking)
        log.append(f"{name}4")
        return name

    stepper = Stepper(fn_machine(handler))
    stepper.feed(InputArrived("A", "a"), InputArrived("B", "b"))
    assert log == ["a1", "b1"]
    # Completing A's first call runs A from a2 to its next effect, with nothing in between.
    assert stepper.feed(IOCompleted(1)) == [StartIO(3, Call(blocking))]
    assert log == ["a1", "b1", "a2", "a-helper", "a3"]
    assert stepper.feed(IOCompleted(2), IOCompleted(3)) == [
        StartIO(4, Call(blocking)),
        Reply("A", "a"),
    ]
    assert log[5:] == ["b2", "b-helper", "b3", "a4"]


def test_handler_without_effects_replies_at_once(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: int) -> int:
        return inp * 2

    stepper = Stepper(fn_machine(handler))
    assert stepper.feed(InputArrived("c", 21)) == [Reply("c", 42)]
    assert stepper.idle()


def test_start_does_not_suspend(fn_machine: Any) -> None:
    marks: list[str] = []

    async def handler(ctx: Context[Any], inp: Any) -> Any:
        f1 = ctx.start(Call(blocking, (1,)))
        f2 = ctx.start(Call(blocking, (2,)))
        marks.append("after both starts")
        return [await f1, await f2]

    stepper = Stepper(fn_machine(handler))
    actions = stepper.feed(InputArrived("c", None))
    assert actions == [StartIO(1, Call(blocking, (1,))), StartIO(2, Call(blocking, (2,)))]
    assert marks == ["after both starts"]
    assert stepper.feed(IOCompleted(2, "two")) == []  # still waiting on f1
    assert stepper.feed(IOCompleted(1, "one")) == [Reply("c", ["one", "two"])]


def test_start_rejects_a_non_effect(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        return ctx.start(inp)

    stepper = Stepper(fn_machine(handler))
    [action] = stepper.feed(InputArrived("c", "not an effect"))
    assert isinstance(action, ReplyError)
    assert isinstance(action.error, UsageError)
    assert "Effect" in str(action.error) and "'not an effect'" in str(action.error)


# -- futures: await, all, any, timeout ------------------------------------------------


def test_all_returns_results_in_order(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        futures = [ctx.start(Call(blocking, (i,))) for i in range(3)]
        return await ctx.all(*futures)

    stepper = Stepper(fn_machine(handler))
    assert len(stepper.feed(InputArrived("c", None))) == 3
    assert stepper.feed(IOCompleted(3, "c")) == []
    assert stepper.feed(IOCompleted(1, "a")) == []
    assert stepper.feed(IOCompleted(2, "b")) == [Reply("c", ["a", "b", "c"])]


def test_all_fails_fast_on_first_error(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        futures = [ctx.start(Call(blocking, (i,))) for i in range(3)]
        try:
            return await ctx.all(*futures)
        except EffectError as exc:
            return ("failed", str(exc.__cause__), [f.done() for f in futures])

    stepper = Stepper(fn_machine(handler))
    stepper.feed(InputArrived("c", None))
    # Request 2 fails while 1 and 3 are still pending: the handler resumes at once.
    assert stepper.feed(IOCompleted(2, error=OSError("disk"))) == [
        Reply("c", ("failed", "disk", [False, True, False]))
    ]
    # The others keep running; their late completions change nothing.
    assert stepper.pending_requests == 2
    assert stepper.feed(IOCompleted(1, "a"), IOCompleted(3, "c")) == []
    assert stepper.idle()


def test_any_returns_first_and_cancels_losers(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        futures = [ctx.start(Call(blocking, (i,))) for i in range(3)]
        return await ctx.any(*futures)

    stepper = Stepper(fn_machine(handler))
    stepper.feed(InputArrived("c", None))
    assert stepper.feed(IOCompleted(2, "won")) == [
        CancelIO(1),
        CancelIO(3),
        Reply("c", (1, "won")),
    ]
    assert stepper.idle()


def test_any_never_cancels_an_append(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        append = ctx.start(Append("rec"))
        call = ctx.start(Call(blocking))
        return await ctx.any(append, call)

    stepper = Stepper(fn_machine(handler, initial=list, apply=lambda s, r: [*s, r]))
    assert stepper.feed(InputArrived("c", None)) == [
        StartIO(1, Append("rec")),
        StartIO(2, Call(blocking)),
    ]
    assert stepper.feed(IOCompleted(2, "call")) == [Reply("c", (1, "call"))]  # no CancelIO(1)
    # The append still completes and is applied, as the journal promises.
    assert stepper.feed(IOCompleted(1, 1)) == []
    assert stepper.state == ["rec"]


def test_loser_futures_report_cancelled(fn_machine: Any) -> None:
    seen: list[Any] = []

    async def handler(ctx: Context[Any], inp: Any) -> Any:
        slow = ctx.start(Call(blocking, ("slow",)))
        fast = ctx.start(Call(blocking, ("fast",)))
        await ctx.any(slow, fast)
        try:
            await slow
        except EffectCancelled as exc:
            seen.append(exc)
        return "done"

    stepper = Stepper(fn_machine(handler))
    stepper.feed(InputArrived("c", None))
    assert stepper.feed(IOCompleted(2)) == [CancelIO(1), Reply("c", "done")]
    assert len(seen) == 1 and "slow" in str(seen[0])


def test_timeout_raises_when_sleep_wins(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        try:
            return await ctx.timeout(ctx.start(Call(blocking)), 2.5)
        except EffectTimeout as exc:
            return ("timeout", str(exc))

    stepper = Stepper(fn_machine(handler))
    assert stepper.feed(InputArrived("c", None)) == [
        StartIO(1, Call(blocking)),
        StartIO(2, Sleep(2.5)),
    ]
    [cancel, reply] = stepper.feed(IOCompleted(2))
    assert cancel == CancelIO(1)  # the slow call is cancelled
    assert isinstance(reply, Reply) and reply.output[0] == "timeout"
    assert "2.5" in reply.output[1]
    # The call's late completion is ignored.
    assert stepper.feed(IOCompleted(1, "late")) == []


def test_timeout_cancels_timer_when_future_wins(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        return await ctx.timeout(ctx.start(Call(blocking)), 2.5)

    stepper = Stepper(fn_machine(handler))
    stepper.feed(InputArrived("c", None))
    assert stepper.feed(IOCompleted(1, "value")) == [CancelIO(2), Reply("c", "value")]
    assert stepper.idle()


def test_timeout_uncaught_fails_the_input(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        return await ctx.timeout(ctx.start(Call(blocking)), 1)

    stepper = Stepper(fn_machine(handler))
    stepper.feed(InputArrived("c", None))
    [_, reply] = stepper.feed(IOCompleted(2))
    assert isinstance(reply, ReplyError) and isinstance(reply.error, EffectTimeout)


# -- errors ----------------------------------------------------------------------------


def test_io_failure_raised_at_await_with_cause_and_traceback(fn_machine: Any) -> None:
    caught: list[BaseException] = []
    await_line: list[int] = []

    async def handler(ctx: Context[Any], inp: Any) -> Any:
        try:
            await_line.append(line_of_next_statement())
            await ctx.call(blocking)
        except EffectError as exc:
            caught.append(exc)
            return "handled"
        return "not reached"

    original = OSError(28, "No space left on device")
    stepper = Stepper(fn_machine(handler))
    stepper.feed(InputArrived("c", None))
    assert stepper.feed(IOCompleted(1, error=original)) == [Reply("c", "handled")]
    [exc] = caught
    assert type(exc) is EffectError
    assert exc.__cause__ is original
    assert "No space left" in str(exc)
    frames = traceback.extract_tb(exc.__traceback__)
    assert any(f.name == "handler" and f.lineno == await_line[0] for f in frames), frames


def test_uncaught_io_failure_fails_that_input_only(fn_machine: Any) -> None:
    await_line: list[int] = []

    async def handler(ctx: Context[Any], inp: Any) -> Any:
        await_line.append(line_of_next_statement())
        await ctx.call(blocking, inp)
        return inp

    stepper = Stepper(fn_machine(handler))
    stepper.feed(InputArrived("a", 1), InputArrived("b", 2))
    original = ValueError("bad")
    [failure] = stepper.feed(IOCompleted(1, error=original))
    assert isinstance(failure, ReplyError) and failure.client == "a"
    assert isinstance(failure.error, EffectError) and failure.error.__cause__ is original
    frames = traceback.extract_tb(failure.error.__traceback__)
    assert any(f.name == "handler" and f.lineno == await_line[0] for f in frames)
    assert stepper.feed(IOCompleted(2, 2)) == [Reply("b", 2)]
    assert stepper.inputs_failed == 1 and stepper.inputs_done == 1


def test_awaiting_asyncio_sleep_raises_foreign_await(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        try:
            await asyncio.sleep(0)
        except TypeError as exc:  # ForeignAwaitError is a TypeError: the handler may catch it
            return (type(exc), str(exc))
        return "not reached"

    stepper = Stepper(fn_machine(handler))
    [reply] = stepper.feed(InputArrived("c", None))
    assert isinstance(reply, Reply)
    kind, message = reply.output
    assert kind is ForeignAwaitError
    assert "asyncio.sleep(0)" in message


def test_awaiting_asyncio_future_names_it_and_machine_goes_on(fn_machine: Any) -> None:
    loop = asyncio.new_event_loop()
    try:
        foreign = loop.create_future()

        async def handler(ctx: Context[Any], inp: Any) -> Any:
            if inp == "foreign":
                await foreign
            return await ctx.call(blocking)

        stepper = Stepper(fn_machine(handler))
        [failure] = stepper.feed(InputArrived("a", "foreign"))
        assert isinstance(failure, ReplyError)
        assert isinstance(failure.error, ForeignAwaitError)
        assert isinstance(failure.error, TypeError)
        assert repr(foreign) in str(failure.error)
        # The machine keeps running: the next input works.
        assert stepper.feed(InputArrived("b", "ok")) == [StartIO(1, Call(blocking))]
        assert stepper.feed(IOCompleted(1, 7)) == [Reply("b", 7)]
    finally:
        loop.close()


def test_exception_escaping_handler_fails_only_that_input(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        value = await ctx.call(blocking)
        if inp == "boom":
            raise KeyError("missing")
        return value

    stepper = Stepper(fn_machine(handler))
    stepper.feed(InputArrived("a", "ok"), InputArrived("b", "boom"), InputArrived("c", "ok"))
    [failure] = stepper.feed(IOCompleted(2, "x"))
    assert isinstance(failure, ReplyError) and failure.client == "b"
    assert isinstance(failure.error, HandlerError)
    assert isinstance(failure.error.__cause__, KeyError)
    assert "KeyError" in str(failure.error) and "missing" in str(failure.error)
    assert stepper.feed(IOCompleted(1, "y"), IOCompleted(3, "z")) == [
        Reply("a", "y"),
        Reply("c", "z"),
    ]
    assert stepper.feed(InputArrived("d", "ok")) == [StartIO(4, Call(blocking))]


def test_handle_that_is_not_async_gives_clear_error(fn_machine: Any) -> None:
    def not_async(ctx: Context[Any], inp: Any) -> Any:
        return "plain value"

    stepper = Stepper(fn_machine(not_async))
    [failure] = stepper.feed(InputArrived("c", None))
    assert isinstance(failure, ReplyError) and isinstance(failure.error, UsageError)
    assert "async def" in str(failure.error) and "'plain value'" in str(failure.error)


def test_any_and_all_reject_bad_arguments(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        errors = []
        for wait, args in ((ctx.all, ()), (ctx.any, ()), (ctx.all, ("x",))):
            try:
                await wait(*args)
            except UsageError as exc:
                errors.append(str(exc))
        return errors

    stepper = Stepper(fn_machine(handler))
    [reply] = stepper.feed(InputArrived("c", None))
    assert isinstance(reply, Reply)
    assert "needs at least one future" in reply.output[0]
    assert "needs at least one future" in reply.output[1]
    assert "'x'" in reply.output[2]


# -- appends and the state -----------------------------------------------------------------


def append_then_read(ctx: Context[Any], record: Any) -> Any:
    async def run() -> Any:
        await ctx.append(record)
        return list(ctx.state)

    return run()


def test_appends_applied_at_completion_in_completion_order(fn_machine: Any) -> None:
    stepper = Stepper(fn_machine(append_then_read, initial=list, apply=lambda s, r: [*s, r]))
    assert stepper.feed(InputArrived("a", "ra"), InputArrived("b", "rb")) == [
        StartIO(1, Append("ra")),
        StartIO(2, Append("rb")),
    ]
    assert stepper.state == []  # nothing applied before completion
    assert stepper.feed(IOCompleted(2, 1)) == [Reply("b", ["rb"])]
    assert stepper.feed(IOCompleted(1, 2)) == [Reply("a", ["rb", "ra"])]
    assert stepper.state == ["rb", "ra"]
    assert stepper.appends_applied == 2 and stepper.last_append_value == 2


def test_failed_append_is_not_applied(fn_machine: Any) -> None:
    stepper = Stepper(fn_machine(append_then_read, initial=list, apply=lambda s, r: [*s, r]))
    stepper.feed(InputArrived("a", "ra"))
    [failure] = stepper.feed(IOCompleted(1, error=OSError("EIO")))
    assert isinstance(failure, ReplyError) and isinstance(failure.error, EffectError)
    assert stepper.state == [] and stepper.appends_applied == 0


def test_apply_raising_fails_the_appending_input(fn_machine: Any) -> None:
    def apply(state: Any, record: Any) -> Any:
        raise ValueError(f"cannot apply {record!r}")

    stepper = Stepper(fn_machine(append_then_read, initial=list, apply=apply))
    stepper.feed(InputArrived("a", "ra"))
    [failure] = stepper.feed(IOCompleted(1, 1))
    assert isinstance(failure, ReplyError) and isinstance(failure.error, ApplyFailed)
    assert failure.error.lsn == 1 and isinstance(failure.error.__cause__, ValueError)
    assert stepper.state == [] and stepper.apply_failure is failure.error


def test_late_and_unknown_completions_are_ignored(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        return await ctx.any(ctx.start(Call(blocking, (1,))), ctx.start(Call(blocking, (2,))))

    stepper = Stepper(fn_machine(handler))
    stepper.feed(InputArrived("c", None))
    assert stepper.feed(IOCompleted(1, "first")) == [CancelIO(2), Reply("c", (0, "first"))]
    state_before = stepper.state
    assert stepper.feed(IOCompleted(2, "late")) == []
    assert stepper.feed(IOCompleted(2, error=OSError("late failure"))) == []
    assert stepper.feed(IOCompleted(99, "never started")) == []
    assert stepper.state is state_before and stepper.idle()


# -- determinism --------------------------------------------------------------------------------


class Custom(Effect[int]):
    pass


def run_script(fn_machine: Any) -> list[Any]:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        kind, arg = inp
        if kind == "incr":
            old = ctx.state.get(arg, 0)
            await ctx.append((arg, old + 1))
            return old + 1
        if kind == "race":
            return await ctx.any(ctx.start(Call(blocking, (arg,))), ctx.start(Sleep(arg)))
        if kind == "all":
            return await ctx.all(ctx.start(Custom()), ctx.start(Call(blocking, (arg,))))
        raise ValueError(kind)

    def apply(state: dict[str, int], record: tuple[str, int]) -> dict[str, int]:
        return {**state, record[0]: record[1]}

    stepper = Stepper(fn_machine(handler, apply=apply))
    events: list[Any] = [
        InputArrived(1, ("incr", "x")),
        InputArrived(2, ("race", 3)),
        InputArrived(3, ("incr", "x")),
        IOCompleted(4, "sleep done"),
        InputArrived(4, ("all", 5)),
        IOCompleted(1, 1),
        InputArrived(5, ("bad", 0)),
        IOCompleted(6, error=OSError("x")),
        IOCompleted(5, 10),
        IOCompleted(3, 2),
    ]
    trace: list[Any] = []
    for event in events:
        for action in stepper.feed(event):
            # Exceptions compare by identity: record their type and text instead.
            if isinstance(action, ReplyError):
                trace.append(("error", action.client, type(action.error), str(action.error)))
            else:
                trace.append(action)
    trace.append(stepper.state)
    return trace


def test_same_events_give_same_actions(fn_machine: Any) -> None:
    first = run_script(fn_machine)
    second = run_script(fn_machine)
    assert first == second
    assert len(first) > 10  # the script did produce a real trace
    assert first[-1] == {"x": 1}  # both increments read 0 under INTERLEAVE


def test_feed_rejects_unknown_events(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        return inp

    stepper = Stepper(fn_machine(handler))
    with pytest.raises((TypeError, UsageError), match="InputArrived"):
        stepper.feed("not an event")  # type: ignore[arg-type]


def test_timeout_with_a_bad_future_starts_nothing(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        try:
            await ctx.timeout(inp, 1.0)
        except UsageError as exc:
            return str(exc)
        return "not reached"

    stepper = Stepper(fn_machine(handler))
    actions = stepper.feed(InputArrived("c", "not a future"))
    assert [a for a in actions if isinstance(a, StartIO)] == []
    assert stepper.pending_requests == 0
    reply = actions[-1]
    assert isinstance(reply, Reply) and "'not a future'" in reply.output


def test_generator_exit_raised_by_a_handler_fails_only_that_input(fn_machine: Any) -> None:
    # It escaped the turn: that input was never answered, not even at stop().
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        if inp == "exit":
            raise GeneratorExit
        return inp

    stepper = Stepper(fn_machine(handler))
    failure, reply = stepper.feed(InputArrived("a", "exit"), InputArrived("b", "ok"))
    assert isinstance(failure, ReplyError) and failure.client == "a"
    assert reply == Reply("b", "ok")


@pytest.mark.parametrize("policy", ["exclusive", None, 2])
def test_a_policy_that_is_not_a_policy_is_refused_up_front(fn_machine: Any, policy: Any) -> None:
    # Anything but INTERLEAVE or EXCLUSIVE was taken for PER_KEY: every input
    # then failed for want of a key() the machine never meant to need.
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        return inp

    machine = fn_machine(handler, policy=policy)
    with pytest.raises(UsageError, match=r"\.policy must be a corosm\.Policy .*got"):
        Stepper(machine)


def test_cancelled_error_escaping_a_handler_fails_only_that_input(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        await ctx.call(blocking)
        if inp == "cancel":
            raise asyncio.CancelledError
        return inp

    stepper = Stepper(fn_machine(handler))
    stepper.feed(InputArrived("a", "cancel"), InputArrived("b", "ok"))
    [failure] = stepper.feed(IOCompleted(1))
    assert isinstance(failure, ReplyError) and failure.client == "a"
    assert stepper.feed(IOCompleted(2)) == [Reply("b", "ok")]


def test_an_initial_state_that_raises_says_whose_it_was(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        return inp

    def initial() -> Any:
        raise KeyError("config")

    with pytest.raises(UsageError, match=r"FnMachine\.initial_state\(\) raised KeyError: 'config'"):
        Stepper(fn_machine(handler, initial=initial))


def test_a_ctx_kept_after_its_handler_returned_starts_nothing(fn_machine: Any) -> None:
    # It journaled and applied the record all the same, outside any input.
    kept: list[Context[Any]] = []

    async def handler(ctx: Context[Any], inp: Any) -> Any:
        kept.append(ctx)
        return inp

    stepper = Stepper(fn_machine(handler))
    assert stepper.feed(InputArrived("a", "x")) == [Reply("a", "x")]
    (ctx,) = kept
    with pytest.raises(UsageError, match="ctx started Append outside a running handler"):
        ctx.start_append(b"record")
    with pytest.raises(UsageError, match="ctx started Call outside a running handler"):
        ctx.start_call(print)
    with pytest.raises(UsageError, match=r"ctx\.state was set outside a running handler"):
        ctx.state = {"forged": 1}
    assert stepper.take_actions() == [] and stepper.state == {}
