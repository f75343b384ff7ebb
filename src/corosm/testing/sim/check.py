"""Checking a simulated run: linearizability epoch by epoch, and recovery soundness.

Theory of operation
-------------------
Linearizability itself is :func:`corosm.testing.linearizability.check_linearizable`
(Wing and Gong's search with Lowe's memo, split per key when ``partition``
says the inputs touch one key each). This module adds only what crashes need:

* Crashes cut a run into epochs (see :mod:`.history`). Each epoch is checked
  from the state the previous one ended in.
* When the world can observe the state recovery rebuilt (``observe``), that
  state ``R`` must be one the epoch's history can end in: no acknowledged
  change lost, no failed one invented. This is asked of the same checker by
  adding a *probe* operation, called after every known operation returned,
  whose output is "the model state equals ``R``" (per key when partitioned,
  so P-compositionality still applies). Unknown-outcome operations may go
  before the probe (they happened) or after it (they did not). The next epoch
  then starts from ``R`` alone.
* Without ``observe`` (or when an epoch may start in several states) we need
  the *set* of states an epoch can end in, which the yes/no checker cannot
  give: :func:`end_states` enumerates it. That enumeration is exponential in
  the number of unknown-outcome operations (each may or may not have
  happened), which is why the probe path above is used whenever it can be.

Round 1 computed end-state sets for every epoch, and a run with one failed
fsync (the journal fail-stops, so every write until the restart fails: 15+
unknown outcomes in one epoch) took seconds and blew the search budget; that
was the unexplained Hypothesis failure. The probe needs no enumeration.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from corosm.errors import UsageError
from corosm.testing._args import need, need_callable, need_int
from corosm.testing.linearizability import UNKNOWN, check_linearizable
from corosm.testing.linearizability import Operation as LinOp
from corosm.testing.sim.history import Epoch, Operation
from corosm.testing.sim.trace import short

ModelStep = Callable[[Any, Any], tuple[Any, Any]]
"""``model_step(state, input) -> (output, next_state)``, as in ``check_linearizable``."""
Partition = Callable[[Any], Hashable | None]

DEFAULT_BUDGET = 200_000
"""Model steps (probe path) or search states (end-state sets) per epoch before giving up."""


class CheckBudgetExceeded(Exception):
    """The search for a linearization needed more steps than allowed."""


@dataclass(frozen=True, slots=True)
class Violation:
    """Why a history is not explained by the model, in words a person can act on."""

    epoch: int
    summary: str
    details: str


@dataclass(frozen=True, slots=True)
class _Probe:
    """Pseudo-input: "the state (at ``key``, or whole when None) is ``expected``"."""

    key: Hashable | None
    expected: Any

    def __repr__(self) -> str:
        where = "state" if self.key is None else f"state[{self.key!r}]"
        return f"<recovered {where} == {short(self._value(), 80)}>"

    def _value(self) -> Any:
        return self.expected if self.key is None else _get(self.expected, self.key)


def check_epochs(
    epochs: Sequence[Epoch],
    model_init: Callable[[], Any],
    model_step: ModelStep,
    budget: int = DEFAULT_BUDGET,
    partition: Partition | None = None,
) -> Violation | None:
    """Check a whole run; None when every epoch is linearizable and every recovery sound."""
    ok = isinstance(epochs, Sequence) and all(isinstance(e, Epoch) for e in epochs)
    need(ok, "epochs", epochs, "a sequence of Epoch")
    need_callable("model_init", model_init)
    _need_model(model_step, budget)
    need_callable("partition", partition, optional=True)
    starts: set[Hashable] = {_hashable(model_init(), "model_init()")}
    for epoch in epochs:
        observed = epoch.crashed and epoch.recovered is not None
        if len(starts) == 1 and (observed or not epoch.crashed):
            (start,) = starts
            violation = _check_one(epoch, start, model_step, budget, partition)
            if violation is not None:
                return violation
            if not epoch.crashed:
                continue
            starts = {_hashable(epoch.recovered, "observe(state)")}
            continue
        ends = end_states(epoch.operations, starts, model_step, budget)
        if not ends:
            return Violation(epoch.index, "not linearizable from any possible start", _ops(epoch))
        if observed:
            recovered = _hashable(epoch.recovered, "observe(state)")
            if recovered not in ends:
                return _lost(epoch, recovered, "")
            ends = {recovered}
        starts = ends
    return None


def _check_one(
    epoch: Epoch, start: Hashable, model_step: ModelStep, budget: int, partition: Partition | None
) -> Violation | None:
    history = [_lin(op) for op in epoch.operations]
    step = _checked(model_step)
    result = check_linearizable(history, step, start, partition, max_steps=budget)
    if result.inconclusive:
        raise CheckBudgetExceeded(result.explanation)
    if not result.ok:
        summary, _, rest = result.explanation.partition("\n")
        return Violation(epoch.index, summary, rest + "\n" + _ops(epoch))
    if not epoch.crashed:
        return None
    recovered = epoch.recovered
    probes = _probes(epoch, start, recovered, partition)
    end = max([op.called for op in epoch.operations] + _known_returns(epoch), default=0.0)
    history += [LinOp("recovery", p, True, end * 1000 + 1, end * 1000 + 2) for p in probes]
    result = check_linearizable(history, step, start, _with_probes(partition), max_steps=budget)
    if result.inconclusive:
        raise CheckBudgetExceeded(result.explanation)
    return None if result.ok else _lost(epoch, recovered, result.explanation)


def _probes(
    epoch: Epoch, start: Hashable, recovered: Any, partition: Partition | None
) -> list[_Probe]:
    if partition is None:
        return [_Probe(None, recovered)]
    for state, where in ((start, "the model state"), (recovered, "observe(state)")):
        if not isinstance(state, Mapping):
            raise UsageError(
                f"{where} is {short(state)}; with a partition function, model states "
                "must be Mappings from the partition keys"
            )
    assert isinstance(start, Mapping) and isinstance(recovered, Mapping)
    keys = set(start) | set(recovered) | {partition(op.input) for op in epoch.operations}
    keys.discard(None)
    return [_Probe(key, recovered) for key in sorted(keys, key=repr)]


def _with_probes(partition: Partition | None) -> Partition | None:
    if partition is None:
        return None
    inner = partition
    return lambda input: input.key if type(input) is _Probe else inner(input)


def _checked(model_step: ModelStep) -> ModelStep:
    """``model_step`` that also answers probes, and turns a model crash into a clear error."""

    def step(state: Any, input: Any) -> tuple[Any, Any]:
        if type(input) is _Probe:
            if input.key is None:
                return state == input.expected, state
            return _get(state, input.key) == _get(input.expected, input.key), state
        try:
            output, new_state = model_step(state, input)
        except Exception as exc:
            raise UsageError(
                f"model_step raised {type(exc).__name__}: {exc} on {short(input)}; the model "
                "must accept every input the workload generates"
            ) from exc
        return output, _hashable(new_state, "model_step()")

    return step


def _get(state: Any, key: Hashable) -> Any:
    return state.get(key)


def _lin(op: Operation) -> LinOp[Any, Any]:
    """The checker's form of an operation; times in virtual milliseconds."""
    who = f"{op.client}, op {op.id}"
    if op.returned is None:
        return LinOp(who, op.input, UNKNOWN, op.called * 1000)
    return LinOp(who, op.input, op.output, op.called * 1000, op.returned * 1000)


