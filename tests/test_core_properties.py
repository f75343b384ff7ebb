"""Property tests: random inputs and random completion orders, checked against a model.

The test plays host for a :class:`Stepper` running a read-modify-write counter
over a few keys. At each step it either feeds the next input or completes one
pending request drawn at random, except that journal appends complete in the
order they were requested, as the real journal promises. Then:

(a) every input gets exactly one reply (never two, none lost), under every policy;
(b) under ``per_key`` and ``exclusive`` the outputs and the final state equal a
    sequential run in arrival order (what those policies promise);
(c) replaying the applied records through ``apply`` rebuilds the final state.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from corosm.core import (
    Append,
    Call,
    CancelIO,
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

KEYS = ("a", "b", "c")


def lookup(ok: bool) -> str:
    """The 'blocking call' every handler makes; the host runs it to get the result."""
    if not ok:
        raise OSError("lookup failed")
    return "ok"


class Counter(Machine[dict[str, int], tuple[str, str, bool], int]):
    """incr: read, call, append old+1. get: call, then read. peek: read, no I/O at all.

    ``ok=False`` makes the call fail.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def initial_state(self) -> dict[str, int]:
        return {}

    def key(self, input: tuple[str, str, bool]) -> str:
        return input[1]

    async def handle(self, ctx: Context[dict[str, int]], input: tuple[str, str, bool]) -> int:
        op, key, ok = input
        if op == "incr":
            old = ctx.state.get(key, 0)
            await ctx.call(lookup, ok)
            await ctx.append((key, old + 1))
            return old + 1
        if op == "peek":
            return ctx.state.get(key, 0)
        await ctx.call(lookup, ok)
        return ctx.state.get(key, 0)

    def apply(self, state: dict[str, int], record: Any) -> dict[str, int]:
        key, value = record
        return {**state, key: value}


def sequential_reference(inputs: list[tuple[str, str, bool]]) -> tuple[list[Any], dict[str, int]]:
    """What a one-at-a-time machine answers, in arrival order ("error" for a failed call)."""
    state: dict[str, int] = {}
    outputs: list[Any] = []
    for op, key, ok in inputs:
        if not ok:
            outputs.append("error")
        elif op == "incr":
            state[key] = state.get(key, 0) + 1
            outputs.append(state[key])
        else:
            outputs.append(state.get(key, 0))
    return outputs, state


inputs_strategy = st.lists(
    st.tuples(st.sampled_from(["incr", "get", "peek"]), st.sampled_from(KEYS), st.booleans()).map(
        lambda t: (t[0], t[1], t[2] or t[0] != "incr")  # mostly successful calls
    ),
    min_size=1,
    max_size=25,
)


def play(
    machine: Counter, inputs: list[tuple[str, str, bool]], data: st.DataObject
) -> tuple[dict[int, list[Any]], Stepper[Any, Any, Any], list[Any]]:
    """Host the stepper; return replies per client, the stepper, and the applied records."""
    stepper = Stepper(machine)
    to_feed = deque(enumerate(inputs))
    calls: dict[int, Call[Any]] = {}
    appends: deque[tuple[int, Append]] = deque()  # the journal: completes in request order
    replies: dict[int, list[Any]] = {client: [] for client in range(len(inputs))}
    applied: list[Any] = []
    lsn = 0
    while to_feed or calls or appends:
        options: list[Any] = sorted(calls)
        if appends:
            options.append("append")
        if to_feed:
            options.append("input")
        choice = data.draw(st.sampled_from(options))
        if choice == "input":
            client, inp = to_feed.popleft()
            actions = stepper.feed(InputArrived(client, inp))
        elif choice == "append":
            request, effect = appends.popleft()
            lsn += 1
            applied.append(effect.record)
            actions = stepper.feed(IOCompleted(request, lsn))
        else:
            call = calls.pop(choice)
            try:
                event = IOCompleted(choice, call.fn(*call.args))
            except OSError as exc:
                event = IOCompleted(choice, error=exc)
            actions = stepper.feed(event)
        for action in actions:
            match action:
                case StartIO(request, Append() as effect):
                    appends.append((request, effect))
                case StartIO(request, Call() as effect):
                    calls[request] = effect
                case CancelIO(request):
                    calls.pop(request, None)
                case Reply(client, output):
                    replies[client].append(output)
                case ReplyError(client, _):
                    replies[client].append("error")
                case _:
                    raise AssertionError(f"unexpected action {action!r}")
    return replies, stepper, applied


def check_common(
    machine: Counter, replies: dict[int, list[Any]], stepper: Stepper[Any, Any, Any], applied: Any
) -> None:
    # (a) exactly one reply per input.
    assert all(len(r) == 1 for r in replies.values()), replies
    assert stepper.idle()
    # (c) replaying the log rebuilds the live state.
    state = machine.initial_state()
    for record in applied:
        state = machine.apply(state, record)
    assert state == stepper.state


@settings(max_examples=150, deadline=None)
@given(inputs=inputs_strategy, data=st.data())
def test_interleave_replies_once_and_log_rebuilds_state(
    inputs: list[tuple[str, str, bool]], data: st.DataObject
) -> None:
    machine = Counter(Policy.INTERLEAVE)
    replies, stepper, applied = play(machine, inputs, data)
    check_common(machine, replies, stepper, applied)


@settings(max_examples=150, deadline=None)
@given(inputs=inputs_strategy, data=st.data(), policy=st.sampled_from(["per_key", "exclusive"]))
def test_serialising_policies_match_the_sequential_reference(
    inputs: list[tuple[str, str, bool]], data: st.DataObject, policy: str
) -> None:
    machine = Counter(Policy(policy))
    replies, stepper, applied = play(machine, inputs, data)
    check_common(machine, replies, stepper, applied)
    # (b) per key (and a fortiori one at a time) the machine is the sequential one.
    outputs, state = sequential_reference(inputs)
    assert [replies[client][0] for client in range(len(inputs))] == outputs
    assert stepper.state == state


def test_interleave_differs_from_reference_for_some_schedule() -> None:
    """Sanity check of the harness: without a policy, the lost update does show up."""
    machine = Counter(Policy.INTERLEAVE)
    stepper = Stepper(machine)
    stepper.feed(InputArrived(0, ("incr", "a", True)), InputArrived(1, ("incr", "a", True)))
    stepper.feed(IOCompleted(1, "ok"), IOCompleted(2, "ok"), IOCompleted(3, 1), IOCompleted(4, 2))
    assert stepper.state != sequential_reference([("incr", "a", True)] * 2)[1]
