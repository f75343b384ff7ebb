"""An adversarial audit of the effect semantics a handler sees, on the pure stepper.

Each test drives a :class:`Stepper` by hand and tries to break one rule of
the contract (``docs/semantics.md``): ``ctx.all`` and ``ctx.any`` with
failures and losers, futures shared between handlers or machines, awaits of
foreign objects, bad timeout and sleep values, and ``close`` with handlers
still suspended. Where a test found a break, its docstring says what the
old code did.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import types
from collections.abc import Generator
from typing import Any

import pytest

from corosm.core import (
    Call,
    CancelIO,
    Context,
    Future,
    InputArrived,
    IOCompleted,
    Reply,
    ReplyError,
    Sleep,
    StartIO,
    Stepper,
)
from corosm.errors import (
    EffectError,
    EffectTimeout,
    ForeignAwaitError,
    Stopped,
    UsageError,
)


def blocking(*args: Any) -> Any:
    """Stands for a blocking function; the stepper never runs it."""
    return args


def listing(fn_machine: Any, handler: Any) -> Stepper[Any, Any, Any]:
    """A stepper whose state is the list of applied records."""
    return Stepper(fn_machine(handler, initial=list, apply=lambda s, r: [*s, r]))


# -- ctx.all with failures ---------------------------------------------------------------------


async def all_of_two(ctx: Context[Any], inp: Any) -> Any:
    if inp == "other":
        return await ctx.call(blocking, "other")
    return await ctx.all(ctx.start_call(blocking, 1), ctx.start_call(blocking, 2))


def test_all_raises_the_first_failure_and_the_late_one_reaches_nobody(fn_machine: Any) -> None:
    stepper = Stepper(fn_machine(all_of_two))
    stepper.feed(InputArrived("a", "all"), InputArrived("b", "other"))  # requests 1, 2; 3
    cause = OSError("first")
    [failure] = stepper.feed(IOCompleted(1, error=cause))
    assert isinstance(failure, ReplyError) and failure.client == "a"
    assert isinstance(failure.error, EffectError) and failure.error.__cause__ is cause
    # The other call of the group completes later: it is dropped, not given to "b".
    assert stepper.feed(IOCompleted(2, "late")) == []
    assert stepper.feed(IOCompleted(3, "mine")) == [Reply("b", "mine")]
    assert stepper.idle() and stepper.suspended == 0


@pytest.mark.parametrize("order", [(1, 2), (2, 1)])
def test_all_with_two_failures_raises_the_one_that_failed_first(
    fn_machine: Any, order: tuple[int, int]
) -> None:
    stepper = Stepper(fn_machine(all_of_two))
    stepper.feed(InputArrived("a", "all"))
    errors = {1: OSError("one"), 2: OSError("two")}
    first, second = order
    [failure] = stepper.feed(
        IOCompleted(first, error=errors[first]), IOCompleted(second, error=errors[second])
    )
    assert isinstance(failure, ReplyError) and failure.error.__cause__ is errors[first]
    assert stepper.idle()


# -- ctx.any and its losers -----------------------------------------------------------------------


def test_a_losing_append_completes_in_log_order_after_the_handler_returned(
    fn_machine: Any,
) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        if inp == "writer":
            await ctx.append("second")
            return list(ctx.state)
        return await ctx.any(ctx.start_append("first"), ctx.start_call(blocking))

    stepper = listing(fn_machine, handler)
    stepper.feed(InputArrived("racer", "any"), InputArrived("w", "writer"))  # 1, 2; 3
    assert stepper.feed(IOCompleted(2, "called")) == [Reply("racer", (1, "called"))]
    # The append lost, but it is never cancelled: applied, in log order, before "second".
    assert stepper.feed(IOCompleted(1, 1)) == []
    assert stepper.feed(IOCompleted(3, 2)) == [Reply("w", ["first", "second"])]
    assert stepper.idle()


def test_a_losing_call_and_sleep_completing_after_the_return_are_ignored(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        return await ctx.any(ctx.start_call(blocking), ctx.start_sleep(5), ctx.start_call(blocking))

    stepper = Stepper(fn_machine(handler))
    stepper.feed(InputArrived("a", None))
    assert stepper.feed(IOCompleted(3, "won")) == [CancelIO(1), CancelIO(2), Reply("a", (2, "won"))]
    assert stepper.feed(IOCompleted(1, "late"), IOCompleted(2)) == []
    assert stepper.idle() and stepper.completions == 3


def test_any_and_all_of_futures_already_done_do_not_suspend(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        first, second = ctx.start_call(blocking, 1), ctx.start_call(blocking, 2)
        await ctx.all(first, second)
        pending = ctx.start_call(blocking, 3)
        return await ctx.any(pending, second, first), await ctx.all(first, second)

    stepper = Stepper(fn_machine(handler))
    stepper.feed(InputArrived("a", None))
    # The first done in argument order wins; the unfinished one is cancelled.
    assert stepper.feed(IOCompleted(2, "b"), IOCompleted(1, "a")) == [
        StartIO(3, Call(blocking, (3,))),
        CancelIO(3),
        Reply("a", ((1, "b"), ["a", "b"])),
    ]
    assert stepper.idle()


@pytest.mark.parametrize("mode", ["all", "any"])
def test_the_same_future_twice_in_a_group(fn_machine: Any, mode: str) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        future = ctx.start_call(blocking)
        return await getattr(ctx, mode)(future, future)

    stepper = Stepper(fn_machine(handler))
    stepper.feed(InputArrived("a", None))
    expected = ["v", "v"] if mode == "all" else (0, "v")
    assert stepper.feed(IOCompleted(1, "v")) == [Reply("a", expected)]
    assert stepper.idle()


def test_awaiting_a_future_twice_gives_the_same_outcome(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        good, bad = ctx.start_call(blocking), ctx.start_call(blocking)
        outcomes: list[Any] = [await good, await good]
        for _ in range(2):
            try:
                await bad
            except EffectError as exc:
                outcomes.append(str(exc.__cause__))
        return outcomes

    stepper = Stepper(fn_machine(handler))
    stepper.feed(InputArrived("a", None))
    assert stepper.feed(IOCompleted(2, error=OSError("bad")), IOCompleted(1, "v")) == [
        Reply("a", ["v", "v", "bad", "bad"])
    ]


def test_effects_started_and_never_awaited(fn_machine: Any) -> None:
    """What the docs say: the outcome is dropped; an append still runs and is applied."""

    async def handler(ctx: Context[Any], inp: Any) -> Any:
        ctx.start_call(blocking)
        ctx.start_append("kept")
        ctx.start_append("lost")
        return "returned"

    stepper = listing(fn_machine, handler)
    assert stepper.feed(InputArrived("a", None))[-1] == Reply("a", "returned")
    assert stepper.pending_requests == 3 and not stepper.idle()
    assert stepper.feed(IOCompleted(1, error=OSError("nobody hears"))) == []
    assert stepper.feed(IOCompleted(2, 1), IOCompleted(3, error=OSError("disk"))) == []
    assert stepper.state == ["kept"] and stepper.idle()


# -- futures shared between handlers, or from another machine --------------------------------------


def test_any_never_cancels_a_future_another_handler_awaits(fn_machine: Any) -> None:
    """Old code: the loser was cancelled under the other handler, which then hung for good."""
    shared: list[Future[Any]] = []

    async def handler(ctx: Context[Any], inp: Any) -> Any:
        if inp == "borrower":
            return await shared[0]
        shared.append(ctx.start_call(blocking, "shared"))  # request 1
        quick = ctx.start_call(blocking, "quick")  # request 2
        await quick
        return await ctx.any(quick, shared[0])  # quick is done: the any returns at once

    stepper = Stepper(fn_machine(handler))
    stepper.feed(InputArrived("owner", None), InputArrived("borrower", "borrower"))
    assert stepper.suspended == 2
    assert stepper.feed(IOCompleted(2, "q")) == [Reply("owner", (0, "q"))]
    assert stepper.feed(IOCompleted(1, "s")) == [Reply("borrower", "s")]
    assert stepper.idle() and stepper.suspended == 0


def test_a_timeout_whose_wait_is_refused_leaves_no_timer_behind(fn_machine: Any) -> None:
    """Old code: the timer of the refused wait kept running, a pending request, until it fired."""
    shared: list[Future[Any]] = []

    async def handler(ctx: Context[Any], inp: Any) -> Any:
        if inp == "owner":
            shared.append(ctx.start_call(blocking))
            return await shared[0]
        try:
            return await ctx.timeout(shared[0], 60)
        except UsageError as exc:
            return str(exc)

    stepper = Stepper(fn_machine(handler))
    stepper.feed(InputArrived("owner", "owner"))
    start, cancel, reply = stepper.feed(InputArrived("other", "other"))
    assert start == StartIO(2, Sleep(60)) and cancel == CancelIO(2)
    assert isinstance(reply, Reply) and "already awaited by another handler" in reply.output
    assert stepper.pending_requests == 1  # the call alone
    assert stepper.feed(IOCompleted(1, "v")) == [Reply("owner", "v")]
    assert stepper.idle()


def test_a_future_another_machine_awaits_is_refused_and_reaches_only_its_own(
    fn_machine: Any,
) -> None:
    leaked: list[Future[Any]] = []

    async def owner(ctx: Context[Any], inp: Any) -> Any:
        leaked.append(ctx.start_call(blocking))
        return await leaked[0]

    async def thief(ctx: Context[Any], inp: Any) -> Any:
        try:
            return await leaked[0]
        except UsageError as exc:
            return str(exc)

    mine, theirs = Stepper(fn_machine(owner)), Stepper(fn_machine(thief))
    mine.feed(InputArrived("owner", None))
    [refused] = theirs.feed(InputArrived("thief", None))
    assert isinstance(refused, Reply) and refused.client == "thief"
    assert "Call(" in refused.output
    assert theirs.idle() and theirs.suspended == 0
    assert mine.feed(IOCompleted(1, "v")) == [Reply("owner", "v")]
    assert mine.idle() and mine.suspended == 0


def test_a_future_of_another_machine_is_refused(fn_machine: Any) -> None:
    """Old code: the thief suspended on it, and the owner's stepper, when the call
    completed, resumed the thief's handler and replied to the thief itself."""
    leaked: list[Future[Any]] = []

    async def owner(ctx: Context[Any], inp: Any) -> Any:
        leaked.append(ctx.start_call(blocking))
        return "left it running"

    async def thief(ctx: Context[Any], inp: Any) -> Any:
        return await ctx.all(leaked[0])

    mine, theirs = Stepper(fn_machine(owner)), Stepper(fn_machine(thief))
    mine.feed(InputArrived("owner", None))
    [refused] = theirs.feed(InputArrived("thief", None))
    assert isinstance(refused, ReplyError) and isinstance(refused.error, UsageError)
    assert "was not started by this machine" in str(refused.error)
    assert "Call(" in str(refused.error) and theirs.suspended == 0 and theirs.idle()
    assert mine.feed(IOCompleted(1, "v")) == [] and mine.idle()


