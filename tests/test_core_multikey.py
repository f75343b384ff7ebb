"""Inputs with several keys under PER_KEY, driven by hand: the two-account transfer.

The machine is a bank. ``Transfer(source, target, amount)`` reads both
balances, asks a (blocking) fraud check, refuses an overdraft, then appends
one record that sets both new balances and adds a ledger line. Its key is
``Keys(source, target)``. Two smaller inputs share the accounts:
``Audit(account)`` (one key: check, then read the balance) and
``Sweep(sources, target)`` (moves everything from several accounts into one).

The invariant is the bank's: no balance below zero, and the total never
changes. It holds under PER_KEY with multi-keys for random transfers and
random completion orders, and breaks under INTERLEAVE, or with the key on the
debited account alone (the balances in a record are read before the append
suspends, so a record computed from a stale balance overwrites a newer one).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corosm.core import (
    Append,
    Call,
    CancelIO,
    Context,
    InputArrived,
    IOCompleted,
    Keys,
    Machine,
    Policy,
    Reply,
    ReplyError,
    StartIO,
    Stepper,
)
from corosm.errors import Stopped

ACCOUNTS = ("a", "b", "c", "d")
OPENING = {"a": 100, "b": 50, "c": 20, "d": 0}
TOTAL = sum(OPENING.values())


@dataclass(frozen=True)
class Transfer:
    source: str
    target: str
    amount: int
    ok: bool = True  # False: the fraud check fails (an I/O error)


@dataclass(frozen=True)
class Audit:
    account: str


@dataclass(frozen=True)
class Sweep:
    sources: tuple[str, ...]
    target: str


BankInput = Transfer | Audit | Sweep


@dataclass(frozen=True)
class Bank:
    """The state: balances, and the ledger of transfers in log order."""

    balances: dict[str, int]
    ledger: tuple[tuple[str, str, int], ...] = ()


def fraud_check(ok: bool) -> str:
    """The blocking call a transfer makes; the test host runs it."""
    if not ok:
        raise OSError("fraud service unavailable")
    return "clean"


class BankMachine(Machine[Bank, BankInput, str]):
    def __init__(self, policy: Policy = Policy.PER_KEY, key: str = "both") -> None:
        self.policy = policy
        self.key_choice = key  # "both" (right), or "source" (the debited account alone)

    def initial_state(self) -> Bank:
        return Bank(dict(OPENING))

    def key(self, input: BankInput) -> Keys | Hashable | None:
        match input:
            case Transfer(source, target):
                return source if self.key_choice == "source" else Keys(source, target)
            case Audit(account):
                return account
            case Sweep(sources, target):
                return Keys(*sources, target)

    async def handle(self, ctx: Context[Bank], input: BankInput) -> str:
        match input:
            case Transfer(source, target, amount, ok):
                if source == target:
                    return "refused: same account"
                have, has = ctx.state.balances[source], ctx.state.balances[target]
                await ctx.call(fraud_check, ok)  # suspends: other inputs run
                if have < amount:
                    return "refused: overdraft"
                new = ((source, have - amount), (target, has + amount))
                await ctx.append(("transfer", new, (source, target, amount)))
                return "done"
            case Audit(account):
                await ctx.call(fraud_check, True)
                return str(ctx.state.balances[account])
            case Sweep(sources, target):
                balances = ctx.state.balances
                emptied = dict.fromkeys(s for s in sources if s != target)
                moved = sum(balances[s] for s in emptied)
                new = (*((s, 0) for s in emptied), (target, balances[target] + moved))
                await ctx.append(("sweep", new, None))
                return f"swept {moved}"

    def apply(self, state: Bank, record: Any) -> Bank:
        _kind, new, line = record
        ledger = state.ledger if line is None else (*state.ledger, line)
        return Bank({**state.balances, **dict(new)}, ledger)


def sequential(inputs: Sequence[BankInput]) -> tuple[list[str], Bank]:
    """The bank one input at a time: outputs ("error" for a failed check) and final state."""
    machine = BankMachine(Policy.EXCLUSIVE)
    stepper = Stepper(machine)
    outputs = []
    for number, inp in enumerate(inputs):
        actions = stepper.feed(InputArrived(number, inp))
        while True:
            match actions:
                case [StartIO(request, Call(fn, args))]:
                    try:
                        actions = stepper.feed(IOCompleted(request, fn(*args)))
                    except OSError as exc:
                        actions = stepper.feed(IOCompleted(request, error=exc))
                case [StartIO(request, Append())]:
                    actions = stepper.feed(IOCompleted(request, request))
                case [Reply(_, output)]:
                    outputs.append(output)
                    break
                case [ReplyError()]:
                    outputs.append("error")
                    break
                case _:
                    raise AssertionError(f"unexpected {actions!r}")
    return outputs, stepper.state


def check_invariant(state: Bank) -> None:
    assert all(v >= 0 for v in state.balances.values()), state.balances
    assert sum(state.balances.values()) == TOTAL, state.balances


# -- by hand -------------------------------------------------------------------------------


def test_keys_is_one_value_with_set_equality() -> None:
    assert list(Keys("a", "b", "a", None)) == ["a", "b"]  # first occurrence wins; None dropped
    assert Keys("a", "b") == Keys("b", "a") and hash(Keys("a", "b")) == hash(Keys("b", "a"))
    assert list(Keys(Keys("a", "b"), "c")) == ["a", "b", "c"]  # flattened
    assert len(Keys()) == 0 and len(Keys(None)) == 0
    assert list(Keys(("a", "b"))) == [("a", "b")]  # a tuple is one key
    assert repr(Keys("a", 1)) == "Keys('a', 1)"
    assert Keys("a") != "a"
    with pytest.raises(TypeError, match="unhashable"):
        Keys(["a"])


def test_transfer_holds_both_accounts_until_it_replies() -> None:
    stepper = Stepper(BankMachine())
    assert stepper.feed(InputArrived(1, Transfer("a", "b", 30))) == [
        StartIO(1, Call(fraud_check, (True,)))
    ]
    # Both accounts are held: an audit of either waits, one of c does not.
    assert stepper.feed(
        InputArrived(2, Audit("a")), InputArrived(3, Audit("b")), InputArrived(4, Audit("c"))
    ) == [StartIO(2, Call(fraud_check, (True,)))]
    assert stepper.waiting_for_key == 2
    # Held across the append too, the second suspension.
    assert stepper.feed(IOCompleted(1, "clean")) == [
        StartIO(3, Append(("transfer", (("a", 70), ("b", 80)), ("a", "b", 30))))
    ]
    assert stepper.feed(IOCompleted(2, "clean")) == [Reply(4, "20")]
    assert stepper.waiting_for_key == 2
    # The transfer replies and frees a and b: both audits start, in arrival order.
    assert stepper.feed(IOCompleted(3, 1)) == [
        Reply(1, "done"),
        StartIO(4, Call(fraud_check, (True,))),
        StartIO(5, Call(fraud_check, (True,))),
    ]
    assert stepper.feed(IOCompleted(5), IOCompleted(4)) == [Reply(3, "80"), Reply(2, "70")]
    assert stepper.idle() and stepper.waiting_for_key == 0


def test_opposite_transfers_do_not_deadlock() -> None:
    stepper = Stepper(BankMachine())
    # a->b and b->a at once: whatever order each names its keys in, the later one waits.
    actions = stepper.feed(
        InputArrived(1, Transfer("a", "b", 10)), InputArrived(2, Transfer("b", "a", 5))
    )
    assert actions == [StartIO(1, Call(fraud_check, (True,)))]
    stepper.feed(IOCompleted(1))
    assert stepper.feed(IOCompleted(2, 1)) == [
        Reply(1, "done"),
        StartIO(3, Call(fraud_check, (True,))),
    ]
    stepper.feed(IOCompleted(3))
    assert stepper.feed(IOCompleted(4, 2)) == [Reply(2, "done")]
    assert stepper.state.balances == {**OPENING, "a": 95, "b": 55}
    assert stepper.idle()


def test_a_cycle_of_three_transfers_does_not_deadlock() -> None:
    stepper = Stepper(BankMachine())
    ring = [Transfer("a", "b", 1), Transfer("b", "c", 1), Transfer("c", "a", 1)]
    stepper.feed(*(InputArrived(n, t) for n, t in enumerate(ring)))
    assert stepper.suspended == 1 and stepper.waiting_for_key == 2
    replies: list[Any] = []
    request = 0
    while not stepper.idle():
        request += 1
        replies += [a for a in stepper.feed(IOCompleted(request, request)) if isinstance(a, Reply)]
    assert replies == [Reply(0, "done"), Reply(1, "done"), Reply(2, "done")]
    assert stepper.state.balances == OPENING


def test_disjoint_transfers_run_side_by_side() -> None:
    stepper = Stepper(BankMachine())
    actions = stepper.feed(
        InputArrived(1, Transfer("a", "b", 10)), InputArrived(2, Transfer("c", "d", 5))
    )
    assert actions == [
        StartIO(1, Call(fraud_check, (True,))),
        StartIO(2, Call(fraud_check, (True,))),
    ]
    assert stepper.suspended == 2 and stepper.waiting_for_key == 0
    # Either may go first: c->d appends (request 3) before a->b (request 4).
    stepper.feed(IOCompleted(2), IOCompleted(1))
    assert stepper.suspended == 2  # both at their append now
    assert stepper.feed(IOCompleted(3, 1)) == [Reply(2, "done")]
    assert stepper.feed(IOCompleted(4, 2)) == [Reply(1, "done")]
    assert stepper.state.ledger == (("c", "d", 5), ("a", "b", 10))  # log order


def test_a_waiting_transfer_is_not_overtaken_by_later_inputs_on_one_of_its_keys() -> None:
    stepper = Stepper(BankMachine())
    stepper.feed(InputArrived("hold-b", Transfer("b", "c", 1)))  # holds b and c
    stepper.feed(InputArrived("a->b", Transfer("a", "b", 1)))  # takes a, waits for b
    # A stream of audits of a, each of which could run at once on its own: they queue
    # behind the transfer instead of overtaking it for ever.
    assert stepper.feed(*(InputArrived(f"audit-{n}", Audit("a")) for n in range(3))) == []
    assert stepper.waiting_for_key == 4
    stepper.feed(IOCompleted(1))
    [done, start_transfer] = stepper.feed(IOCompleted(2, 1))
    assert done == Reply("hold-b", "done")
    assert start_transfer == StartIO(3, Call(fraud_check, (True,)))  # a->b, not an audit
    stepper.feed(IOCompleted(3))
    assert stepper.feed(IOCompleted(4, 2)) == [
        Reply("a->b", "done"),
        StartIO(5, Call(fraud_check, (True,))),  # then the audits, in arrival order
    ]
    assert stepper.feed(IOCompleted(5)) == [
        Reply("audit-0", "99"),
        StartIO(6, Call(fraud_check, (True,))),
    ]
    assert stepper.feed(IOCompleted(6)) == [
        Reply("audit-1", "99"),
        StartIO(7, Call(fraud_check, (True,))),
    ]
    assert stepper.feed(IOCompleted(7)) == [Reply("audit-2", "99")]


def test_keys_with_one_key_is_that_key(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        await ctx.call(str, inp)
        return inp

    def key(inp: Any) -> Any:
        return Keys("x") if inp == "wrapped" else "x" if inp == "bare" else Keys()

    stepper = Stepper(fn_machine(handler, policy=Policy.PER_KEY, key=key))
    assert stepper.feed(
        InputArrived(1, "wrapped"), InputArrived(2, "bare"), InputArrived(3, "none")
    ) == [
        StartIO(1, Call(str, ("wrapped",))),
        StartIO(2, Call(str, ("none",))),  # Keys() is no key at all
    ]
    assert stepper.feed(IOCompleted(1, "w")) == [
        Reply(1, "wrapped"),
        StartIO(3, Call(str, ("bare",))),
    ]


def test_a_tuple_is_one_key_not_several(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        await ctx.call(str, inp)
        return inp

    stepper = Stepper(fn_machine(handler, policy=Policy.PER_KEY, key=lambda inp: inp))
    actions = stepper.feed(InputArrived(1, ("a", "b")), InputArrived(2, "a"))
    assert len(actions) == 2  # ("a", "b") and "a" are different keys: no wait


def test_a_chain_of_inputs_that_finish_at_once_is_released_without_recursion(
    fn_machine: Any,
) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        if inp == "hold":
            await ctx.call(str)
        return inp

    # Input n needs keys n and n+1; input "hold" holds key 0. Each waiter holds the key
    # the next one needs, so freeing key 0 runs the whole chain in one step.
    n = 3000
    stepper = Stepper(
        fn_machine(
            handler, policy=Policy.PER_KEY, key=lambda i: 0 if i == "hold" else Keys(i, i + 1)
        )
    )
    stepper.feed(InputArrived("hold", "hold"), *(InputArrived(i, i) for i in range(n)))
    assert stepper.waiting_for_key == n
    actions = stepper.feed(IOCompleted(1))
    assert actions == [Reply("hold", "hold"), *(Reply(i, i) for i in range(n))]
    assert stepper.idle() and stepper.waiting_for_key == 0


def test_failing_transfer_frees_both_accounts() -> None:
    stepper = Stepper(BankMachine())
    stepper.feed(InputArrived(1, Transfer("a", "b", 10, ok=False)))
    stepper.feed(InputArrived(2, Audit("b")), InputArrived(3, Audit("a")))
    [failure, *starts] = stepper.feed(IOCompleted(1, error=OSError("fraud service unavailable")))
    assert isinstance(failure, ReplyError) and failure.client == 1
    assert len(starts) == 2 and stepper.waiting_for_key == 0


def test_key_returning_a_list_fails_that_input_only(fn_machine: Any) -> None:
    async def handler(ctx: Context[Any], inp: Any) -> Any:
        return inp

    stepper = Stepper(fn_machine(handler, policy=Policy.PER_KEY, key=list))
    [failure] = stepper.feed(InputArrived(1, "ab"))
    assert isinstance(failure, ReplyError) and "unhashable" in str(failure.error)
    assert stepper.idle()


def test_close_fails_a_waiter_of_several_keys_once() -> None:
    stepper = Stepper(BankMachine())
    stepper.feed(InputArrived(1, Transfer("a", "b", 1)), InputArrived(2, Transfer("c", "d", 1)))
    stepper.feed(InputArrived(3, Sweep(("a", "c"), "d")))  # waits on a, c and d
    stepper.close(Stopped("stopping"))
    failed = [a.client for a in stepper.take_actions() if isinstance(a, ReplyError)]
    assert failed == [1, 2, 3]
    assert stepper.idle() and stepper.waiting_for_key == 0


# -- the invariant, and where it breaks ----------------------------------------------------


def run_by_hand(policy: Policy, key: str, transfers: list[Transfer]) -> Bank:
    """All transfers arrive at once; every call completes, then every append, in order."""
    stepper = Stepper(BankMachine(policy, key))
    pending = deque(stepper.feed(*(InputArrived(n, t) for n, t in enumerate(transfers))))
    while pending:
        action = pending.popleft()
        if isinstance(action, StartIO):
            pending += stepper.feed(IOCompleted(action.request, "clean"))
    assert stepper.idle()
    return stepper.state


def test_interleave_breaks_the_invariant() -> None:
    # Both transfers read a = 100 before either append: both pass the overdraft check.
    state = run_by_hand(Policy.INTERLEAVE, "both", [Transfer("a", "b", 80), Transfer("a", "c", 80)])
    assert state.balances == {"a": 20, "b": 130, "c": 100, "d": 0}
    assert sum(state.balances.values()) == TOTAL + 80  # money made out of nothing
    with pytest.raises(AssertionError):
        check_invariant(state)


def test_the_debited_account_alone_is_not_enough_when_records_hold_balances() -> None:
    # a->b and b->c hold a and b apart; both read b = 50 and each writes its own b.
    state = run_by_hand(Policy.PER_KEY, "source", [Transfer("a", "b", 30), Transfer("b", "c", 20)])
    assert state.balances["b"] == 30  # the credit of 30 was overwritten
    assert sum(state.balances.values()) == TOTAL - 30
    # With both accounts as keys the second waits for the first, and no money is lost.
    state = run_by_hand(Policy.PER_KEY, "both", [Transfer("a", "b", 30), Transfer("b", "c", 20)])
    assert state.balances == {"a": 70, "b": 60, "c": 40, "d": 0}
    check_invariant(state)


# -- random schedules ---------------------------------------------------------------------------


def bank_inputs(draw_index: Callable[[int], int], count: int) -> list[BankInput]:
    """``count`` random inputs, mostly transfers between two different accounts."""
    inputs: list[BankInput] = []
    for _ in range(count):
        kind = draw_index(10)
        source = ACCOUNTS[draw_index(4)]
        target = ACCOUNTS[(ACCOUNTS.index(source) + 1 + draw_index(3)) % 4]
        if kind == 0:
            inputs.append(Audit(source))
        elif kind == 1:
            inputs.append(Sweep((source, ACCOUNTS[draw_index(4)]), target))
        else:
            inputs.append(Transfer(source, target, 10 * (1 + draw_index(8)), ok=kind != 2))
    return inputs


def play(
    machine: BankMachine, inputs: list[BankInput], choose: Callable[[list[Any]], Any]
) -> tuple[dict[int, list[str]], list[int], Stepper[Any, Any, Any], list[Bank]]:
    """Host the stepper: at each step feed the next input or complete a pending request
    chosen by ``choose`` (appends complete in request order, as the journal's do).
    Returns the replies per client, the clients in reply order, the stepper, and the
    state after every step."""
    stepper = Stepper(machine)
    to_feed = deque(enumerate(inputs))
    calls: dict[int, Call[Any]] = {}
    appends: deque[int] = deque()
    replies: dict[int, list[str]] = {client: [] for client in range(len(inputs))}
    reply_order: list[int] = []
    states = []
    lsn = 0
    while to_feed or calls or appends:
        options: list[Any] = sorted(calls)
        if appends:
            options.append("append")
        if to_feed:
            options.append("input")
        choice = choose(options)
        if choice == "input":
            actions = stepper.feed(InputArrived(*to_feed.popleft()))
        elif choice == "append":
            lsn += 1
            actions = stepper.feed(IOCompleted(appends.popleft(), lsn))
        else:
            call = calls.pop(choice)
            try:
                actions = stepper.feed(IOCompleted(choice, call.fn(*call.args)))
            except OSError as exc:
                actions = stepper.feed(IOCompleted(choice, error=exc))
        for action in actions:
            match action:
                case StartIO(request, Append()):
                    appends.append(request)
                case StartIO(request, Call() as effect):
                    calls[request] = effect
                case CancelIO(request):
                    calls.pop(request, None)
                case Reply(client, output):
                    replies[client].append(output)
                    reply_order.append(client)
                case ReplyError(client, _):
                    replies[client].append("error")
                    reply_order.append(client)
                case _:
                    raise AssertionError(f"unexpected action {action!r}")
        states.append(stepper.state)
    return replies, reply_order, stepper, states


@settings(max_examples=200, deadline=None)
@given(data=st.data(), count=st.integers(1, 20))
def test_per_key_multikey_keeps_the_invariant_and_equals_a_sequential_order(
    data: st.DataObject, count: int
) -> None:
    def draw_index(n: int) -> int:
        return data.draw(st.integers(0, n - 1))

    inputs = bank_inputs(draw_index, count)
    replies, reply_order, stepper, states = play(
        BankMachine(), inputs, lambda options: data.draw(st.sampled_from(options))
    )
    assert all(len(r) == 1 for r in replies.values()), replies
    assert stepper.idle()
    for state in states:  # at every step, not just at the end
        check_invariant(state)
    # Equal to one input at a time in reply order: outputs, balances and ledger alike.
    outputs, final = sequential([inputs[client] for client in reply_order])
    assert [replies[client][0] for client in reply_order] == outputs
    assert stepper.state == final
    # And, since each account's queue is FIFO, the outputs and balances of arrival order.
    outputs, final = sequential(inputs)
    assert [replies[client][0] for client in range(count)] == outputs
    assert stepper.state.balances == final.balances


def test_interleave_breaks_the_invariant_under_random_schedules() -> None:
    """The harness has teeth: the same random play finds a broken invariant under INTERLEAVE."""
    for seed in range(200):
        rng = random.Random(seed)
        inputs = bank_inputs(rng.randrange, 12)
        _, _, _, states = play(BankMachine(Policy.INTERLEAVE), inputs, rng.choice)
        try:
            for state in states:
                check_invariant(state)
        except AssertionError:
            return
    raise AssertionError("no seed in 0..199 broke the invariant under INTERLEAVE")
