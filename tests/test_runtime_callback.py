"""``Runtime.submit_callback``: one direct call per input, for outputs and for failures.

The callbacks record what they were given; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from corosm.errors import HandlerError, Overloaded, Stopped, UsageError
from corosm.runtime import Runtime, run
from test_runtime_host import BOUND, Echo, Gate


class Calls:
    """A callback factory that records ``(tag, output, error)`` and wakes waiters."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, Any, BaseException | None]] = []
        self._changed = asyncio.Event()

    def callback(self, tag: Any) -> Any:
        def record(output: Any, error: BaseException | None) -> None:
            self.calls.append((tag, output, error))
            self._changed.set()

        return record

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(BOUND):
            while len(self.calls) < count:
                self._changed.clear()
                await self._changed.wait()

    def by_tag(self) -> dict[Any, list[tuple[Any, BaseException | None]]]:
        out: dict[Any, list[tuple[Any, BaseException | None]]] = {}
        for tag, output, error in self.calls:
            out.setdefault(tag, []).append((output, error))
        return out


def test_each_input_gets_exactly_one_call_with_its_output_or_error() -> None:
    async def main() -> None:
        calls = Calls()
        gate = Gate()
        async with Runtime(Echo(), call_threads=4) as rt:
            for i in range(50):
                rt.submit_callback(("fast", i), calls.callback(i))
            rt.submit_callback(("raise",), calls.callback("raise"))
            rt.submit_callback(("gate", gate, "slow"), calls.callback("gate"))
            await gate.wait_entered(1)
            await calls.wait_for(51)
            assert "gate" not in calls.by_tag()  # still suspended: not called early
            gate.open()
            await calls.wait_for(52)
            for _ in range(5):  # a duplicate call would show up within a few passes
                await asyncio.sleep(0)
        by_tag = calls.by_tag()
        assert len(calls.calls) == 52 and all(len(v) == 1 for v in by_tag.values())
        assert [by_tag[i][0] for i in range(50)] == [(i, None) for i in range(50)]
        assert by_tag["gate"] == [("slow", None)]
        [(output, error)] = by_tag["raise"]
        assert output is None and isinstance(error, HandlerError)
        assert "handler bug" in str(error.__cause__ or error)

    run(main())


def test_callback_runs_inside_the_turn_that_finished_the_input() -> None:
    async def main() -> None:
        calls = Calls()
        async with Runtime(Echo()) as rt:
            rt.submit_callback(("fast", 1), calls.callback("a"))
            turns = rt.turns
            await asyncio.sleep(0)  # one loop pass: the turn runs and calls back
            assert calls.calls == [("a", 1, None)] and rt.turns == turns + 1

    run(main())


def test_overloaded_and_stopped_raise_without_calling_back() -> None:
    async def main() -> None:
        calls = Calls()
        rt = Runtime(Echo(), max_queue=1)
        with pytest.raises(Stopped, match="not running"):
            rt.submit_callback(("fast", 0), calls.callback(0))
        await rt.start()
        rt.submit_callback(("fast", 1), calls.callback(1))
        with pytest.raises(Overloaded, match="queue full"):
            rt.submit_callback(("fast", 2), calls.callback(2))
        await calls.wait_for(1)
        await rt.stop()
        assert calls.calls == [(1, 1, None)]

    run(main())


def test_stop_fails_suspended_and_queued_callbacks_with_stopped() -> None:
    async def main() -> None:
        calls = Calls()
        rt = Runtime(Echo(), max_inflight=1)
        await rt.start()
        rt.submit_callback(("sleep", 3600), calls.callback("suspended"))
        for i in range(3):
            rt.submit_callback(("fast", i), calls.callback(i))  # wait in the inbox
        for _ in range(5):
            await asyncio.sleep(0)
        assert rt.stats()["suspended"] == 1 and rt.stats()["queue_depth"] == 3
        await rt.stop(timeout=0.01)
        by_tag = calls.by_tag()
        assert sorted(by_tag, key=str) == [0, 1, 2, "suspended"]
        for results in by_tag.values():
            [(output, error)] = results
            assert output is None and isinstance(error, Stopped)

    run(main())


