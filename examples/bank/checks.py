"""The audit's slow checks: blocking calls to (pretend) remote watchlist services.

A real check would be an HTTP request to a sanctions service or a query to a
fraud engine: blocking, slow, and out of our hands. ``Bank.handle`` runs
each one on a worker thread with ``ctx.start_call``, so the event loop and
every other account go on meanwhile. Here a check sleeps ``LATENCY``
seconds, then answers from :data:`WATCHLISTS`.

The simulator does not wait: :func:`answer_at_once` is the ``Call``
simulator of ``examples.bank.sim:SPEC``; it gives the same answers in no
real time (and sometimes fails, as a remote service does).
"""

from __future__ import annotations

import random
import time
from typing import Any

from corosm import Call, Effect

LATENCY = 0.05
"""Seconds each check takes (real time only; simulated checks take virtual time)."""

WATCHLISTS: dict[str, frozenset[str]] = {
    "sanctions": frozenset({"mallory"}),
    "fraud": frozenset({"mallory", "trudy"}),
}
"""The lists an audit checks, and who is on them."""

SIMULATED_FAILURE_RATE = 0.05


def listed(watchlist: str, account: str) -> bool:
    """Whether ``account`` is on ``watchlist``: the answer, without the wait."""
    return account in WATCHLISTS[watchlist]


def check(watchlist: str, account: str) -> bool:
    """Ask the ``watchlist`` service about ``account``: blocks for ``LATENCY`` seconds."""
    time.sleep(LATENCY)  # stands in for the network round trip
    return listed(watchlist, account)


def answer_at_once(effect: Effect[Any], rng: random.Random) -> Any:
    """Simulate a ``Call``: a check answers from the lists at once, or fails.

    The failure is what a remote service does now and then; the audit lets
    it escape, so the simulated client sees an error (outcome unknown). Any
    other ``Call`` runs for real, inline.
    """
    if not isinstance(effect, Call):
        raise TypeError(f"answer_at_once simulates Call effects, not {type(effect).__name__}")
    if effect.fn is not check:
        return effect.fn(*effect.args)
    if rng.random() < SIMULATED_FAILURE_RATE:
        raise ConnectionError(f"the {effect.args[0]} service did not answer (simulated)")
    return listed(*effect.args)
