"""A linearizability checker: Wing & Gong's search, with Lowe's memoisation.

A history is a list of :class:`Operation` values: who called what, what came
back, and when the call started and returned (any monotonic numbers). It is
*linearizable* if the operations can be put in one sequential order that (a)
respects real time (an operation that returned before another was called comes
first) and (b) gives every operation its observed output when run through the
sequential model ``model_step(state, input) -> (output, state)``.

Theory of operation
-------------------
Calls and returns are sorted into one doubly linked list of entries. The
search walks it from the front: at a call entry it tries to linearize that
operation next (run the model; the output must match); if that works the
operation's two entries are lifted out of the list and the walk restarts from
the front. Reaching a return entry means that operation should already have
been linearized: backtrack (undo the last choice and try the next candidate).
Lowe's improvement: remember every (set of linearized operations, model
state) already explored, as (bitset, state) pairs, and never explore one
twice; that turns the exponential search into a fast one on real histories.
Model states must therefore be hashable.

An operation whose outcome is unknown (the client timed out, or crashed) may
take effect at any time after its call, or never. It gets a return time of
"infinity" and accepts any output; "never" is then the same as "last", which
always succeeds, so the search stops as soon as every known operation is
placed.

P-compositionality: when every operation touches a single key, and operations
on different keys commute, the history is linearizable iff each key's
sub-history is. ``partition(input)`` names the key; if any operation has none
(a multi-key operation), the whole history is checked at once.

On failure the :class:`LinearizabilityResult` explains the deepest point the
search reached: the order it had found so far, and for the operations that
could go next what the model would have answered there versus what the
history says.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from corosm.errors import UsageError
from corosm.testing._args import is_int, is_number, need, need_callable

I = TypeVar("I")
O = TypeVar("O")
S = TypeVar("S")


class _Unknown:
    """The output of an operation whose outcome was never observed."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()
"""Output of an operation that may or may not have happened (timed out, crashed)."""


@dataclass(frozen=True, slots=True)
class Operation(Generic[I, O]):
    """One call in a history: ``client`` called ``input`` at ``call`` and got ``output`` at ``ret``.

    For an operation whose outcome is unknown, ``output`` is :data:`UNKNOWN`
    and ``ret`` is ignored (it may take effect any time after ``call``).
    """

    client: Hashable
    input: I
    output: O
    call: float
    ret: float = math.inf

    @property
    def unknown(self) -> bool:
        """True when the outcome was never observed."""
        return self.output is UNKNOWN

    def describe(self) -> str:
        """A one-line description for explanations."""
        when = f"[{self.call:g}, ?]" if self.unknown else f"[{self.call:g}, {self.ret:g}]"
        return f"client {self.client!r} {when}: {self.input!r} -> {self.output!r}"


@dataclass(frozen=True, slots=True)
class LinearizabilityResult(Generic[I, O]):
    """The verdict. True in a boolean context when the history is linearizable."""

    ok: bool
    explanation: str = "linearizable"
    #: The partition (key) that failed, when the history was partitioned.
    partition: Hashable | None = None
    #: On failure: the longest order the search found before it got stuck.
    linearized: tuple[Operation[I, O], ...] = field(default=())
    #: On failure: the operations that could not be placed next at that point.
    stuck: tuple[Operation[I, O], ...] = field(default=())
    #: True when the search gave up (``max_steps``) before reaching a verdict.
    inconclusive: bool = False

    def __bool__(self) -> bool:
        return self.ok


