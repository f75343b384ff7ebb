"""The bank in the simulated world: a sequential model, a workload, and a planted bug.

Run it::

    corosm sim --machine examples.bank.sim:SPEC --seeds 2000
    corosm sim --machine examples.bank.sim:OVERDRAFT_SPEC --seeds 200   # fails: the bug

Theory of operation
-------------------
:func:`model_step` is the bank written as the simplest sequential code, on
a hashable :class:`Model`; the simulator checks that every history the real
machine produces (under crashes, torn writes, I/O errors, snapshots and
restarts) can be explained by running the inputs one at a time through it.
:func:`observe` turns the ``Books`` that recovery rebuilt into a
``Model``, so a lost acknowledged transfer, or a refused one that moved
money anyway, is caught at the restart.

The workload is small on purpose: five clients on four accounts, small
balances, amounts that often exceed them (so the overdraft check matters),
transfer ids from a small pool (so some are retries), and a few audits, of
accounts of which one is on the watchlists. The audit's checks are simulated by
:func:`examples.bank.checks.answer_at_once`: no real time passes.

:class:`InterleavedBank` is the planted bug: the same machine under
``Policy.INTERLEAVE``. Two transfers from one account both read its balance
before either append completes, and both move the money: the account goes
below zero and a transfer the model would refuse is acknowledged.
``OVERDRAFT_SPEC`` runs it, and the simulator reports the first seed that
shows it: seed 2 when this was written, where ``alice`` has 8, transfers of 3 and 6 both
pass the check, and the second answers ``source_balance=-1``
(``tests/test_example_bank.py`` allows 50 seeds).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from corosm import Call, Policy
from corosm.testing.sim import FaultPlan, SimSpec
from examples.bank.checks import WATCHLISTS, answer_at_once, listed
from examples.bank.machine import (
    AlreadyDone,
    Audit,
    AuditReport,
    Balance,
    Bank,
    BankInput,
    BankOutput,
    Books,
    Deposit,
    GetBalance,
    Refused,
    Transfer,
    Transferred,
)

ACCOUNTS = ("alice", "bob", "carol", "mallory")


@dataclass(frozen=True, slots=True)
class Model:
    """The bank's state as the checker needs it: hashable, zero balances left out."""

    balances: tuple[tuple[str, int], ...] = ()
    frozen: frozenset[str] = frozenset()
    transfers: frozenset[tuple[str, str]] = frozenset()


def _balances(balances: dict[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted((account, n) for account, n in balances.items() if n != 0))


def model_step(state: Model, input: BankInput) -> tuple[BankOutput, Model]:
    """One input, run alone: the output, and the state after it."""
    balances = dict(state.balances)
    match input:
        case GetBalance(account):
            return Balance(account, balances.get(account, 0)), state
        case Deposit(account, amount):
            balances[account] = balances.get(account, 0) + amount
            new = replace(state, balances=_balances(balances))
            return Balance(account, balances[account]), new
        case Transfer(id, source, target, amount):
            if (source, id) in state.transfers:
                return AlreadyDone(id), state
            if source in state.frozen:
                return Refused(f"{source} is frozen"), state
            have = balances.get(source, 0)
            if have < amount:
                return Refused(f"{source} has {have}, not {amount}"), state
            balances[source] = have - amount
            balances[target] = balances.get(target, 0) + amount
            new = Model(_balances(balances), state.frozen, state.transfers | {(source, id)})
            return Transferred(id, balances[source], balances[target]), new
        case Audit(account):
            on = tuple(name for name in WATCHLISTS if listed(name, account))
            frozen = state.frozen | {account} if on else state.frozen
            report = AuditReport(account, balances.get(account, 0), on, account in frozen)
            return report, replace(state, frozen=frozen)
    raise TypeError(f"not a bank input: {input!r}")


def observe(books: Books) -> Model:
    """The recovered machine state, as a model state."""
    return Model(_balances(books.balances), frozenset(books.frozen), frozenset(books.transfers))


def workload(rng: random.Random) -> BankInput:
    """One input: mostly transfers, deposits and reads on four accounts."""
    roll = rng.random()
    account = rng.choice(ACCOUNTS)
    if roll < 0.25:
        return Deposit(account, rng.randrange(1, 10))
    if roll < 0.8:
        target = rng.choice([a for a in ACCOUNTS if a != account])
        return Transfer(f"t{rng.randrange(40)}", account, target, rng.randrange(1, 10))
    if roll < 0.93:
        return GetBalance(account)
    return Audit(account)


SPEC = SimSpec(
    machine_factory=Bank,
    model_init=Model,
    model_step=model_step,
    workload=workload,
    observe=observe,
    effects={Call: answer_at_once},
    faults=FaultPlan(clients=5),
    name="examples.bank.sim:SPEC",
)
"""The bank under crashes, I/O faults and snapshots: every seed must pass."""


class InterleavedBank(Bank):
    """BUG (planted): the bank without its keys. Transfers from one account overdraw it."""

    policy = Policy.INTERLEAVE


OVERDRAFT_SPEC = replace(
    SPEC, machine_factory=InterleavedBank, name="examples.bank.sim:OVERDRAFT_SPEC"
)
"""The planted bug: the simulator must find a seed where it shows."""