def _known_returns(epoch: Epoch) -> list[float]:
    return [op.returned for op in epoch.operations if op.returned is not None]


def end_states(
    operations: Sequence[Operation],
    starts: Iterable[Hashable],
    model_step: ModelStep,
    budget: int = DEFAULT_BUDGET,
) -> set[Hashable]:
    """Every model state in which ``operations`` can end, starting from any of ``starts``.

    Empty when the operations are not linearizable from any start. The search
    is Wing and Gong's with Lowe's memo, but it does not stop at the first
    linearization: it collects every end state (see the module docs for why
    this is needed only without ``observe``, and what it costs).
    """
    ok = isinstance(operations, Sequence) and all(isinstance(op, Operation) for op in operations)
    need(ok, "operations", operations, "a sequence of corosm.testing.sim.Operation")
    _need_model(model_step, budget)
    step = _checked(model_step)
    ops = sorted(operations, key=lambda op: (op.called, op.id))
    calls = [op.called for op in ops]
    rets = [op.returned if op.returned is not None else math.inf for op in ops]
    known = sum(1 << i for i, op in enumerate(ops) if op.known)
    memo: dict[tuple[Hashable, int], tuple[Any, Hashable]] = {}
    results: set[Hashable] = set()
    seen: set[tuple[int, Hashable]] = set()
    stack: list[tuple[int, Hashable]] = [(0, _hashable(s, "starts")) for s in starts]
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
            out = memo.get((state, i))
            if out is None:
                out = memo[(state, i)] = step(state, op.input)
            if op.known and out[0] != op.output:
                continue
            stack.append((mask | 1 << i, out[1]))
    return results


def _need_model(model_step: ModelStep, budget: int) -> None:
    need_callable("model_step", model_step)
    need_int("budget", budget, 1)


def _ops(epoch: Epoch) -> str:
    ordered = sorted(epoch.operations, key=lambda o: (o.called, o.id))
    return "--- the epoch's operations ---\n" + "\n".join(op.describe() for op in ordered)


def _lost(epoch: Epoch, recovered: Any, why: str) -> Violation:
    summary = (
        f"recovery after crash {epoch.index + 1} rebuilt a state the history does not allow "
        f"(an acknowledged change lost, or a failed one kept): {short(recovered, 300)}"
    )
    return Violation(epoch.index, summary, (why + "\n" if why else "") + _ops(epoch))


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
