"""A small bank: accounts, deposits, transfers that never overdraw, and an audit.

Serve it from the repository's root (or with ``PYTHONPATH`` set to it)::

    corosm serve --machine examples.bank.machine:Bank --data-dir bank-data

Theory of operation
-------------------
Inputs and outputs are plain frozen dataclasses: ``corosm serve`` takes and
gives them as JSON (``{"type": "Transfer", ...}``), and their
``__post_init__`` checks are the API's (a bad amount is a ``400``).

Every change is a journal record (:class:`Deposited`, :class:`Moved`,
:class:`Frozen`), and :meth:`Bank.apply` is the only code that changes the
state, live and when recovery replays the journal. So ``apply`` must not
raise, and it does not have to decide anything: the handler validates
*before* it appends (the source has the money, the account is not frozen,
the transfer is not a retry of one already made), and ``apply`` applies.

The policy is ``PER_KEY``. A transfer reads its source's balance, then
suspends on its append; if another transfer from that source ran in
between, both would see the same money and the account would go below zero
(``examples.bank.sim`` plants exactly that bug by subclassing with
``Policy.INTERLEAVE``, and the simulator finds it). ``key()`` returns
``Keys(source, target)`` for a transfer and the account for everything else,
so inputs on the same accounts run one after another while transfers
between other accounts go on, sharing group commits. ``EXCLUSIVE`` would be
correct too, and much slower: one input at a time, one fsync each
(``ExclusiveBank``, which the benchmark measures side by side).

Transfer ids make retries safe. A client that lost its connection does not
know whether its transfer happened; it sends the same ``Transfer`` again,
and gets :class:`AlreadyDone` if it had. The ids live with the source
account (the state keeps ``(source, id)`` pairs), so the check reads only
state under the keys the transfer holds. (They are kept forever here; a
real bank would expire them after a retention window.)

An :class:`Audit` asks two slow watchlist services about one account, at
once (``ctx.start_call`` twice, then ``ctx.all`` under ``ctx.timeout``), and
freezes the account if either lists it: a frozen account receives money
but cannot send it. The audit holds its account's key while it waits, so
its report and its decision see one consistent balance; other accounts are
not held up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, assert_never

from corosm import Context, EffectTimeout, Machine, Order, Policy
from corosm.core import Keys
from examples.bank import checks

MAX_NAME = 64
AUDIT_TIMEOUT = 2.0
"""Seconds an audit waits for its checks before it gives up (nothing is frozen then)."""


def _check_name(what: str, value: str) -> None:
    if not 0 < len(value) <= MAX_NAME:
        raise ValueError(f"{what} must be 1 to {MAX_NAME} characters, got {len(value)}")


def _check_amount(amount: int) -> None:
    if amount <= 0:
        raise ValueError(f"amount must be positive, got {amount}")


# --- inputs -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deposit:
    account: str
    amount: int

    def __post_init__(self) -> None:
        _check_name("account", self.account)
        _check_amount(self.amount)


@dataclass(frozen=True, slots=True)
class Transfer:
    """Move ``amount`` from ``source`` to ``target``; ``id`` is unique per source."""

    id: str
    source: str
    target: str
    amount: int

    def __post_init__(self) -> None:
        _check_name("id", self.id)
        _check_name("source", self.source)
        _check_name("target", self.target)
        _check_amount(self.amount)
        if self.source == self.target:
            raise ValueError(f"source and target are both {self.source!r}")


@dataclass(frozen=True, slots=True)
class GetBalance:
    account: str


@dataclass(frozen=True, slots=True)
class Audit:
    """Check ``account`` against the watchlists; freeze it if it is on one."""

    account: str

    def __post_init__(self) -> None:
        _check_name("account", self.account)


BankInput = Deposit | Transfer | GetBalance | Audit


# --- outputs ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Balance:
    account: str
    balance: int


@dataclass(frozen=True, slots=True)
class Transferred:
    id: str
    source_balance: int
    target_balance: int


@dataclass(frozen=True, slots=True)
class AlreadyDone:
    """This transfer id was already used from this source: nothing moved this time."""

    id: str


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str


@dataclass(frozen=True, slots=True)
class AuditReport:
    account: str
    balance: int
    listed_on: tuple[str, ...]
    frozen: bool


BankOutput = Balance | Transferred | AlreadyDone | Refused | AuditReport


# --- journal records and state --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deposited:
    account: str
    amount: int


@dataclass(frozen=True, slots=True)
class Moved:
    id: str
    source: str
    target: str
    amount: int


@dataclass(frozen=True, slots=True)
class Frozen:
    account: str
    listed_on: tuple[str, ...]


Record = Deposited | Moved | Frozen


@dataclass(slots=True)
class Books:
    """The bank's state: what ``apply`` builds from the journal."""

    balances: dict[str, int] = field(default_factory=dict)
    frozen: set[str] = field(default_factory=set)
    transfers: set[tuple[str, str]] = field(default_factory=set)
    """``(source, id)`` of every transfer made."""

    def balance(self, account: str) -> Balance:
        return Balance(account, self.balances.get(account, 0))