def test_an_any_with_a_future_of_another_machine_cancels_nothing_of_ours(fn_machine: Any) -> None:
    """Old code: the loser was looked up by its request number alone, so this
    machine's own request of that number was cancelled under its handler."""
    leaked: list[Future[Any]] = []

    async def owner(ctx: Context[Any], inp: Any) -> Any:
        leaked.append(ctx.start_call(blocking, "theirs"))  # their request 1
        return "left it running"

    async def handler(ctx: Context[Any], inp: Any) -> Any:
        if inp == "waiter":
            return await ctx.call(blocking, "ours")  # our request 1
        quick = ctx.start_call(blocking, "quick")  # our request 2
        await quick
        return await ctx.any(quick, leaked[0])  # quick is done: the any returns at once

    theirs, mine = Stepper(fn_machine(owner)), Stepper(fn_machine(handler))
    theirs.feed(InputArrived("owner", None))
    mine.feed(InputArrived("waiter", "waiter"), InputArrived("racer", "racer"))
    assert mine.feed(IOCompleted(2, "q")) == [Reply("racer", (0, "q"))]
    assert mine.feed(IOCompleted(1, "v")) == [Reply("waiter", "v")]
    assert mine.idle() and not leaked[0].done()
    assert theirs.feed(IOCompleted(1, "t")) == [] and leaked[0].result() == "t"


