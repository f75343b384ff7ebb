"""``Machine.log``: an input that only appends one record runs with no handler.

The stepper is driven by hand, as in ``test_core_stepper``: the same events
must give what the equivalent handler (``await ctx.append(log(input)); return
logged(state, input)``) would give, failures included. The key-value
machine's two paths are compared over random inputs.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from corosm.apps.kv.inputs import (
    AppendBytes,
    Delete,
    IncrBy,
    Input,
    Read,
    Reset,
    SetIf,
    Write,
    WriteMany,
)
from corosm.apps.kv.machine import KVMachine
from corosm.core import (
    Append,
    Context,
    InputArrived,
    IOCompleted,
    Machine,
    Policy,
    Reply,
    ReplyError,
    StartIO,
    Stepper,
)
from corosm.errors import ApplyFailed, HandlerError, JournalClosed, JournalError, Stopped


class Counter(Machine[int, Any, Any]):
    """Adds numbers through ``log``; "ask" is a handler input; "bad" fails in ``log``."""

    def __init__(self) -> None:
        self.handled: list[Any] = []

    def initial_state(self) -> int:
        return 0

    def log(self, input: Any) -> Any:
        if input == "bad":
            raise ValueError("no record for that")
        return ("add", input) if isinstance(input, int) else None

    def logged(self, state: int, input: Any) -> Any:
        return ("total", state)

    async def handle(self, ctx: Context[int], input: Any) -> Any:
        self.handled.append(input)
        return ("asked", ctx.state)

    def apply(self, state: int, record: Any) -> int:
        if record == ("add", 13):
            raise RuntimeError("unlucky")
        return state + record[1]


def test_a_logged_input_appends_without_a_handler_and_answers_once_applied() -> None:
    machine = Counter()
    stepper = Stepper(machine)
    assert stepper.feed(InputArrived("c1", 5)) == [StartIO(1, Append(("add", 5)))]
    assert stepper.feed(InputArrived("c2", 7)) == [StartIO(2, Append(("add", 7)))]
    assert stepper.suspended == 2 and stepper.state == 0
    # Each answers with the state right after its own record: 5, then 12.
    assert stepper.feed(IOCompleted(1, 1)) == [Reply("c1", ("total", 5))]
    assert stepper.feed(IOCompleted(2, 2)) == [Reply("c2", ("total", 12))]
    assert (stepper.suspended, stepper.inputs_done, stepper.appends_applied) == (0, 2, 2)
    # log() saying None runs the handler.
    assert stepper.feed(InputArrived("c3", "ask")) == [Reply("c3", ("asked", 12))]
    assert machine.handled == ["ask"]


def test_failures_reach_the_logged_input_as_a_handler_would_see_them() -> None:
    stepper = Stepper(Counter())
    # log() raising fails that input alone, naming where.
    [error] = stepper.feed(InputArrived("c1", "bad"))
    assert isinstance(error, ReplyError) and isinstance(error.error, HandlerError)
    assert "Counter.log() raised ValueError" in str(error.error)
    # A failed append: the journal's error, nothing applied.
    stepper.feed(InputArrived("c2", 1))
    failure = JournalError("disk full")
    assert stepper.feed(IOCompleted(1, None, failure)) == [ReplyError("c2", failure)]
    assert stepper.state == 0
    # apply() raising: ApplyFailed, and the appends behind it are refused.
    stepper.feed(InputArrived("c3", 13), InputArrived("c4", 1))
    [failed] = stepper.feed(IOCompleted(2, 2))
    assert isinstance(failed, ReplyError) and isinstance(failed.error, ApplyFailed)
    [refused] = stepper.feed(IOCompleted(3, 3))
    assert isinstance(refused, ReplyError) and isinstance(refused.error, JournalClosed)
    assert stepper.inputs_failed == 4 and stepper.idle()


def test_close_fails_logged_inputs_still_waiting() -> None:
    stepper = Stepper(Counter())
    stepper.feed(InputArrived("c1", 1))
    stepper.close(Stopped("stopping"))
    [action] = stepper.take_actions()
    assert isinstance(action, ReplyError) and action.client == "c1"
    assert isinstance(action.error, Stopped)
    assert stepper.idle()


class CounterWithAppender(Counter):
    """Counter whose "ask" input appends through its handler, as ``ctx.append`` does."""

    async def handle(self, ctx: Context[int], input: Any) -> Any:
        await ctx.append(("add", 100))
        return ("asked", ctx.state)


def test_logged_inputs_and_handler_appends_share_request_numbers_and_log_order() -> None:
    # A logged input is a pending request of its own (no future): it counts in
    # pending_requests, and its completion interleaves with a handler's append.
    stepper = Stepper(CounterWithAppender())
    actions = stepper.feed(InputArrived("c1", 1), InputArrived("c2", "ask"), InputArrived("c3", 2))
    assert actions == [
        StartIO(1, Append(("add", 1))),
        StartIO(2, Append(("add", 100))),
        StartIO(3, Append(("add", 2))),
    ]
    assert stepper.pending_requests == 3 and stepper.suspended == 3
    assert stepper.feed(IOCompleted(1, 1), IOCompleted(2, 2), IOCompleted(3, 3)) == [
        Reply("c1", ("total", 1)),
        Reply("c2", ("asked", 101)),
        Reply("c3", ("total", 103)),
    ]
    assert stepper.last_append_value == 3 and stepper.idle()
    # A late or repeated completion of a logged input is ignored, as any other.
    assert stepper.feed(IOCompleted(3, 3)) == []


def test_only_interleave_takes_the_log_path() -> None:
    class Keyed(Counter):
        policy = Policy.PER_KEY

        def key(self, input: Any) -> Any:
            return "k"

    machine = Keyed()
    stepper = Stepper(machine)
    assert stepper.feed(InputArrived("c1", 5)) == [Reply("c1", ("asked", 0))]
    assert machine.handled == [5]  # the handler ran: its keys are held around it


# -- the key-value machine: the log path answers as its handler does ----------------------

KEYS = st.sampled_from([b"a", b"b"])
VALUES = st.sampled_from([b"1", b"-3", b"x", b"9223372036854775807"])
INPUTS = st.one_of(
    st.builds(Write, KEYS, VALUES),
    st.builds(Read, KEYS),
    st.builds(Delete, KEYS),
    st.builds(IncrBy, KEYS, st.sampled_from([1, -2, 2**62])),
    st.builds(AppendBytes, KEYS, VALUES),
    st.builds(SetIf, KEYS, VALUES, st.booleans(), st.just(False), st.booleans()),
    st.builds(WriteMany, st.lists(st.tuples(KEYS, VALUES), max_size=2).map(tuple)),
    st.just(Reset()),
)


class HandlersOnly(KVMachine):
    """The key-value machine with the log path turned off: every input runs ``handle``."""

    def supports_log(self) -> bool:
        return False


def _run(machine: KVMachine, inputs: list[Input], batch: int) -> tuple[list[Any], dict[Any, Any]]:
    """Feed ``inputs`` ``batch`` at a time, completing appends in log order; the replies."""
    stepper = Stepper(machine)
    replies: list[Any] = []
    lsn = 0
    pending: list[int] = []
    for start in range(0, len(inputs), batch):
        for number, input in enumerate(inputs[start : start + batch], start):
            stepper.input(number, input)
        for action in stepper.take_actions():
            if isinstance(action, StartIO):
                pending.append(action.request)
            else:
                replies.append(action)
        for request in pending:
            lsn += 1
            stepper.complete(request, lsn)
        pending.clear()
        replies.extend(stepper.take_actions())
    return sorted(replies, key=lambda action: action.client), dict(stepper.state.data)


@settings(max_examples=150, deadline=None)
@given(st.lists(INPUTS, max_size=12), st.integers(min_value=1, max_value=4))
def test_kv_log_path_answers_exactly_as_the_handlers(inputs: list[Input], batch: int) -> None:
    assert KVMachine().supports_log()
    assert _run(KVMachine(), inputs, batch) == _run(HandlersOnly(), inputs, batch)