# --- the machine --------------------------------------------------------------------------


class Bank(Machine[Books, BankInput, BankOutput]):
    """Accounts that never go below zero (see the module docs)."""

    policy = Policy.PER_KEY

    def key(self, input: BankInput) -> Keys | str:
        if isinstance(input, Transfer):
            return Keys(input.source, input.target)
        return input.account

    def order(self, input: BankInput) -> Order:
        # Reads answer from the applied state. Writes may go to the machine while
        # the connection's earlier writes wait for their fsync: they hold those
        # writes' accounts until their reply, so a later input on them waits.
        return Order.READ if isinstance(input, GetBalance) else Order.LOGGED

    def initial_state(self) -> Books:
        return Books()

    async def handle(self, ctx: Context[Books], input: BankInput) -> BankOutput:
        match input:
            case GetBalance(account):
                return ctx.state.balance(account)
            case Deposit(account, amount):
                await ctx.append(Deposited(account, amount))
                return ctx.state.balance(account)
            case Transfer():
                return await self._transfer(ctx, input)
            case Audit(account):
                return await self._audit(ctx, account)
            case _:
                assert_never(input)

    async def _transfer(self, ctx: Context[Books], t: Transfer) -> BankOutput:
        books = ctx.state
        if (t.source, t.id) in books.transfers:
            return AlreadyDone(t.id)
        if t.source in books.frozen:
            return Refused(f"{t.source} is frozen")
        have = books.balances.get(t.source, 0)
        if have < t.amount:
            return Refused(f"{t.source} has {have}, not {t.amount}")
        # Validated: from here on the transfer cannot fail, only be journaled.
        await ctx.append(Moved(t.id, t.source, t.target, t.amount))
        books = ctx.state  # the latest state, with this transfer applied
        return Transferred(t.id, books.balances[t.source], books.balances[t.target])

    async def _audit(self, ctx: Context[Books], account: str) -> BankOutput:
        balance = ctx.state.balances.get(account, 0)
        lists = tuple(checks.WATCHLISTS)
        asked = [ctx.start_call(checks.check, name, account) for name in lists]  # all at once
        try:
            answers = await ctx.timeout(ctx.all(*asked), AUDIT_TIMEOUT)
        except EffectTimeout:
            return Refused(f"the audit of {account} timed out; nothing was changed")
        listed_on = tuple(name for name, hit in zip(lists, answers, strict=True) if hit)
        if listed_on and account not in ctx.state.frozen:
            await ctx.append(Frozen(account, listed_on))
        return AuditReport(account, balance, listed_on, account in ctx.state.frozen)

    # -- the journal ----------------------------------------------------------------------

    def apply(self, state: Books, record: Record) -> Books:
        # Runs live and on recovery. Everything was checked before the append,
        # so nothing here can raise.
        match record:
            case Deposited(account, amount):
                state.balances[account] = state.balances.get(account, 0) + amount
            case Moved(id, source, target, amount):
                if (source, id) not in state.transfers:  # never twice, even if journaled twice
                    state.transfers.add((source, id))
                    state.balances[source] = state.balances.get(source, 0) - amount
                    state.balances[target] = state.balances.get(target, 0) + amount
            case Frozen(account):
                state.frozen.add(account)
            case _:
                assert_never(record)
        return state

    def encode_record(self, record: Record) -> bytes:
        match record:
            case Deposited(account, amount):
                fields: list[Any] = ["deposit", account, amount]
            case Moved(id, source, target, amount):
                fields = ["move", id, source, target, amount]
            case Frozen(account, listed_on):
                fields = ["freeze", account, list(listed_on)]
            case _:
                assert_never(record)
        return json.dumps(fields, separators=(",", ":")).encode()

    def decode_record(self, data: bytes) -> Record:
        match json.loads(data):
            case ["deposit", str(account), int(amount)]:
                return Deposited(account, amount)
            case ["move", str(id), str(source), str(target), int(amount)]:
                return Moved(id, source, target, amount)
            case ["freeze", str(account), list(listed_on)]:
                return Frozen(account, tuple(listed_on))
            case other:
                raise ValueError(f"not a bank record: {other!r}")

    # -- snapshots ------------------------------------------------------------------------

    def copy_state(self, state: Books) -> Books:
        # On the loop thread when a snapshot starts: copy the containers (their
        # contents are immutable), not the default shallow copy, which would share them.
        return Books(dict(state.balances), set(state.frozen), set(state.transfers))

    def snapshot(self, state: Books) -> bytes:
        return json.dumps(
            {
                "balances": state.balances,
                "frozen": sorted(state.frozen),
                "transfers": sorted(state.transfers),
            },
            separators=(",", ":"),
        ).encode()

    def restore(self, data: bytes) -> Books:
        saved = json.loads(data)
        return Books(
            balances=dict(saved["balances"]),
            frozen=set(saved["frozen"]),
            transfers={(source, id) for source, id in saved["transfers"]},
        )


class ExclusiveBank(Bank):
    """The same bank, one input at a time: correct, and what the benchmark compares."""

    policy = Policy.EXCLUSIVE