@pytest.mark.parametrize("posted", [TimeoutError, "timed out"], ids=repr)
def test_an_executor_posting_a_non_exception_fails_that_await_alone(
    fn_machine: Any, posted: Any
) -> None:
    """Old code: chaining it as the cause raised TypeError out of complete(),
    and the completions after it in the same batch were never delivered."""

    async def handler(ctx: Context[Any], inp: Any) -> Any:
        return await ctx.call(blocking)

    stepper = Stepper(fn_machine(handler))
    stepper.feed(InputArrived("a", None), InputArrived("b", None))
    failure, reply = stepper.feed(IOCompleted(1, error=posted), IOCompleted(2, "v"))
    assert isinstance(failure, ReplyError) and isinstance(failure.error, EffectError)
    assert repr(posted) in str(failure.error) and "exception instance" in str(failure.error)
    assert reply == Reply("b", "v") and stepper.idle()


# -- ctx.timeout ---------------------------------------------------------------------------------


async def call_with_timeout(ctx: Context[Any], inp: Any) -> Any:
    try:
        return await ctx.timeout(ctx.start_call(blocking), 1)
    except EffectTimeout:
        return "timed out"


def test_timeout_and_completion_in_one_turn_the_io_first(fn_machine: Any) -> None:
    stepper = Stepper(fn_machine(call_with_timeout))
    stepper.feed(InputArrived("a", None))
    assert stepper.feed(IOCompleted(1, "v"), IOCompleted(2)) == [CancelIO(2), Reply("a", "v")]
    assert stepper.idle()


