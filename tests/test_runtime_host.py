"""The asyncio runtime with real threads and a real loop.

No test sleeps to wait: blocking calls wait on a :class:`Gate` the test
controls, the gate tells the loop when callers arrive, and every await on the
loop is bounded by ``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from corosm.core import Call, Context, Effect, Machine, Policy
from corosm.errors import (
    EffectError,
    EffectTimeout,
    ForeignAwaitError,
    HandlerError,
    Overloaded,
    Stopped,
    UsageError,
)
from corosm.io.executor import CompletionSink, Executor
from corosm.io.threads import ThreadPoolCallExecutor
from corosm.runtime import Runtime, run

BOUND = 10.0  # seconds: the longest any single wait in these tests may take


class Gate:
    """A blocking call the test controls. Counts callers; lets them all go on ``open()``."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._open = threading.Event()
        self._lock = threading.Lock()
        self._changed = asyncio.Event()
        self.entered = 0
        self.active = 0
        self.max_active = 0

    def __call__(self, value: Any = None) -> Any:
        with self._lock:
            self.entered += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        self._loop.call_soon_threadsafe(self._changed.set)
        opened = self._open.wait(BOUND)
        with self._lock:
            self.active -= 1
        if not opened:
            raise TimeoutError("the test never opened the gate")
        return value

    def open(self) -> None:
        self._open.set()

    async def wait_entered(self, count: int) -> None:
        """Return once ``count`` callers are inside the gate (bounded)."""
        async with asyncio.timeout(BOUND):
            while self.entered < count:
                await self._changed.wait()
                self._changed.clear()


class Echo(Machine[dict[str, int], Any, Any]):
    """("gate", gate, v): a blocking call; ("fast", v): no effect; ("raise",); ("foreign",)."""

    def initial_state(self) -> dict[str, int]:
        return {}

    async def handle(self, ctx: Context[dict[str, int]], input: Any) -> Any:
        match input:
            case ("gate", gate, value):
                return await ctx.call(gate, value)
            case ("fast", value):
                return value
            case ("raise",):
                raise RuntimeError("handler bug")
            case ("foreign",):
                await asyncio.sleep(0)
            case ("timeout", effect, seconds):
                return await ctx.timeout(ctx.start(effect), seconds)
            case ("perform", effect):
                return await ctx.perform(effect)
            case ("sleep", seconds):
                await ctx.sleep(seconds)
                return "slept"
        raise ValueError(f"unknown input {input!r}")


async def results(futures: Sequence[asyncio.Future[Any]]) -> list[Any]:
    return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), BOUND)


# -- concurrency --


def test_many_handlers_suspended_on_blocking_calls_while_others_answered() -> None:
    async def main() -> None:
        gate = Gate()
        async with Runtime(Echo(), call_threads=50) as rt:
            slow = [rt.submit_nowait(("gate", gate, i)) for i in range(50)]
            await gate.wait_entered(50)
            stats = rt.stats()
            assert stats["suspended"] == 50 and stats["pending_requests"] == 50
            # Other inputs are answered while the 50 are suspended.
            fast = await results([rt.submit_nowait(("fast", i)) for i in range(20)])
            assert fast == list(range(20))
            assert not any(f.done() for f in slow)
            assert rt.stats()["inputs_processed"] == 20
            gate.open()
            assert await results(slow) == list(range(50))
            stats = rt.stats()
            assert stats["inputs_processed"] == 70 and stats["inputs_received"] == 70
            assert stats["suspended"] == 0 and stats["completions"] == 50
            assert stats["queue_depth"] == 0 and stats["pending_requests"] == 0

    run(main())


def test_max_inflight_is_respected() -> None:
    async def main() -> None:
        gate = Gate()
        async with Runtime(Echo(), max_inflight=3, call_threads=8) as rt:
            futures = [rt.submit_nowait(("gate", gate, i)) for i in range(10)]
            await gate.wait_entered(3)
            stats = rt.stats()
            assert stats["suspended"] == 3 and stats["queue_depth"] == 7
            gate.open()
            assert await results(futures) == list(range(10))
            assert gate.max_active <= 3 and gate.entered == 10

    run(main())


# -- backpressure and lifecycle --


def test_full_inbox_raises_overloaded_and_submit_waits_for_space() -> None:
    async def main() -> None:
        gate = Gate()
        async with Runtime(Echo(), max_queue=1, max_inflight=1) as rt:
            first = rt.submit_nowait(("gate", gate, "first"))
            await gate.wait_entered(1)  # first is admitted and holds the only slot
            second = rt.submit_nowait(("gate", gate, "second"))
            assert rt.stats()["queue_depth"] == 1
            with pytest.raises(Overloaded, match="queue full"):
                rt.submit_nowait(("fast", "third"))
            third = asyncio.ensure_future(rt.submit(("fast", "third")))
            for _ in range(5):  # let the task run up to its wait for space
                await asyncio.sleep(0)
            assert not third.done()
            gate.open()
            assert await results([first, second, third]) == ["first", "second", "third"]

    run(main())


