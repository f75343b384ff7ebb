"""Simulated executors for every effect but ``Append``: completions in virtual time.

Theory of operation
-------------------
:class:`SimEffects` implements the same :class:`~corosm.io.executor.Executor`
protocol as the production thread pool and timers, so the host routes to it
exactly as it routes to them. Each started effect becomes an :class:`IODone`
clock event: a ``Sleep`` after its own duration, anything else after a
latency drawn from the run's seeded generator, so independent I/O finishes in
any order. When the event fires, the effect's result is computed:

* a simulator given for the effect's type (``effects={Type: fn}``, looked up
  along the MRO, ``Call`` included) returns the result or raises the error:
  no real time passes, nothing real is called. It is a plain function: an
  ``async def`` is refused when the simulator is built (:func:`need_effects`),
  and a coroutine it returns anyway is closed and fails the effect with
  :class:`~corosm.errors.HandlerMisuse`;
* a ``Call`` without one runs its function for real, inline (keep such
  functions fast and deterministic, or simulate them), through the thread
  pool's own :func:`~corosm.io.threads.run_call`: a coroutine it returns
  fails the effect as it does in production;
* a ``Sleep`` returns None; any other effect without a simulator fails with
  a :class:`~corosm.errors.UsageError` that says how to provide one.

A cancelled request completes never (its event is dropped when it fires).
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import CoroutineType
from typing import Any

from corosm.core.effects import Call, Effect, Sleep
from corosm.errors import HandlerMisuse, UsageError
from corosm.io.executor import CompletionSink
from corosm.io.threads import run_call
from corosm.io.timers import LONGEST
from corosm.testing._args import need
from corosm.testing.sim.trace import Trace, short, show_error

EffectSim = Callable[[Effect[Any], random.Random], Any]
"""Simulates an effect: returns its result or raises its error."""


def need_effects(what: str, effects: object) -> None:
    """Check that ``effects`` is None or ``{EffectClass: fn(effect, rng)}``, no ``fn`` async."""
    ok = effects is None or (
        isinstance(effects, Mapping)
        and all(
            isinstance(cls, type) and issubclass(cls, Effect) and callable(fn)
            for cls, fn in effects.items()
        )
    )
    need(ok, what, effects, "None or a mapping {EffectClass: fn(effect, rng)}")
    for cls, fn in effects.items() if isinstance(effects, Mapping) else ():
        if inspect.iscoroutinefunction(fn):  # a partial of one too; not an async __call__
            raise UsageError(
                f"{what}[{cls.__name__}] is {_name(fn)}, an async def: simulator functions "
                "are plain functions fn(effect, rng) -> value that return the effect's "
                "result or raise its error; make it a def"
            )


@dataclass(frozen=True, slots=True)
class IODone:
    """Clock event: effect ``request`` finishes."""

    generation: int
    request: int
    effect: Effect[Any]


class SimEffects:
    """Carries out ``Call``, ``Sleep`` and custom effects in virtual time (see module docs)."""

    def __init__(
        self,
        *,
        generation: int,
        rng: random.Random,
        latency: tuple[float, float],
        effects: Mapping[type[Effect[Any]], EffectSim],
        trace: Trace,
        now: Callable[[], float],
        schedule: Callable[[float, object], None],
    ) -> None:
        self.generation = generation
        self._rng, self._latency, self._effects = rng, latency, effects
        self._trace, self._now, self._schedule = trace, now, schedule
        self._sink: CompletionSink | None = None
        self._cancelled: set[int] = set()

    def start(self, sink: CompletionSink) -> None:
        self._sink = sink

    def submit(self, requests: Sequence[tuple[int, Effect[Any]]]) -> None:
        for request, effect in requests:
            if isinstance(effect, Sleep):
                delay = min(effect.seconds, LONGEST)  # as the runtime's timers: io.timers
            else:
                delay = self._rng.uniform(*self._latency)
            self._schedule(delay, IODone(self.generation, request, effect))

    def cancel(self, request: int) -> None:
        self._cancelled.add(request)

    def close(self) -> None:
        self._sink = None

    def on_done(self, event: IODone) -> None:
        """The effect of ``event`` finishes now: compute its result and post it."""
        if event.request in self._cancelled or self._sink is None:
            return
        value: Any = None
        error: BaseException | None = None
        try:
            value = self._perform(event.effect)
        except Exception as exc:
            error = exc
        result = short(value) if error is None else f"ERROR {show_error(error)}"
        self._trace.add(self._now(), "io", f"#{event.request} done: {result}")
        self._sink([(event.request, value, error)])

    def _perform(self, effect: Effect[Any]) -> Any:
        for cls in type(effect).__mro__:
            sim = self._effects.get(cls)
            if sim is not None:
                return _not_a_coroutine(sim(effect, self._rng), cls)
        if isinstance(effect, Call):
            return run_call(effect)  # refuses an awaitable result, as the thread pool does
        if isinstance(effect, Sleep):
            return None
        raise UsageError(
            f"no simulated executor for {type(effect).__name__}; pass "
            f"effects={{{type(effect).__name__}: fn}} to the simulator"
        )


def _not_a_coroutine(value: Any, cls: type) -> Any:
    """``value``, unless a simulator function returned a coroutine: closed, and refused.

    :func:`need_effects` refuses an ``async def`` up front; this catches the
    shapes it cannot see, e.g. an object whose ``__call__`` is async.
    """
    if not isinstance(value, CoroutineType):
        return value
    value.close()  # never run: Python would warn that it was never awaited
    raise HandlerMisuse(
        f"the simulator function for {cls.__name__} returned a coroutine of "
        f"{value.__qualname__}() (closed without running): simulator functions are plain "
        "functions fn(effect, rng) -> value that return the effect's result or raise its error"
    )


def _name(fn: object) -> str:
    """A function's qualified name, or the repr of what has none (a partial, an object)."""
    qualname = getattr(fn, "__qualname__", None)
    return qualname if isinstance(qualname, str) else repr(fn)
