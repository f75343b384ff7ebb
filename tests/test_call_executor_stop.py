"""Stopping never waits for a ``ctx.call`` that is still running on its worker thread.

The blocked call waits on events the test controls: ``entered`` tells the test
it is running, ``release`` lets it return, ``returned`` records that it did.
Every wait is bounded; no test sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from corosm.core import Call, Context, Machine
from corosm.errors import Stopped, UsageError
from corosm.io.executor import Completion
from corosm.io.threads import ThreadPoolCallExecutor
from corosm.runtime import Runtime, run

BOUND = 10.0  # seconds: the longest any single wait in these tests may take


class Blocker:
    """The three events of one blocked call."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.returned = threading.Event()


def blocked(blocker: Blocker) -> str:
    """A call that blocks until the test releases it."""
    blocker.entered.set()
    blocker.release.wait(BOUND)
    blocker.returned.set()
    return "released"


def never_run(ran: threading.Event) -> None:
    ran.set()


class Calls(Machine[None, Any, Any]):
    """Input ``(fn, arg)``: ``await ctx.call(fn, arg)``."""

    def initial_state(self) -> None:
        return None

    async def handle(self, ctx: Context[None], input: Any) -> Any:
        fn, arg = input
        return await ctx.call(fn, arg)


def finish(blocker: Blocker) -> None:
    """Release the abandoned call and join its worker, so that no thread outlives the test."""
    blocker.release.set()
    assert blocker.returned.wait(BOUND)
    for thread in threading.enumerate():
        if thread.name.startswith("corosm-call"):
            thread.join(BOUND)
            assert not thread.is_alive()


def abandon_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "still running" in r.getMessage()]


def test_stop_returns_while_a_call_is_blocked(caplog: pytest.LogCaptureFixture) -> None:
    blocker = Blocker()
    ran = threading.Event()

    async def main() -> None:
        rt = Runtime(Calls(), call_threads=1)
        await rt.start()
        stuck = rt.submit_nowait((blocked, blocker))
        queued = rt.submit_nowait((never_run, ran))  # waits for the one worker thread
        assert await asyncio.to_thread(blocker.entered.wait, BOUND)
        await asyncio.wait_for(rt.stop(timeout=0.2), BOUND)
        # stop() could only have returned without waiting for the call.
        assert not blocker.returned.is_set()
        for future in (stuck, queued):
            assert isinstance(future.exception(), Stopped)

    with caplog.at_level(logging.WARNING, logger="corosm.runtime"):
        run(main())
    finish(blocker)
    assert not ran.is_set()  # the queued call was cancelled, not run
    [warning] = abandon_warnings(caplog)
    assert f"{__name__}.blocked" in warning and "never_run" not in warning
    assert "left to finish on their own" in warning


def test_close_names_a_cancelled_call_still_running_and_drops_its_completion(
    caplog: pytest.LogCaptureFixture,
) -> None:
    blocker = Blocker()
    posted: list[Completion] = []
    calls = ThreadPoolCallExecutor(max_workers=2)
    calls.start(posted.extend)
    calls.submit([(1, Call(blocked, (blocker,)))])
    assert blocker.entered.wait(BOUND)
    calls.cancel(1)  # too late: the call is running
    with caplog.at_level(logging.WARNING, logger="corosm.runtime"):
        calls.close()
    assert not blocker.returned.is_set()
    finish(blocker)
    assert posted == []  # the late completion is dropped: the executor is closed
    [warning] = abandon_warnings(caplog)
    assert "1 call(s)" in warning and f"{__name__}.blocked" in warning


def test_close_after_the_calls_finished_joins_the_workers_and_warns_of_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    posted: list[Completion] = []
    changed = threading.Condition()

    def sink(batch: Sequence[Completion]) -> None:
        with changed:
            posted.extend(batch)
            changed.notify_all()

    calls = ThreadPoolCallExecutor(max_workers=4)
    calls.start(sink)
    calls.submit([(i, Call(len, ("abc",))) for i in range(4)])
    with changed:
        assert changed.wait_for(lambda: len(posted) == 4, BOUND)
    with caplog.at_level(logging.WARNING, logger="corosm.runtime"):
        calls.close()
    assert sorted(posted) == [(i, 3, None) for i in range(4)]
    assert not [t for t in threading.enumerate() if t.name.startswith("corosm-call")]
    assert abandon_warnings(caplog) == []


@pytest.mark.parametrize("threads", [0, -1])
def test_a_pool_without_threads_is_refused_when_built(threads: int) -> None:
    # Runtime(call_threads=0) got the pool's ValueError, naming max_workers.
    with pytest.raises(
        UsageError, match=f"call threads must be an int of at least 1, got {threads}"
    ):
        Runtime(Calls(), call_threads=threads)
    with pytest.raises(UsageError, match=r"got 2\.5"):
        ThreadPoolCallExecutor(2.5)  # type: ignore[arg-type]
