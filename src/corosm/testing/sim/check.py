"""Checking a history: linearizability against a sequential model, epoch by epoch.

Theory of operation
-------------------
A history is linearizable if every operation can be given one instant between
its call and its return such that running the inputs in that order through the
model (``model_step(state, input) -> (state, output)``) gives every output the
clients saw. Operations with an unknown outcome may be placed anywhere after
their call, or left out.

The search is Wing and Gong's: pick, among the operations not yet placed, one
that was called before every other unplaced *known* operation returned, apply
it to the model, and go on; backtrack when an output differs. Visited
``(placed set, model state)`` pairs are remembered (Lowe's memo), so model
states must be hashable.

Crashes cut a run into epochs (see :mod:`.history`). Instead of one yes/no, the
search returns *every* model state the epoch can end in; the next epoch starts
from those, or, when the world could observe the recovered state, only from
that one, after checking that it is among them: a recovered state outside the
set means an acknowledged change was lost (or an unacknowledged one invented).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from corosm.errors import UsageError
from corosm.testing.sim.history import Epoch, Operation
from corosm.testing.sim.trace import short

ModelStep = Callable[[Any, Any], tuple[Any, Any]]

DEFAULT_BUDGET = 500_000
"""Search states explored per epoch before the checker gives up (and says so)."""


class CheckBudgetExceeded(Exception):
    """The search for a linearization needed more steps than allowed."""


@dataclass(frozen=True, slots=True)
class Violation:
    """Why a history is not explained by the model, in words a person can act on."""

    epoch: int
    summary: str
    details: str


def end_states(
    operations: Sequence[Operation],
    starts: Iterable[Hashable],
    model_step: ModelStep,
    budget: int = DEFAULT_BUDGET,
) -> set[Hashable]:
    """Every model state in which ``operations`` can end, starting from any of ``starts``.

    Empty when the operations are not linearizable from any start.
    """
    ops = sorted(operations, key=lambda op: (op.called, op.id))
    calls = [op.called for op in ops]
    rets = [op.returned if op.returned is not None else math.inf for op in ops]
    known = 0
    for i, op in enumerate(ops):
        if op.known:
            known |= 1 << i
    steps: dict[tuple[Hashable, int], tuple[Hashable, Any]] = {}
    results: set[Hashable] = set()
    seen: set[tuple[int, Hashable]] = set()
    stack: list[tuple[int, Hashable]] = [(0, s) for s in starts]
    while stack:
        config = stack.pop()
        if config in seen:
            continue
        seen.add(config)
        if len(seen) > budget:
            raise CheckBudgetExceeded(f"more than {budget} search states for {len(ops)} operations")
        mask, state = config
        if mask & known == known:
            results.add(state)
        horizon = min((rets[i] for i in range(len(ops)) if not mask >> i & 1), default=math.inf)
        for i, op in enumerate(ops):
            if calls[i] > horizon:
                break  # sorted by call: nobody later may go before the earliest return
            if mask >> i & 1:
                continue
            key = (state, i)
            step = steps.get(key)
            if step is None:
                step = steps[key] = _step(model_step, state, op)
            if op.known and step[1] != op.output:
                continue
            stack.append((mask | 1 << i, step[0]))
    return results


def check_epochs(
    epochs: Sequence[Epoch],
    model_init: Callable[[], Any],
    model_step: ModelStep,
    budget: int = DEFAULT_BUDGET,
) -> Violation | None:
    """Check a whole run; None when every epoch is linearizable and every recovery sound."""
    starts: set[Hashable] = {_hashable(model_init(), "model_init()")}
    for epoch in epochs:
        ends = end_states(epoch.operations, starts, model_step, budget)
        if not ends:
            return explain(epoch, starts, model_step, budget)
        if epoch.crashed and epoch.recovered is not None:
            recovered = _hashable(epoch.recovered, "observe(state)")
            if recovered not in ends:
                return _lost(epoch, recovered, ends)
            ends = {recovered}
        starts = ends
    return None


def explain(
    epoch: Epoch, starts: set[Hashable], model_step: ModelStep, budget: int = DEFAULT_BUDGET
) -> Violation:
    """Find the first return in ``epoch`` that no linearization explains, and say so.

    The history cut at time ``t`` (calls after ``t`` dropped, operations still
    running at ``t`` unknown) stops being linearizable at one return; a binary
    search finds it, and the model says what it would have allowed instead.
    """
    returns = sorted({op.returned for op in epoch.operations if op.returned is not None})
    lo, hi = 0, len(returns) - 1  # the answer is an index into returns
    while lo < hi:
        mid = (lo + hi) // 2
        if end_states(_cut(epoch.operations, returns[mid]), starts, model_step, budget):
            lo = mid + 1
        else:
            hi = mid
    t = returns[lo] if returns else 0.0
    prefix = _cut_before(epoch.operations, t)
    # Several operations may return at t: blame one whose output the model cannot give
    # in any state the others allow at that moment.
    blamed = [op for op in epoch.operations if op.returned == t]
    allowed_by: dict[int, set[Any]] = {}
    for op in blamed:
        others = [o for o in prefix if o.id != op.id]
        before = end_states(others, starts, model_step, budget)
        allowed_by[op.id] = {model_step(s, op.input)[1] for s in before}
    culprit = next((op for op in blamed if op.output not in allowed_by[op.id]), blamed[0])
    allowed = sorted(short(out) for out in allowed_by[culprit.id])[:5]
    summary = (
        f"not linearizable: {culprit.describe()}; the model allows "
        f"{' or '.join(allowed) if allowed else 'no output'} there"
    )
    lines = [op.describe() for op in sorted(epoch.operations, key=lambda o: (o.called, o.id))]
    return Violation(epoch.index, summary, "\n".join(lines))


def _lost(epoch: Epoch, recovered: Hashable, ends: set[Hashable]) -> Violation:
    candidates = "\n".join(f"  allowed: {short(s, 300)}" for s in list(ends)[:3])
    summary = (
        f"recovery after crash {epoch.index + 1} rebuilt a state the history does not allow "
        f"(an acknowledged change lost, or a failed one kept): {short(recovered, 300)}"
    )
    lines = [op.describe() for op in sorted(epoch.operations, key=lambda o: (o.called, o.id))]
    return Violation(epoch.index, summary, candidates + "\n" + "\n".join(lines))


def _cut(ops: Sequence[Operation], t: float) -> list[Operation]:
    """The history as seen at time ``t``: later calls dropped, later returns unknown."""
    out = []
    for op in ops:
        if op.called > t:
            continue
        if op.returned is not None and op.returned > t:
            out.append(Operation(op.id, op.client, op.input, op.called, None, None, "running"))
        else:
            out.append(op)
    return out


def _cut_before(ops: Sequence[Operation], t: float) -> list[Operation]:
    """Like :func:`_cut`, but operations returning exactly at ``t`` count as running."""
    return _cut(ops, math.nextafter(t, -math.inf))


def _step(model_step: ModelStep, state: Hashable, op: Operation) -> tuple[Hashable, Any]:
    try:
        new_state, output = model_step(state, op.input)
    except Exception as exc:
        raise UsageError(
            f"model_step raised {type(exc).__name__}: {exc} on {short(op.input)}; the model "
            "must accept every input the workload generates"
        ) from exc
    return _hashable(new_state, "model_step()"), output


def _hashable(state: Any, where: str) -> Hashable:
    try:
        hash(state)
    except TypeError:
        raise UsageError(
            f"{where} gave {short(state)}, which is not hashable; model states must be "
            "hashable values (use tuples, frozensets, frozen dataclasses)"
        ) from None
    result: Hashable = state
    return result
