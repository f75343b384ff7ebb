"""Gaps in the effect contract a handler sees, closed.

* ``Call`` of something async: refused when the effect is made if it can be
  seen there (a partial of an ``async def``, an object whose ``__call__`` is
  one), and otherwise when the function returns: a coroutine is closed unrun
  and the handler gets :class:`HandlerMisuse` naming the function, from the
  thread pool and from the simulator alike.
* An executor's ``submit`` is all or nothing (see ``Executor.submit``): the
  thread pool fails only the call it could not take, and the host fails the
  whole batch of a ``submit`` that raises; a late completion is ignored.

Every wait is bounded by :data:`BOUND`; nothing waits on the clock.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import random
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Sequence
from typing import Any

import pytest

from corosm.core import Call, Context, Effect, Machine
from corosm.errors import EffectError, HandlerMisuse
from corosm.io.executor import Completion, CompletionSink
from corosm.io.threads import ThreadPoolCallExecutor
from corosm.runtime import Runtime, run
from corosm.runtime.host import Host
from corosm.testing.sim.executors import IODone, SimEffects
from corosm.testing.sim.trace import Trace

BOUND = 10.0  # seconds: the longest any single wait in these tests may take


class Calls(Machine[None, Any, Any]):
    """Input ``(fn, *args)``: ``await ctx.call(fn, *args)``; an error comes back as the value."""

    def initial_state(self) -> None:
        return None

    async def handle(self, ctx: Context[None], input: Any) -> Any:
        fn, *args = input
        try:
            return await ctx.call(fn, *args)
        except Exception as exc:
            return exc


# -- Call of something async -----------------------------------------------------------------------


async def add(a: int, b: int) -> int:
    return a + b


async def countdown(n: int) -> AsyncIterator[int]:
    for i in range(n, 0, -1):
        yield i


class AsyncCallable:
    async def __call__(self, a: int) -> int:
        return a

    async def method(self) -> None:
        return None


class SyncCallable:
    def __call__(self, a: int) -> int:
        return a + 1


ASYNC_IN_DISGUISE = {
    "partial": (functools.partial(add, 1), "add"),
    "partial of a partial": (functools.partial(functools.partial(add, 1), 2), "add"),
    "async __call__": (AsyncCallable(), "AsyncCallable.__call__"),
    "partial of an async __call__": (functools.partial(AsyncCallable(), 1), "__call__"),
    "bound async method": (AsyncCallable().method, "AsyncCallable.method"),
    "async generator": (countdown, "countdown"),
}


@pytest.mark.parametrize(("fn", "name"), ASYNC_IN_DISGUISE.values(), ids=ASYNC_IN_DISGUISE.keys())
def test_call_refuses_an_async_def_behind_a_partial_or_a_call_method(fn: Any, name: str) -> None:
    """Old code: a partial, an async ``__call__`` and an async generator were let through."""
    with pytest.raises(HandlerMisuse) as refused:
        Call(fn, ())
    message = str(refused.value)
    assert repr(fn) in message and f"{name}()" in message and "plain function" in message


PLAIN = {
    "function": len,
    "builtin method": "ab".upper,
    "class": int,
    "object with a plain __call__": SyncCallable(),
    "partial of a builtin": functools.partial(int, base=2),
    "partial of a plain __call__": functools.partial(SyncCallable(), 1),
    "lambda": lambda: None,
}


@pytest.mark.parametrize("fn", PLAIN.values(), ids=PLAIN.keys())
def test_call_accepts_plain_callables_of_every_shape(fn: Any) -> None:
    assert Call(fn, ()).fn is fn


made: list[Coroutine[Any, Any, Any]] = []


def returns_a_coroutine(a: int, b: int) -> Coroutine[Any, Any, int]:
    """A plain function that calls an async one and returns its coroutine (kept for the test)."""
    coro = add(a, b)
    made.append(coro)
    return coro


class Awaitable:
    def __await__(self) -> Generator[Any, None, int]:
        yield None
        return 1


def returns_an_awaitable() -> Awaitable:
    return Awaitable()


def returns_an_awaitable_class() -> type[Awaitable]:
    return Awaitable  # a class is not awaitable, though its instances are


def take_coroutine() -> Coroutine[Any, Any, Any]:
    coro = made.pop()
    assert not made
    return coro


def test_the_thread_pool_closes_a_returned_coroutine_and_fails_the_call() -> None:
    """Old code: the handler got the unrun coroutine as its value (and Python warned)."""

    async def main() -> list[Any]:
        async with Runtime(Calls()) as rt:
            inputs = [
                (returns_a_coroutine, 1, 2),
                (returns_an_awaitable,),
                (returns_an_awaitable_class,),
                (len, "abc"),
            ]
            return [await asyncio.wait_for(rt.submit(input), BOUND) for input in inputs]

    coroutine_error, awaitable_error, a_class, three = run(main())
    assert isinstance(coroutine_error, HandlerMisuse)
    message = str(coroutine_error)
    assert f"{__name__}.returns_a_coroutine" in message and "a coroutine of add()" in message
    assert "plain blocking function" in message
    assert inspect.getcoroutinestate(take_coroutine()) == inspect.CORO_CLOSED
    assert isinstance(awaitable_error, HandlerMisuse)
    assert "returns_an_awaitable" in str(awaitable_error) and "Awaitable" in str(awaitable_error)
    assert a_class is Awaitable and three == 3


def test_the_simulator_refuses_a_returned_coroutine_as_the_thread_pool_does() -> None:
    """Old code: the simulated call completed with the unrun coroutine as its value."""
    events: list[IODone] = []
    posted: list[Completion] = []
    sim = SimEffects(
        generation=0,
        rng=random.Random(0),
        latency=(0.001, 0.002),
        effects={},
        trace=Trace(),
        now=lambda: 0.0,
        schedule=lambda delay, event: events.append(event),  # type: ignore[arg-type]
    )
    sim.start(posted.extend)
    sim.submit([(1, Call(returns_a_coroutine, (1, 2))), (2, Call(len, ("ab",)))])
    for event in events:
        sim.on_done(event)
    [(request, value, error), ok] = posted
    assert request == 1 and value is None and isinstance(error, HandlerMisuse)
    assert "returns_a_coroutine" in str(error) and "a coroutine of add()" in str(error)
    assert inspect.getcoroutinestate(take_coroutine()) == inspect.CORO_CLOSED
    assert ok == (2, 2, None)


# -- a submit that fails ---------------------------------------------------------------------------


def gated(gate: threading.Event, ran: list[str], name: str) -> str:
    ran.append(name)
    assert gate.wait(BOUND)
    return name


def test_a_call_the_pool_cannot_take_fails_alone_and_the_others_complete() -> None:
    """Old code: the pool's error escaped ``submit`` after two calls were running, and
    the host failed all three: two handlers heard of a failure while their calls ran."""
    gate = threading.Event()
    ran: list[str] = []
    calls = ThreadPoolCallExecutor(max_workers=4)

    async def main() -> list[Any]:
        async with Runtime(Calls(), executors={Call: calls}) as rt:
            pool = calls._pool
            assert pool is not None
            taken = 0
            submit = pool.submit

            def refuse_the_third(fn: Callable[..., Any], /, *args: Any) -> Any:
                nonlocal taken
                taken += 1
                if taken == 3:
                    raise RuntimeError("can't start new thread")
                return submit(fn, *args)

            pool.submit = refuse_the_third  # type: ignore[method-assign]
            one, two, three, four = (  # one turn: one submit of four calls
                rt.submit_nowait((gated, gate, ran, name))
                for name in ("one", "two", "three", "four")
            )
            refused = await asyncio.wait_for(three, BOUND)
            early = [one.done(), two.done(), four.done()]
            gate.set()
            return [refused, early, *await asyncio.wait_for(asyncio.gather(one, two, four), BOUND)]

    refused, early, *values = run(main())
    assert isinstance(refused, EffectError) and "can't start new thread" in str(refused)
    assert early == [False, False, False]  # still running: nothing told them otherwise
    assert values == ["one", "two", "four"]
    assert sorted(ran) == ["four", "one", "two"]


class TakesTwoThenRaises:
    """An executor that breaks the contract: it accepts two requests, then raises."""

    def __init__(self) -> None:
        self.accepted: list[int] = []
        self.sink: CompletionSink | None = None

    def start(self, sink: CompletionSink) -> None:
        self.sink = sink

    def submit(self, requests: Sequence[tuple[int, Effect[Any]]]) -> None:
        for request, _effect in requests:
            if len(self.accepted) == 2:
                raise RuntimeError("out of capacity")
            self.accepted.append(request)

    def cancel(self, request: int) -> None:
        """Nothing to cancel."""

    def close(self) -> None:
        """Nothing to release."""


def test_a_submit_that_raises_fails_its_whole_batch_once_and_late_completions_are_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Passes on the old code too: it pins what ``Executor.submit`` documents."""
    executor = TakesTwoThenRaises()
    replies: list[tuple[Any, Any, BaseException | None]] = []
    posted: list[Completion] = []
    host: Host[None, Any, Any] = Host(
        Calls(), executors={Call: executor}, reply=lambda *reply: replies.append(reply)
    )
    host.start(posted.extend)
    for client in ("a", "b", "c"):
        host.offer(client, (len, client))
    with caplog.at_level(logging.ERROR, logger="corosm.runtime"):
        host.turn()
    assert "TakesTwoThenRaises" in caplog.text and "out of capacity" in caplog.text
    assert executor.accepted == [1, 2] and [r for r, _, _ in posted] == [1, 2, 3]
    failed, posted[:] = list(posted), []
    host.turn(failed)
    assert [client for client, _, _ in replies] == ["a", "b", "c"]
    for _, output, error in replies:  # the handler caught the error and returned it
        assert error is None and isinstance(output, EffectError)
        assert "out of capacity" in str(output)
    host.turn([(1, 1, None), (2, 1, None)])  # the two it had accepted complete after all
    assert len(replies) == 3 and host.idle() and host.stepper.pending_requests == 0