def test_timeout_and_completion_in_one_turn_the_timer_first(fn_machine: Any) -> None:
    stepper = Stepper(fn_machine(call_with_timeout))
    stepper.feed(InputArrived("a", None))
    assert stepper.feed(IOCompleted(2), IOCompleted(1, "v")) == [
        CancelIO(1),
        Reply("a", "timed out"),
    ]
    assert stepper.idle()


def test_timeout_of_zero_and_of_infinity_are_timers_like_any_other(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        try:
            return await ctx.timeout(ctx.start_call(blocking), inp)
        except EffectTimeout as exc:
            return str(exc)

    stepper = Stepper(fn_machine(handler))
    assert stepper.feed(InputArrived("zero", 0))[1] == StartIO(2, Sleep(0))
    [_, reply] = stepper.feed(IOCompleted(2))
    assert isinstance(reply, Reply) and reply.output.endswith("within 0 s")
    assert stepper.feed(InputArrived("forever", math.inf))[1] == StartIO(4, Sleep(math.inf))
    assert stepper.feed(IOCompleted(3, "v")) == [CancelIO(4), Reply("forever", "v")]


BAD_SECONDS = [-1, -0.5, math.nan, -math.inf, True, False, "1", None, 1j, [1]]


@pytest.mark.parametrize("seconds", BAD_SECONDS, ids=repr)
def test_bad_timeouts_and_sleeps_name_the_value_and_start_nothing(
    fn_machine: Any, seconds: Any
) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        future = ctx.start_call(blocking)
        messages = []
        for bad in (
            lambda: ctx.timeout(future, seconds),
            lambda: ctx.sleep(seconds),
            lambda: ctx.timeout(ctx.all(future), seconds),
        ):
            try:
                await bad()
            except UsageError as exc:
                messages.append(str(exc))
        try:
            ctx.start_sleep(seconds)
        except UsageError as exc:
            messages.append(str(exc))
        return messages

    stepper = Stepper(fn_machine(handler))
    [start, reply] = stepper.feed(InputArrived("a", None))
    assert start == StartIO(1, Call(blocking))  # and no timer
    assert isinstance(reply, Reply) and len(reply.output) == 4
    for message in reply.output:
        assert repr(seconds) in message and ">= 0" in message


# -- ctx.call with bad functions -------------------------------------------------------------------


async def an_async_function() -> str:
    return "never run on a thread"


@pytest.mark.parametrize("fn", [an_async_function, "not callable", None, 3])
def test_call_refuses_what_a_thread_cannot_run_and_names_it(fn_machine: Any, fn: Any) -> None:
    """Old code: an ``async def`` ran on the thread and the handler got a coroutine back."""

    async def handler(ctx: Context[Any], inp: Any) -> Any:
        messages = []
        for start in (lambda: ctx.start_call(fn), lambda: ctx.start(Call(fn))):
            try:
                start()
            except UsageError as exc:
                messages.append(str(exc))
        try:
            await ctx.call(fn)
        except UsageError as exc:
            messages.append(str(exc))
        return messages

    stepper = Stepper(fn_machine(handler))
    [reply] = stepper.feed(InputArrived("a", None))
    assert isinstance(reply, Reply) and len(reply.output) == 3
    for message in reply.output:
        assert repr(fn) in message
    assert stepper.pending_requests == 0


# -- foreign awaits --------------------------------------------------------------------------------


class Yields:
    """A bare awaitable that yields ``value`` to whoever drives it."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, None]:
        yield self.value

    def __repr__(self) -> str:
        return f"Yields({self.value!r})"


@types.coroutine
def generator_based(value: Any) -> Generator[Any, None, None]:
    yield value


class Plain:
    def __repr__(self) -> str:
        return "<a Plain object>"


def test_foreign_awaits_are_type_errors_naming_the_object_and_the_handler_goes_on(
    fn_machine: Any,
) -> None:
    loop = asyncio.new_event_loop()
    try:
        future = loop.create_future()
        foreign: list[Any] = [
            future,
            asyncio.sleep(0),
            Yields(Plain()),
            generator_based(Plain()),
            Plain(),
            Yields(None),
        ]

        async def handler(ctx: Context[Any], inp: Any) -> Any:
            seen = []
            for thing in foreign:
                try:
                    await thing
                except TypeError as exc:
                    seen.append((type(exc).__name__, str(exc)))
                seen.append(await ctx.call(blocking, len(seen)))  # effects go on working
            return seen

        stepper = Stepper(fn_machine(handler))
        actions = stepper.feed(InputArrived("a", None))
        for request in range(1, len(foreign) + 1):
            assert actions == [StartIO(request, Call(blocking, (2 * request - 1,)))]
            actions = stepper.feed(IOCompleted(request, request))
        [reply] = actions
        assert isinstance(reply, Reply)
        errors = reply.output[::2]
        assert reply.output[1::2] == list(range(1, len(foreign) + 1))
        for (kind, message), thing in zip(errors, (future, None, Plain(), Plain()), strict=False):
            assert kind == "ForeignAwaitError"
            assert (repr(thing) if thing is not None else "bare yield") in message
        assert errors[4] == ("TypeError", "object Plain can't be used in 'await' expression")
        assert errors[5][0] == "ForeignAwaitError" and "bare yield" in errors[5][1]
        assert stepper.idle()
    finally:
        loop.close()


def test_a_foreign_await_that_escapes_fails_that_input_alone(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        if inp == "foreign":
            await generator_based(Plain())
        return await ctx.call(blocking)

    stepper = Stepper(fn_machine(handler))
    actions = stepper.feed(InputArrived("a", "ok"), InputArrived("b", "foreign"))
    assert actions[0] == StartIO(1, Call(blocking))
    assert isinstance(actions[1].error, ForeignAwaitError)
    assert "<a Plain object>" in str(actions[1].error)
    assert stepper.feed(IOCompleted(1, "v")) == [Reply("a", "v")]


# -- close with handlers still suspended -----------------------------------------------------------


def test_close_fails_every_suspended_input_even_when_a_finally_misbehaves(fn_machine: Any) -> None:
    """Old code: the first ``finally`` that raised escaped close(); the inputs after it
    were never answered and stayed suspended."""

    async def handler(ctx: Context[Any], inp: Any) -> Any:
        try:
            await ctx.sleep(3600)
        finally:
            if inp == "cleans up with an effect":
                await ctx.append("cleanup")  # refused: the handler no longer runs
            elif inp == "raises":
                raise KeyError("in finally")
            elif inp == "suspends again":
                try:
                    await ctx.sleep(1)
                except UsageError:
                    await generator_based(Plain())  # yields while being closed
        return "not reached"

    kinds = ["cleans up with an effect", "raises", "suspends again", "plain"]
    stepper = listing(fn_machine, handler)
    stepper.feed(*(InputArrived(i, kind) for i, kind in enumerate(kinds)))
    assert stepper.suspended == len(kinds)
    stepper.close(Stopped("stopping"))
    actions = stepper.take_actions()
    assert [a.client for a in actions if isinstance(a, ReplyError)] == [0, 1, 2, 3]
    assert all(isinstance(a.error, Stopped) for a in actions if isinstance(a, ReplyError))
    assert not [a for a in actions if isinstance(a, StartIO)]  # the cleanup started nothing
    assert stepper.idle() and stepper.state == [] and stepper.inputs_failed == len(kinds)


def test_appends_keep_their_order_whatever_the_groups_around_them(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        first = ctx.start_append(f"{inp}-1")
        call = ctx.start_call(blocking)
        second = ctx.start_append(f"{inp}-2")
        with contextlib.suppress(EffectTimeout):
            await ctx.timeout(ctx.any(second, call), 0)
        await ctx.all(first, second)
        return list(ctx.state)

    stepper = listing(fn_machine, handler)
    stepper.feed(InputArrived("a", "a"))  # 1 append, 2 call, 3 append, 4 timer
    assert stepper.feed(IOCompleted(4)) == [CancelIO(2)]
    assert stepper.feed(IOCompleted(1, 1), IOCompleted(3, 2)) == [Reply("a", ["a-1", "a-2"])]
