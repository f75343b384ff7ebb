"""Follow-ups on the runtime, the stepper and the simulator.

* ``Runtime.stop`` closes the executors on a daemon thread of its own, waits
  for them at most ``close_timeout`` seconds, and the process can exit while
  a close never returns (it used the loop's default executor, which
  ``asyncio.run`` joins at exit with no bound).
* A handler that hands a ctx effect to asyncio (``wait_for``, ``gather``,
  ``create_task``) gets a ``ForeignAwaitError`` that says what to use instead.
* A simulator function that is an ``async def`` is refused.

The subprocess tests are bounded: a process that has not exited within
``BOUND`` seconds is killed and the test fails.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import subprocess
import sys
import threading
from collections.abc import Coroutine, Sequence
from typing import Any

import pytest

from corosm.core import Call, Context, Effect, Sleep
from corosm.errors import ForeignAwaitError, HandlerMisuse, Stopped, UsageError
from corosm.io.executor import Completion, CompletionSink
from corosm.runtime import Runtime, run
from corosm.testing.sim import World
from corosm.testing.sim.executors import IODone, SimEffects, need_effects
from corosm.testing.sim.trace import Trace

BOUND = 10.0  # seconds: the longest any single wait in these tests may take

# -- stop with an executor whose close never returns ----------------------------------

STUCK_SCRIPT = """
import asyncio, threading
from corosm.core import Call, Context, Machine
from corosm.runtime import Runtime, run

never = threading.Event()


class Stuck:
    \"\"\"An executor whose close blocks forever, as on a disk that does not answer.\"\"\"

    def start(self, sink): pass
    def submit(self, requests): pass
    def cancel(self, request): pass
    def close(self): never.wait()


class Echo(Machine[None, int, int]):
    def initial_state(self): return None
    async def handle(self, ctx, input): return input


async def main():
    rt = Runtime(Echo(), executors={Call: Stuck()})
    await rt.start()
    assert await rt.submit(3) == 3
    try:
        await STOP
        print("stop returned", flush=True)
    except TimeoutError:
        print("stop given up on", flush=True)