def test_a_raising_callback_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(output: Any, error: BaseException | None) -> None:
        raise RuntimeError("front-end bug")

    async def main() -> None:
        calls = Calls()
        async with Runtime(Echo()) as rt:
            rt.submit_callback(("fast", 1), broken)
            rt.submit_callback(("fast", 2), calls.callback("after"))
            await calls.wait_for(1)
            assert await asyncio.wait_for(rt.submit(("fast", 3)), BOUND) == 3
        assert calls.calls == [("after", 2, None)]

    with caplog.at_level(logging.ERROR, logger="corosm.runtime"):
        run(main())
    assert any("reply callback" in r.getMessage() for r in caplog.records)


def test_futures_and_callbacks_mix_in_one_runtime() -> None:
    async def main() -> None:
        calls = Calls()
        async with Runtime(Echo()) as rt:
            futures = []
            for i in range(20):
                if i % 2:
                    rt.submit_callback(("fast", i), calls.callback(i))
                else:
                    futures.append(rt.submit_nowait(("fast", i)))
            assert await asyncio.wait_for(asyncio.gather(*futures), BOUND) == list(range(0, 20, 2))
            await calls.wait_for(10)
        assert sorted(out for _, out, _ in calls.calls) == list(range(1, 20, 2))

    run(main())


def test_now_steps_the_input_before_returning_when_between_turns() -> None:
    async def main() -> None:
        calls = Calls()
        gate = Gate()
        async with Runtime(Echo(), max_inflight=2) as rt:
            turns = rt.turns
            rt.submit_callback(("fast", 1), calls.callback("now"), now=True)
            assert calls.calls == [("now", 1, None)] and rt.turns == turns  # no turn needed
            rt.submit_callback(("raise",), calls.callback("raise"), now=True)
            assert isinstance(calls.calls[-1][2], HandlerError)
            # A suspending input stepped now is finished by a later turn, as usual.
            rt.submit_callback(("gate", gate, "g"), calls.callback("gate"), now=True)
            await gate.wait_entered(1)
            rt.submit_callback(("gate", gate, "h"), calls.callback("gate2"), now=True)
            await gate.wait_entered(2)
            # No room under max_inflight: it queues instead, and runs once there is room.
            rt.submit_callback(("fast", 3), calls.callback("queued"), now=True)
            assert rt.stats()["queue_depth"] == 1 and len(calls.calls) == 2
            gate.open()
            await calls.wait_for(5)
        tags = [tag for tag, _, _ in calls.calls]
        assert tags[:2] == ["now", "raise"] and sorted(tags[2:]) == ["gate", "gate2", "queued"]

    run(main())


def test_now_from_inside_a_turn_queues_instead_of_nesting() -> None:
    async def main() -> None:
        calls = Calls()
        async with Runtime(Echo()) as rt:

            def chain(output: Any, error: BaseException | None) -> None:
                calls.callback("first")(output, error)
                # Called inside a turn: must not step the stepper re-entrantly.
                rt.submit_callback(("fast", 2), calls.callback("second"), now=True)
                assert len(calls.calls) == 1

            rt.submit_callback(("fast", 1), chain)
            await calls.wait_for(2)
        assert calls.calls == [("first", 1, None), ("second", 2, None)]

    run(main())


def test_reader_answers_in_the_call_and_refuses_once_stopped() -> None:
    """``Runtime.reader``: a READ answered by Machine.read, even inside a reply callback."""
    from corosm.apps.kv.inputs import Read, Write
    from corosm.apps.kv.machine import KVMachine
    from corosm.apps.kv.outputs import Value
    from corosm.core import Policy

    async def main() -> None:
        rt: Runtime[Any, Any, Any] = Runtime(KVMachine())
        read = rt.reader
        assert read is not None
        with pytest.raises(Stopped):  # not started yet
            read(Read(b"x"))
        await rt.start()
        assert read(Read(b"x")) == Value(None)
        seen: list[Any] = []
        # Inside a reply callback (inside the turn): the write's own value is there.
        rt.submit_callback(Write(b"x", b"1"), lambda out, err: seen.append(read(Read(b"x"))))
        async with asyncio.timeout(BOUND):
            while not seen:
                await asyncio.sleep(0)
        assert seen == [Value(b"1")]
        with pytest.raises(UsageError, match="does not take"):  # a corosm error: as itself
            read(Write(b"x", b"2"))
        await rt.stop()
        with pytest.raises(Stopped):
            read(Read(b"x"))

    class Exclusive(KVMachine):
        policy = Policy.EXCLUSIVE  # a key may be busy: reads must be stepped

    run(main())
    assert Runtime(Exclusive()).reader is None