def test_stop_finishes_inflight_work_then_refuses_input() -> None:
    async def main() -> None:
        gate = Gate()
        rt = Runtime(Echo())
        await rt.start()
        futures = [rt.submit_nowait(("gate", gate, i)) for i in range(5)]
        await gate.wait_entered(5)
        stopping = asyncio.ensure_future(rt.stop())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not stopping.done()  # it waits for the suspended handlers
        with pytest.raises(Stopped):
            rt.submit_nowait(("fast", 1))
        gate.open()
        await asyncio.wait_for(stopping, BOUND)
        assert [f.result() for f in futures] == list(range(5))
        with pytest.raises(Stopped, match="not running"):
            rt.submit_nowait(("fast", 1))

    run(main())


def test_submit_before_start_raises_stopped() -> None:
    async def main() -> None:
        rt = Runtime(Echo())
        with pytest.raises(Stopped):
            rt.submit_nowait(("fast", 1))
        with pytest.raises(UsageError, match="at least 1"):
            Runtime(Echo(), max_queue=0)

    run(main())


def test_no_thread_or_task_leaks_after_stop() -> None:
    threads_before = set(threading.enumerate())

    async def main() -> None:
        tasks_before = asyncio.all_tasks()
        gate = Gate()
        batch = BatchEchoExecutor()
        async with Runtime(Echo(), executors={Shout: batch}) as rt:
            futures = [rt.submit_nowait(("gate", gate, i)) for i in range(8)]
            futures.append(rt.submit_nowait(("sleep", 0.001)))
            futures.append(rt.submit_nowait(("perform", Shout("x"))))
            await gate.wait_entered(8)
            gate.open()
            assert await results(futures) == [*range(8), "slept", "X"]
            assert any(t.name.startswith("corosm-call") for t in threading.enumerate())
        assert asyncio.all_tasks() == tasks_before
        assert not [t for t in threading.enumerate() if t.name.startswith("corosm")]

    run(main())
    assert set(threading.enumerate()) == threads_before


# -- completions cross threads once per batch --


class CountingCalls(ThreadPoolCallExecutor):
    """The thread pool, with a sink that counts posts and lets the test wait for them."""

    def __init__(self, max_workers: int) -> None:
        super().__init__(max_workers)
        self.posted = 0
        self.cond = threading.Condition()

    def start(self, sink: CompletionSink) -> None:
        def counting(batch: Sequence[Any]) -> None:
            sink(batch)
            with self.cond:
                self.posted += len(batch)
                self.cond.notify_all()

        super().start(counting)


def test_a_burst_of_finished_calls_is_delivered_in_one_turn() -> None:
    count = 40

    async def main() -> None:
        gate = Gate()
        calls = CountingCalls(count)
        runtime = Runtime(Echo(), executors={Call: calls}, turn_completions=count)
        async with runtime as rt:
            futures = [rt.submit_nowait(("gate", gate, i)) for i in range(count)]
            await gate.wait_entered(count)
            turns, delivered = rt.stats()["turns"], rt.stats()["completions"]
            gate.open()
            # Hold the loop thread while every worker posts its completion.
            with calls.cond:
                assert calls.cond.wait_for(lambda: calls.posted == count, BOUND)
            assert await results(futures) == list(range(count))
            stats = rt.stats()
            assert stats["completions"] - delivered == count
            assert stats["turns"] - turns == 1  # one wake-up for the whole burst

    run(main())


def test_a_big_burst_is_delivered_in_slices_of_turn_completions() -> None:
    count = 40

    async def main() -> None:
        gate = Gate()
        calls = CountingCalls(count)
        seen: list[tuple[int, int]] = []  # (output, the turn that delivered it)
        async with Runtime(Echo(), executors={Call: calls}, turn_completions=16) as rt:

            def record(output: Any, error: BaseException | None) -> None:
                seen.append((output, rt.turns))

            for i in range(count):
                rt.submit_callback(("gate", gate, i), record)
            await gate.wait_entered(count)
            turns = rt.turns
            gate.open()
            with calls.cond:
                assert calls.cond.wait_for(lambda: calls.posted == count, BOUND)
            async with asyncio.timeout(BOUND):
                while len(seen) < count:
                    await asyncio.sleep(0)
        assert sorted(out for out, _ in seen) == list(range(count))
        per_turn = [sum(1 for _, t in seen if t == turns + k) for k in (1, 2, 3)]
        assert per_turn == [16, 16, 8]  # one loop pass per slice, none bigger than 16

    run(main())