run(main())
print("run returned", flush=True)
"""


def run_stuck_script(stop: str) -> subprocess.CompletedProcess[str]:
    """Run :data:`STUCK_SCRIPT` with ``stop`` awaited; fail if it does not exit in time."""
    script = STUCK_SCRIPT.replace("STOP", stop)
    try:
        return subprocess.run(
            [sys.executable, "-c", script],
            check=False,
            capture_output=True,
            text=True,
            timeout=BOUND,
        )
    except subprocess.TimeoutExpired as exc:  # subprocess.run has killed it
        pytest.fail(f"the process did not exit within {BOUND} s: {exc.stdout!r} {exc.stderr!r}")


def test_stop_returns_and_the_process_exits_while_a_close_never_returns() -> None:
    """Old code: stop waited for the close forever (and took no close_timeout)."""
    done = run_stuck_script("rt.stop(timeout=0.2, close_timeout=0.3)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["stop returned", "run returned"]
    assert "Stuck object" in done.stderr and "not closed after 0.3 s" in done.stderr


def test_the_process_exits_when_the_caller_gives_up_on_stop() -> None:
    """Old code: asyncio.run's shutdown_default_executor waited for the close forever."""
    done = run_stuck_script("asyncio.wait_for(rt.stop(timeout=0.2), 0.5)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["stop given up on", "run returned"]


class Recording:
    """An executor that records its close, or raises ``error`` from it."""

    def __init__(self, closed: list[str], name: str, error: Exception | None = None) -> None:
        self.closed, self.name, self.error = closed, name, error

    def start(self, sink: CompletionSink) -> None:
        pass

    def submit(self, requests: Sequence[tuple[int, Effect[Any]]]) -> None:
        pass

    def cancel(self, request: int) -> None:
        pass

    def close(self) -> None:
        self.closed.append(self.name)
        if self.error is not None:
            raise self.error


def test_a_close_that_raises_does_not_keep_the_others_open(fn_machine: Any) -> None:
    """Old code: stop raised at once, leaving the later executors open and the runtime set."""
    closed: list[str] = []
    broken = Recording(closed, "calls", RuntimeError("the disk is gone"))

    async def handler(ctx: Context[Any], inp: Any) -> Any:
        return inp

    async def main() -> Runtime[Any, Any, Any]:
        rt = Runtime(fn_machine(handler), executors={Call: broken, Sleep: Recording(closed, "x")})
        await rt.start()
        with pytest.raises(RuntimeError, match="the disk is gone"):
            await asyncio.wait_for(rt.stop(), BOUND)
        return rt

    rt = run(main())
    assert closed == ["calls", "x"]  # in order, the one after the broken close included
    assert [t for t in threading.enumerate() if t.name == "corosm-close"] == []
    with pytest.raises(Stopped):
        rt.submit_nowait(1)


def test_stop_logs_the_executors_still_closing(
    fn_machine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    closed: list[str] = []

    class Slow(Recording):
        def close(self) -> None:
            assert release.wait(BOUND)
            super().close()

    slow = Slow(closed, "slow")
    after = Recording(closed, "after")

    async def handler(ctx: Context[Any], inp: Any) -> Any:
        return inp

    async def main() -> None:
        rt = Runtime(fn_machine(handler), executors={Call: slow, Sleep: after})
        await rt.start()
        await asyncio.wait_for(rt.stop(close_timeout=0.05), BOUND)

    try:
        with caplog.at_level(logging.WARNING, logger="corosm.runtime"):
            run(main())
        assert closed == []  # stop returned while the slow close still ran
    finally:
        release.set()
    [closer] = [t for t in threading.enumerate() if t.name == "corosm-close"]
    closer.join(BOUND)
    assert not closer.is_alive() and closed == ["slow", "after"]  # finished on its own
    [warning] = [r.getMessage() for r in caplog.records if "not closed" in r.getMessage()]
    assert repr(slow) in warning and repr(after) in warning
    assert "left to close on their own" in warning


# -- a ctx effect handed to asyncio ------------------------------------------------------------


async def wrapped_in_wait_for(ctx: Context[Any]) -> Any:
    return await asyncio.wait_for(ctx.sleep(1), 1)


async def wrapped_in_gather(ctx: Context[Any]) -> Any:
    return await asyncio.gather(ctx.call(len, "ab"))


async def wrapped_in_create_task(ctx: Context[Any]) -> Any:
    return await asyncio.create_task(ctx.call(len, "ab"))


async def bare_yield(ctx: Context[Any]) -> Any:
    return await asyncio.sleep(0)


def foreign_await_message(fn_machine: Any, wrap: Any) -> str:
    """The ForeignAwaitError message a handler running ``wrap(ctx)`` gets, under the runtime."""

    async def handler(ctx: Context[Any], inp: Any) -> Any:
        try:
            await wrap(ctx)
        except ForeignAwaitError as exc:
            return str(exc)
        return "not reached"

    async def main() -> Any:
        async with Runtime(fn_machine(handler)) as rt:
            return await asyncio.wait_for(rt.submit(None), BOUND)

    message = run(main())  # the task asyncio made for the effect fails later: asyncio logs it
    assert isinstance(message, str)
    return message


HINT = "use ctx.timeout(future, seconds), ctx.all(*futures) or ctx.start(effect) instead"


@pytest.mark.parametrize(
    ("wrap", "awaited"),
    [
        (wrapped_in_wait_for, "awaited <Future pending"),
        (wrapped_in_gather, "awaited <_GatheringFuture pending"),
        (wrapped_in_create_task, "awaited <Task pending"),
    ],
)
def test_a_ctx_effect_handed_to_asyncio_gets_a_hint_of_what_to_use(
    fn_machine: Any, wrap: Any, awaited: str
) -> None:
    """Old code: the message named the asyncio future only."""
    message = foreign_await_message(fn_machine, wrap)
    assert awaited in message
    assert "asyncio.wait_for, asyncio.gather or asyncio.create_task" in message
    assert message.endswith(HINT)


def test_a_foreign_await_of_no_asyncio_future_gets_no_such_hint(fn_machine: Any) -> None:
    message = foreign_await_message(fn_machine, bare_yield)
    assert "a bare yield" in message and "ctx.timeout" not in message


# -- an async simulator function ---------------------------------------------------------------


async def async_sim(effect: Effect[Any], rng: random.Random) -> int:
    return 7


class AsyncCallable:
    """A simulator whose ``__call__`` is async: ``inspect`` cannot tell it up front."""

    def __init__(self) -> None:
        self.coroutines: list[Coroutine[Any, Any, int]] = []

    def __call__(self, effect: Effect[Any], rng: random.Random) -> Any:
        coroutine = async_sim(effect, rng)
        self.coroutines.append(coroutine)
        return coroutine


def workload(rng: random.Random) -> int:
    return 1


def test_an_async_simulator_function_is_refused_up_front(fn_machine: Any) -> None:
    """Old code: accepted; the effect's value was the unawaited coroutine."""

    async def handler(ctx: Context[Any], inp: Any) -> Any:
        return inp

    with pytest.raises(UsageError) as info:
        World(lambda: fn_machine(handler), workload, random.Random(0), effects={Call: async_sim})
    message = str(info.value)
    assert "World(effects=...)[Call] is async_sim, an async def" in message
    assert "plain functions fn(effect, rng) -> value" in message
    need_effects("SimSpec.effects", {Call: AsyncCallable()})  # cannot tell: see below


def test_a_coroutine_a_simulator_returns_fails_its_effect_and_is_closed() -> None:
    """Old code: the effect completed with the unrun coroutine as its value."""
    sim_fn = AsyncCallable()
    events: list[IODone] = []
    posted: list[Completion] = []
    sim = SimEffects(
        generation=0,
        rng=random.Random(0),
        latency=(0.001, 0.002),
        effects={Call: sim_fn},
        trace=Trace(),
        now=lambda: 0.0,
        schedule=lambda delay, event: events.append(event),
    )
    sim.start(posted.extend)
    sim.submit([(1, Call(len, ("ab",)))])
    [event] = events
    sim.on_done(event)
    [(request, value, error)] = posted
    assert request == 1 and value is None and isinstance(error, HandlerMisuse)
    assert "simulator function for Call returned a coroutine of async_sim()" in str(error)
    [coroutine] = sim_fn.coroutines
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED
