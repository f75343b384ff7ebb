"""An adversarial audit of the effect semantics, through the asyncio runtime.

The same contract as ``tests/test_core_audit_effects.py`` (the pure stepper),
where it needs real executors: calls that raise what ``except Exception``
does not catch, a sleep no timer can hold, foreign awaits on a running loop,
and stopping with handlers, calls and timers still pending. Every wait is
bounded by :data:`BOUND`; nothing waits on the clock to make progress.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

from corosm.core import Context
from corosm.errors import EffectError, EffectTimeout, Stopped
from corosm.runtime import Runtime, run

BOUND = 10.0  # seconds: the longest any single wait in these tests may take


def raise_it(exc: BaseException) -> None:
    raise exc


def corosm_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("corosm")]


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3), GeneratorExit()], ids=repr)
def test_a_call_raising_a_base_exception_fails_at_the_await_alone(
    fn_machine: Any, exc: BaseException
) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        if inp == "ok":
            return await ctx.call(len, "abc")
        try:
            await ctx.call(raise_it, exc)
        except EffectError as error:
            return type(error.__cause__).__name__
        return "not reached"

    async def main() -> list[Any]:
        async with Runtime(fn_machine(handler)) as rt:
            return [await rt.submit("raise"), await rt.submit("ok")]

    assert run(main()) == [type(exc).__name__, 3]


def test_a_sleep_too_long_for_the_loop_harms_no_other_effect(
    fn_machine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Old code: asyncio's call_later raised OverflowError on an int too large for a
    float; the whole batch of that turn's timers failed with it, other inputs' too."""

    async def handler(ctx: Context[Any], inp: Any) -> Any:
        if inp == "short":
            await ctx.sleep(0)
            return "slept"
        try:
            return await ctx.timeout(ctx.start_sleep(10**400), 0.001)
        except EffectTimeout:
            return "timed out"

    async def main() -> list[Any]:
        async with Runtime(fn_machine(handler)) as rt:
            both = [rt.submit_nowait("forever"), rt.submit_nowait("short")]  # one turn
            return list(await asyncio.wait_for(asyncio.gather(*both), BOUND))

    with caplog.at_level(logging.ERROR, logger="corosm"):
        assert asyncio.run(main()) == ["timed out", "slept"]  # asyncio's own loop
        assert run(main()) == ["timed out", "slept"]  # uvloop
    assert not caplog.records


def test_foreign_awaits_on_a_running_loop_are_refused_and_the_handler_goes_on(
    fn_machine: Any,
) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        refused = []
        for foreign in (
            lambda: asyncio.sleep(0),
            lambda: asyncio.sleep(BOUND),  # a real timer on the running loop
            lambda: asyncio.get_running_loop().create_future(),
        ):
            try:
                await foreign()
            except TypeError as exc:
                refused.append(type(exc).__name__)
            await ctx.sleep(0)  # corosm's own effects go on working
        return refused

    async def main() -> Any:
        async with Runtime(fn_machine(handler)) as rt:
            return await asyncio.wait_for(rt.submit(None), BOUND)

    assert run(main()) == ["ForeignAwaitError"] * 3


def test_stop_answers_every_waiting_input_even_when_a_finally_misbehaves(
    fn_machine: Any,
) -> None:
    """Old code: the ``finally`` that started an effect while being closed made
    ``stop`` raise; the inputs after it were never answered and the executors
    (their threads and timers) were never closed."""
    gate = threading.Event()

    async def handler(ctx: Context[Any], inp: Any) -> Any:
        if inp == "call":
            return await ctx.call(gate.wait, BOUND)
        if inp == "quick call":
            return await ctx.call(len, "ab")
        try:
            await ctx.sleep(3600)
        finally:
            if inp == "cleanup":
                await ctx.append("cleanup")
        return "not reached"

    async def main() -> list[Any]:
        rt = Runtime(fn_machine(handler, apply=lambda s, r: s))
        await rt.start()
        assert await rt.submit("quick call") == 2  # a worker thread now exists
        waiting = [rt.submit_nowait(kind) for kind in ("cleanup", "sleep", "call")]
        # The next turn admits them; none finishes, so stop gives up on them.
        await asyncio.wait_for(rt.stop(timeout=0.01), BOUND)
        return await asyncio.gather(*waiting, return_exceptions=True)

    try:
        outcomes = run(main())
    finally:
        gate.set()  # the abandoned call returns; its thread ends
    assert [type(o) for o in outcomes] == [Stopped] * 3
    for thread in corosm_threads():
        thread.join(BOUND)
        assert not thread.is_alive(), thread.name


def test_stop_with_a_suspended_timeout_leaves_nothing_pending(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        return await ctx.timeout(ctx.start_sleep(3600), 3600)

    async def main() -> Any:
        rt = Runtime(fn_machine(handler))
        await rt.start()
        waiting = rt.submit_nowait(None)
        await asyncio.wait_for(rt.stop(timeout=0.01), BOUND)
        return await asyncio.gather(waiting, return_exceptions=True), rt.stats()

    [outcome], stats = run(main())
    assert isinstance(outcome, Stopped)
    assert stats["pending_requests"] == 0 and stats["suspended"] == 0
