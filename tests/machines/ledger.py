"""A small bank ledger: a user's machine with typed inputs and outputs, for ``--machine``.

Served by ``corosm serve --machine tests.machines.ledger:Ledger`` (with the
repository's root on ``PYTHONPATH``). Inputs and outputs are plain frozen
dataclasses joined in unions, as a user would write them: no Literal tag
field, no pydantic. Every change is journaled as the list of balance moves
it makes, and ``apply`` replays those moves, live and on recovery.

The policy is ``EXCLUSIVE``: a withdrawal checks the balance before it
journals, so no other input may run in between. Reads declare
``Order.READ`` (they answer from the applied state) and journaled writes
``Order.LOGGED``; ``Explode`` keeps the default, ``Order.WRITE``.
"""

from __future__ import annotations

import json
import os
import select
from dataclasses import dataclass

from corosm import Context, Machine, Order, Policy


@dataclass(frozen=True, slots=True)
class Deposit:
    account: str
    amount: int

    def __post_init__(self) -> None:
        if self.amount <= 0:
            raise ValueError(f"amount must be positive, got {self.amount}")


@dataclass(frozen=True, slots=True)
class Withdraw:
    account: str
    amount: int

    def __post_init__(self) -> None:
        if self.amount <= 0:
            raise ValueError(f"amount must be positive, got {self.amount}")


@dataclass(frozen=True, slots=True)
class Transfer:
    source: str
    target: str
    amount: int


@dataclass(frozen=True, slots=True)
class GetBalance:
    account: str


@dataclass(frozen=True, slots=True)
class Explode:
    """Makes the handler raise: an input that fails alone."""

    message: str


@dataclass(frozen=True, slots=True)
class Balance:
    account: str
    balance: int


@dataclass(frozen=True, slots=True)
class Moved:
    source: Balance
    target: Balance


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str


LedgerInput = Deposit | Withdraw | Transfer | GetBalance | Explode
LedgerOutput = Balance | Moved | Refused
Balances = dict[str, int]


class Ledger(Machine[Balances, LedgerInput, LedgerOutput]):
    """Accounts and their balances; an overdraft is refused, never journaled."""

    policy = Policy.EXCLUSIVE

    def order(self, input: LedgerInput) -> Order:
        if isinstance(input, GetBalance):
            return Order.READ
        if isinstance(input, Explode):
            return Order.WRITE
        return Order.LOGGED

    def initial_state(self) -> Balances:
        return {}

    def apply(self, state: Balances, record: bytes) -> Balances:
        for account, delta in json.loads(record):
            state[account] = state.get(account, 0) + delta
        return state

    async def handle(self, ctx: Context[Balances], input: LedgerInput) -> LedgerOutput:
        match input:
            case Deposit(account, amount):
                await ctx.append(_moves((account, amount)))
                return self._balance(ctx.state, account)
            case Withdraw(account, amount):
                if ctx.state.get(account, 0) < amount:
                    return Refused(f"{account} has {ctx.state.get(account, 0)}, not {amount}")
                await ctx.append(_moves((account, -amount)))
                return self._balance(ctx.state, account)
            case Transfer(source, target, amount):
                if ctx.state.get(source, 0) < amount:
                    return Refused(f"{source} has {ctx.state.get(source, 0)}, not {amount}")
                await ctx.append(_moves((source, -amount), (target, amount)))
                return Moved(self._balance(ctx.state, source), self._balance(ctx.state, target))
            case GetBalance(account):
                return self._balance(ctx.state, account)
            case Explode(message):
                raise RuntimeError(message)
        raise TypeError(f"not a ledger input: {input!r}")

    @staticmethod
    def _balance(state: Balances, account: str) -> Balance:
        return Balance(account, state.get(account, 0))

    def snapshot(self, state: Balances) -> bytes:
        return json.dumps(state).encode()

    def restore(self, data: bytes) -> Balances:
        restored: Balances = json.loads(data)
        return restored


def _moves(*moves: tuple[str, int]) -> bytes:
    return json.dumps(moves).encode()


class Untyped(Machine):  # type: ignore[type-arg]
    """A machine that declares no types: ``corosm serve`` refuses it in one line."""

    def initial_state(self) -> dict[str, int]:
        return {}


class BrokenStart(Ledger):
    """A ledger whose ``initial_state`` raises: ``corosm serve`` says so in one line."""

    def initial_state(self) -> Balances:
        raise RuntimeError("no opening balances")


class SlowStart(Ledger):
    """A ledger whose start waits for the test, through two FIFOs it made.

    ``initial_state`` (run by recovery, on a thread) opens ``$COROSM_TEST_GATE``
    to read, says so on ``$COROSM_TEST_GATE.entered``, and waits (60 s at
    most) until the test closes the gate's other end.
    """

    def initial_state(self) -> Balances:
        gate = os.environ["COROSM_TEST_GATE"]
        fd = os.open(gate, os.O_RDONLY | os.O_NONBLOCK)
        try:
            with open(f"{gate}.entered", "wb") as entered:
                entered.write(b"1")
            select.select([fd], [], [], 60)
        finally:
            os.close(fd)
        return super().initial_state()
