"""The submit methods belong to the loop's thread: a call from another one is refused.

``Runtime.submit``, ``submit_nowait`` and ``submit_callback`` (and those of a
``ShardedClient``) raise :class:`UsageError` on any thread but the one that
runs their event loop, before they queue anything; the runtime goes on as
before. A plain thread reports back through a ``concurrent.futures.Future``
that the loop awaits with a bound, so a call that would have hung fails.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future as ThreadFuture
from pathlib import Path
from typing import Any

import pytest

from corosm.apps.kv.inputs import Write
from corosm.apps.kv.machine import KVMachine
from corosm.apps.kv.outputs import OK
from corosm.errors import Stopped, UsageError
from corosm.runtime import Runtime, run
from corosm.shards import ShardedClient, open_local
from test_runtime_host import BOUND, Echo

THREAD = "not-the-loop"


async def on_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on a plain thread of its own; return (or raise) what it did, bounded."""
    outcome: ThreadFuture[Any] = ThreadFuture()

    def target() -> None:
        try:
            outcome.set_result(fn())
        except BaseException as exc:
            outcome.set_exception(exc)

    thread = threading.Thread(target=target, name=THREAD)
    thread.start()
    try:
        return await asyncio.wait_for(asyncio.wrap_future(outcome), BOUND)
    finally:
        thread.join(BOUND)  # it ends right after reporting


async def refused_off_the_loop(fn: Callable[[], Any], owner: str) -> None:
    """``fn`` on another thread raises UsageError itself (not Stopped), saying what to do."""
    with pytest.raises(UsageError) as refused:
        await on_thread(fn)
    assert refused.type is UsageError, refused.value
    message = str(refused.value)
    assert f"{owner}.submit, submit_nowait and submit_callback must be called" in message
    assert f"not from thread {THREAD!r}" in message
    assert f"asyncio.run_coroutine_threadsafe({owner}.submit(input), loop)" in message


def never_called(output: Any, error: BaseException | None) -> None:
    raise AssertionError(f"a refused input was answered: {output!r}, {error!r}")


def off_loop_calls(target: Any, input: Any) -> dict[str, Callable[[], Any]]:
    """The ways to submit ``input`` to ``target`` from a thread without going through its loop."""
    return {
        "submit_callback": lambda: target.submit_callback(input, never_called),
        "submit_callback_now": lambda: target.submit_callback(input, never_called, now=True),
        "submit_nowait": lambda: target.submit_nowait(input),
        "submit_on_its_own_loop": lambda: asyncio.run(target.submit(input)),
    }


WAYS = list(off_loop_calls(None, None))


@pytest.mark.parametrize("way", WAYS)
def test_a_submit_from_another_thread_raises_and_the_runtime_goes_on(way: str) -> None:
    async def main() -> None:
        async with Runtime(Echo()) as rt:
            await refused_off_the_loop(off_loop_calls(rt, ("fast", "foreign"))[way], "runtime")
            assert rt.stats()["inputs_received"] == 0  # nothing was queued
            assert await asyncio.wait_for(rt.submit(("fast", "after")), BOUND) == "after"
            assert rt.stats()["inputs_received"] == 1  # the refused input never showed up

    run(main())


def test_the_way_the_message_names_works_from_another_thread() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with Runtime(Echo()) as rt:

            def submit_over() -> Any:
                handed = asyncio.run_coroutine_threadsafe(rt.submit(("fast", 7)), loop)
                return handed.result(BOUND)

            assert await on_thread(submit_over) == 7

    run(main())


def test_a_runtime_not_running_is_stopped_from_any_thread() -> None:
    async def main() -> None:
        rt: Runtime[Any, Any, Any] = Runtime(Echo())
        with pytest.raises(Stopped):
            await on_thread(lambda: rt.submit_callback(("fast", 1), never_called))
        await rt.start()
        await rt.stop()
        with pytest.raises(Stopped):
            await on_thread(lambda: rt.submit_nowait(("fast", 1)))

    run(main())


@pytest.mark.parametrize("way", WAYS)
def test_a_sharded_client_refuses_other_threads_too(way: str, tmp_path: Path) -> None:
    async def main() -> None:
        kv: ShardedClient[Any, Any]
        async with open_local(KVMachine(), tmp_path, shards=2) as kv:
            await refused_off_the_loop(off_loop_calls(kv, Write(b"x", b"1"))[way], "client")
            assert not any(link.queue for link in kv.links)  # nothing was queued
            assert kv.stats()["inputs_sent"] == 0
            assert await asyncio.wait_for(kv.submit(Write(b"y", b"2")), BOUND) == OK
            assert kv.stats()["inputs_sent"] == 1

    run(main())