class HistoryRecorder(Generic[I, O]):
    """Records a history from live clients (threads or asyncio tasks).

    ``token = rec.call(client, input)`` just before sending a request;
    ``rec.ret(token, output)`` when its reply arrives, or ``rec.unknown(token)``
    when it timed out or the connection died (it may or may not have
    happened). ``rec.history()`` gives the operations; an operation never
    finished counts as unknown. ``clock`` must be monotonic.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        need_callable("HistoryRecorder(clock=...)", clock)
        self._clock = clock
        self._lock = threading.Lock()
        self._calls: list[tuple[Hashable, I, float]] = []
        self._returns: dict[int, tuple[O, float]] = {}

    def call(self, client: Hashable, input: I) -> int:
        with self._lock:
            self._calls.append((client, input, self._clock()))
            return len(self._calls) - 1

    def ret(self, token: int, output: O) -> None:
        with self._lock:
            self._need_token(token)
            self._returns[token] = (output, self._clock())

    def unknown(self, token: int) -> None:
        with self._lock:
            self._need_token(token)
            self._returns[token] = (UNKNOWN, math.inf)

    def _need_token(self, token: int) -> None:
        ok = is_int(token) and 0 <= token < len(self._calls)
        need(ok, "a HistoryRecorder token", token, "a value that call() returned")

    def history(self) -> list[Operation[I, O]]:
        with self._lock:
            history = []
            for token, (client, input, call) in enumerate(self._calls):
                output, ret = self._returns.get(token, (UNKNOWN, math.inf))
                history.append(Operation(client, input, output, call, ret))
            return history


def check_linearizable(
    history: Sequence[Operation[I, O]],
    model_step: Callable[[S, I], tuple[O, S]],
    initial_state: S,
    partition: Callable[[I], Hashable | None] | None = None,
    max_steps: int | None = 10_000_000,
) -> LinearizabilityResult[I, O]:
    """Is ``history`` linearizable with respect to ``model_step`` from ``initial_state``?

    ``max_steps`` bounds the model steps spent on each partition (about a
    minute at the default); past it the result is not ok and ``inconclusive``.
    The search is exponential in the worst case: a history that is *not*
    linearizable, with many operations in flight at once on one key, may need
    it. Partitioning per key keeps the number in flight per search small.
    """
    ok = isinstance(history, Iterable) and not isinstance(history, str | bytes)
    need(ok, "history", history, "a sequence of Operation values")
    history = list(history)
    for op in history:
        _need_operation(op)
    need_callable("model_step", model_step)
    need_callable("partition", partition, optional=True)
    positive = max_steps is None or (is_int(max_steps) and max_steps >= 1)
    need(positive, "max_steps", max_steps, "None (no limit) or an int >= 1")
    groups = _partition(history, partition)
    for key, ops in groups.items():
        result = _Search(ops, model_step, initial_state, max_steps).run()
        if not result.ok:
            if key is None:
                return result
            return LinearizabilityResult(
                False,
                f"in partition {key!r}: {result.explanation}",
                key,
                result.linearized,
                result.stuck,
            )
    return LinearizabilityResult(True)


def _need_operation(op: object) -> None:
    if not isinstance(op, Operation):
        raise UsageError(f"a history holds Operation values, not {op!r:.80}")
    need(is_number(op.call), f"the call time of {op!r:.80}", op.call, "a finite number")
    if op.unknown:
        return
    returned = op.ret == math.inf or is_number(op.ret)
    need(returned, f"the return time of {op!r:.80}", op.ret, "a number (inf: never returned)")
    if not op.call <= op.ret:
        raise UsageError(f"operation returned before it was called: {op.describe()}")


def _partition(
    history: Sequence[Operation[I, O]], partition: Callable[[I], Hashable | None] | None
) -> dict[Hashable | None, list[Operation[I, O]]]:
    if partition is None:
        return {None: list(history)}
    groups: dict[Hashable | None, list[Operation[I, O]]] = {}
    for op in history:
        key = partition(op.input)
        if key is None:
            return {None: list(history)}  # a multi-key operation: check the whole history
        try:
            groups.setdefault(key, []).append(op)
        except TypeError:
            raise UsageError(
                f"partition(input) must return a hashable key or None, got {key!r:.80} "
                f"for the input {op.input!r:.80}"
            ) from None
    return groups


class _Search(Generic[I, O, S]):
    """One depth-first search over one (sub-)history."""

    def __init__(
        self,
        ops: list[Operation[I, O]],
        step: Callable[[S, I], tuple[O, S]],
        initial: S,
        max_steps: int | None,
    ) -> None:
        self.ops = ops
        self.budget = -1 if max_steps is None else max_steps
        self.step = step
        self.initial = initial
        # Entries 1..2n: calls and returns in time order (calls first on ties, so
        # that touching intervals count as concurrent); entry 0 is the list head.
        order = sorted(
            [(op.call, 0, i) for i, op in enumerate(ops)]
            + [(math.inf if op.unknown else op.ret, 1, i) for i, op in enumerate(ops)]
        )
        n = len(order)
        self.is_call = [False] + [kind == 0 for _, kind, _ in order]
        self.op_of = [-1] + [i for _, _, i in order]
        position = {(kind, i): e + 1 for e, (_, kind, i) in enumerate(order)}
        self.match = [-1] + [position[(1, i)] if kind == 0 else -1 for _, kind, i in order]
        self.next = [*range(1, n + 1), -1]
        self.prev = [-1, *range(n)]
        # The deepest point reached, for the explanation.
        self.best_depth = -1
        self.best: tuple[tuple[int, ...], S, int, tuple[int, ...]] | None = None

    def _lift(self, e: int) -> None:
        for x in (e, self.match[e]):
            nxt, prv = self.next[x], self.prev[x]
            self.next[prv] = nxt
            if nxt != -1:
                self.prev[nxt] = prv

    def _unlift(self, e: int) -> None:
        for x in (self.match[e], e):  # reverse order of removal (dancing links)
            nxt, prv = self.next[x], self.prev[x]
            self.next[prv] = x
            if nxt != -1:
                self.prev[nxt] = x

    def candidates(self) -> tuple[list[int], int]:
        """The call entries that may go next, earliest return first; and the first return entry.

        An operation may go next iff it was called before every unplaced
        operation returned: its call precedes the first return entry left in
        the list. Trying the one that must finish soonest first follows the
        order the history most likely took, and seldom needs backtracking.
        """
        nxt, is_call, match = self.next, self.is_call, self.match
        calls = []
        e = nxt[0]
        while e != -1 and is_call[e]:
            calls.append(e)
            e = nxt[e]
        calls.sort(key=match.__getitem__)
        return calls, e

    def run(self) -> LinearizabilityResult[I, O]:
        ops, step, op_of = self.ops, self.step, self.op_of
        known_left = sum(not op.unknown for op in ops)
        state = self.initial
        linearized = 0
        seen: set[tuple[int, S]] = set()
        # One frame per placed operation: its candidates and how many were tried.
        frames: list[tuple[list[int], int, list[int]]] = [(*self.candidates(), [0])]
        path: list[tuple[int, S]] = []  # (call entry placed, state before it)
        budget = self.budget
        while known_left:
            cands, blocker, tried = frames[-1]
            while tried[0] < len(cands):
                e = cands[tried[0]]
                tried[0] += 1
                budget -= 1
                if budget == 0:
                    return self._gave_up(len(path))
                op = ops[op_of[e]]
                result = step(state, op.input)
                try:
                    output, new_state = result
                except (TypeError, ValueError):
                    raise UsageError(
                        "model_step must return an (output, next_state) pair, got "
                        f"{result!r:.80} for the input {op.input!r:.80}"
                    ) from None
                if not op.unknown and output != op.output:
                    continue
                config = (linearized | (1 << op_of[e]), new_state)
                try:
                    if config in seen:
                        continue
                except TypeError:
                    raise UsageError(
                        "model states must be hashable (tuples, frozensets, frozen "
                        f"dataclasses); model_step gave {new_state!r:.80} for {op.input!r:.80}"
                    ) from None
                seen.add(config)
                path.append((e, state))
                state, linearized = new_state, config[0]
                self._lift(e)
                known_left -= not op.unknown
                frames.append((*self.candidates(), [0]))
                break
            else:
                # Every candidate failed here: undo the last placement.
                self._note_stuck(path, state, cands, blocker)
                frames.pop()
                if not path:
                    return self._failure()
                e, state = path.pop()
                linearized &= ~(1 << op_of[e])
                self._unlift(e)
                known_left += not ops[op_of[e]].unknown
        return LinearizabilityResult(True)

    def _note_stuck(
        self, path: list[tuple[int, S]], state: S, cands: list[int], blocker: int
    ) -> None:
        if len(path) <= self.best_depth or blocker == -1:
            return
        self.best_depth = len(path)
        order = tuple(self.op_of[entry] for entry, _ in path)
        candidates = tuple(sorted(self.op_of[e] for e in cands))
        self.best = (order, state, self.op_of[blocker], candidates)

    def _gave_up(self, depth: int) -> LinearizabilityResult[I, O]:
        return LinearizabilityResult(
            False,
            f"inconclusive: gave up after {self.budget} model steps with {depth} of "
            f"{len(self.ops)} operations placed; raise max_steps, or partition the history",
            inconclusive=True,
        )

    def _failure(self) -> LinearizabilityResult[I, O]:
        assert self.best is not None
        order, state, blocked, candidates = self.best
        ops = self.ops
        lines = [
            f"not linearizable: {ops[blocked].describe()} returned, but no order of the "
            f"operations before it explains the outputs seen.",
            f"The longest valid order found places {len(order)} operation(s)"
            + (", ending with:" if order else "."),
        ]
        lines += [f"  {ops[i].describe()}" for i in order[-5:]]
        lines.append(f"Model state then: {state!r:.200}. Candidates for the next place:")
        for i in candidates:
            output, _ = self.step(state, ops[i].input)
            lines.append(f"  {ops[i].describe()}   (model would give {output!r})")
        return LinearizabilityResult(
            False,
            "\n".join(lines),
            None,
            tuple(ops[i] for i in order),
            tuple(ops[i] for i in candidates),
        )