# -- custom effects and executors --


@dataclass(frozen=True, slots=True)
class Shout(Effect[str]):
    """A user-defined effect: upper-case ``text`` on the executor's thread."""

    text: str


class BatchEchoExecutor:
    """A custom executor with its own thread, posting each submitted batch in one call."""

    def __init__(self) -> None:
        self._work: queue.Queue[Sequence[tuple[int, Effect[Any]]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.batches: list[int] = []

    def start(self, sink: CompletionSink) -> None:
        self._thread = threading.Thread(target=self._run, args=(sink,), name="corosm-test-shout")
        self._thread.start()

    def _run(self, sink: CompletionSink) -> None:
        while (batch := self._work.get()) is not None:
            self.batches.append(len(batch))
            sink([(request, effect.text.upper(), None) for request, effect in batch])  # type: ignore[attr-defined]

    def submit(self, requests: Sequence[tuple[int, Effect[Any]]]) -> None:
        self._work.put(list(requests))

    def cancel(self, request: int) -> None:
        pass

    def close(self) -> None:
        self._work.put(None)
        if self._thread is not None:
            self._thread.join(BOUND)


def test_custom_effect_with_custom_executor() -> None:
    async def main() -> None:
        executor = BatchEchoExecutor()
        _: Executor = executor  # it satisfies the protocol
        async with Runtime(Echo(), executors={Shout: executor}) as rt:
            futures = [rt.submit_nowait(("perform", Shout(w))) for w in ("ab", "cd", "ef")]
            assert await results(futures) == ["AB", "CD", "EF"]
        # The three inputs were admitted in one turn, so their effects reached it as one batch.
        assert executor.batches == [3]

    run(main())


@dataclass(frozen=True, slots=True)
class Whisper(Shout):
    """A subclass of an effect that has an executor: routed to it (the nearest base's)."""


def test_an_effect_subclass_goes_to_its_base_classs_executor() -> None:
    async def main() -> None:
        executor = BatchEchoExecutor()
        async with Runtime(Echo(), executors={Shout: executor}) as rt:
            futures = [rt.submit_nowait(("perform", Whisper(w))) for w in ("ab", "cd")]
            assert await results(futures) == ["AB", "CD"]
            # Again, once the subclass is known: the same executor.
            assert await asyncio.wait_for(rt.submit(("perform", Whisper("ef"))), BOUND) == "EF"
        assert executor.batches == [2, 1]

    run(main())


@dataclass(frozen=True, slots=True)
class Unknown(Effect[int]):
    """An effect no executor is registered for."""


def test_unknown_effect_type_gives_the_handler_a_clear_error() -> None:
    async def main() -> None:
        async with Runtime(Echo()) as rt:
            with pytest.raises(UsageError, match="no executor is registered for Unknown"):
                await asyncio.wait_for(rt.submit(("perform", Unknown())), BOUND)
            assert await asyncio.wait_for(rt.submit(("fast", 1)), BOUND) == 1

    run(main())


# -- errors and timeouts --


def test_handler_errors_fail_only_their_input() -> None:
    async def main() -> None:
        async with Runtime(Echo()) as rt:
            out = await results(
                [
                    rt.submit_nowait(("raise",)),
                    rt.submit_nowait(("foreign",)),
                    rt.submit_nowait(("fast", "ok")),
                    rt.submit_nowait(("perform", Call(int, ("not a number",)))),
                ]
            )
            assert isinstance(out[0], HandlerError) and "handler bug" in str(out[0])
            assert isinstance(out[1], ForeignAwaitError)
            assert out[2] == "ok"
            assert isinstance(out[3], EffectError) and isinstance(out[3].__cause__, ValueError)
            assert rt.stats()["inputs_failed"] == 3

    run(main())


def test_timeout_with_a_real_sleep() -> None:
    async def main() -> None:
        gate = Gate()
        async with Runtime(Echo()) as rt:
            with pytest.raises(EffectTimeout, match=r"within 0\.05 s"):
                await asyncio.wait_for(rt.submit(("timeout", Call(gate, ("x",)), 0.05)), BOUND)
            gate.open()  # the cancelled call finishes late; its completion is ignored
            value = await asyncio.wait_for(rt.submit(("timeout", Call(str, (7,)), 60)), BOUND)
            assert value == "7"
            assert rt.stats()["pending_requests"] == 0  # the 60 s timer was cancelled

    run(main())


def test_per_key_counter_through_the_runtime() -> None:
    class Incr(Machine[dict[str, int], str, int]):
        policy = Policy.PER_KEY

        def initial_state(self) -> dict[str, int]:
            return {}

        def key(self, input: str) -> str:
            return input

        async def handle(self, ctx: Context[dict[str, int]], input: str) -> int:
            old = ctx.state.get(input, 0)
            await ctx.append((input, old + 1))
            return old + 1

        def apply(self, state: dict[str, int], record: Any) -> dict[str, int]:
            return {**state, record[0]: record[1]}

    async def main() -> None:
        async with Runtime(Incr()) as rt:
            out = await results([rt.submit_nowait(k) for k in "xyxxyx"])
            assert out == [1, 1, 2, 3, 2, 4]
            assert rt.stepper.state == {"x": 4, "y": 2}
            assert rt.stats()["appends_applied"] == 6

    run(main())


# -- bugs found in review, fixed --


def test_one_bad_effect_does_not_fail_others_in_its_batch() -> None:
    async def main() -> None:
        async with Runtime(Echo()) as rt:
            good = rt.submit_nowait(("sleep", 0.001))
            bad = rt.submit_nowait(("sleep", "x"))
            out = await results([good, bad])
            assert isinstance(out[1], UsageError) and "seconds" in str(out[1])
            assert out[0] == "slept"

    run(main())


def test_stop_timeout_fails_suspended_inputs_with_stopped() -> None:
    async def main() -> None:
        rt = Runtime(Echo())
        await rt.start()
        future = rt.submit_nowait(("sleep", 3600))
        for _ in range(5):
            await asyncio.sleep(0)
        assert rt.stats()["suspended"] == 1
        await rt.stop(timeout=0.01)
        with pytest.raises(Stopped):
            await asyncio.wait_for(future, 1.0)

    run(main())


def test_admission_takes_inputs_out_of_the_inbox_before_it_steps_them() -> None:
    """While a batch is stepped, the inbox (``queued``, ``offer``'s bound) holds only the rest.

    A batch is as many inputs as ``max_inflight`` leaves room for: two here.
    """
    from corosm.runtime.host import Host

    seen: list[int] = []
    replies: list[Any] = []

    class Peek(Machine[None, int, int]):
        def initial_state(self) -> None:
            return None

        async def handle(self, ctx: Context[None], input: int) -> int:
            seen.append(host.queued)  # runs inside the step, before any await
            return input

    host: Host[None, int, int] = Host(
        Peek(),
        executors={},
        reply=lambda client, out, err: replies.append((client, out, err)),
        max_inflight=2,
    )
    for i in range(3):
        host.offer(i, i * 10)
    host.turn()
    assert seen == [1, 1, 0]  # inputs 0 and 1 out first, then 2
    assert replies == [(0, 0, None), (1, 10, None), (2, 20, None)]
    assert host.queued == 0


def test_a_backlog_that_grows_between_turns_is_delivered_in_order_in_slices() -> None:
    """Completions beyond ``turn_completions`` wait in the backlog, which later batches join.

    Driven by hand (no threads): each turn delivers the next 16 in the order
    the executor posted them, including across the backlog's compactions.
    """
    from corosm.runtime.host import Host

    submitted: list[int] = []

    class Held:
        """An executor whose completions the test hands to ``turn`` itself."""

        def start(self, sink: CompletionSink) -> None:
            pass

        def submit(self, requests: Sequence[tuple[int, Effect[Any]]]) -> None:
            submitted.extend(request for request, _ in requests)

        def cancel(self, request: int) -> None:
            pass

        def close(self) -> None:
            pass

    replies: list[int] = []
    host: Host[dict[str, int], Any, Any] = Host(
        Echo(),
        executors={Shout: Held()},
        reply=lambda client, out, err: replies.append(out),
        max_inflight=1000,
        turn_completions=16,
    )
    for i in range(300):
        host.offer(i, ("perform", Shout(f"{i}")))
    host.turn()
    assert len(submitted) == 300 and not replies
    by_request = {request: f"{i}".upper() for i, request in enumerate(submitted)}
    batches = [submitted[:200], submitted[200:250], [], submitted[250:]]
    per_turn: list[int] = []
    for k in range(40):
        posted = batches[k] if k < len(batches) else []
        before = len(replies)
        more = host.turn([(request, by_request[request], None) for request in posted])
        per_turn.append(len(replies) - before)
        if not more and k >= len(batches):
            break
    assert replies == [f"{i}" for i in range(300)]  # in the order posted, each once
    assert per_turn[:-1] == [16] * (len(per_turn) - 1) and 0 < per_turn[-1] <= 16
    assert host.idle()
