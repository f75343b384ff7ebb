"""The handler's view of the machine: ``ctx``.

A handler receives one :class:`Context`. ``ctx.state`` is always the machine's
latest state, read at the moment it is used; after any ``await`` it may differ
from what it was before (other inputs ran meanwhile), unless the machine's
policy keeps them apart. Everything else on the context starts or awaits
effects. ``start`` never suspends; every ``async`` method suspends at most
once, through :mod:`corosm.core.traps`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from corosm.core.effects import Append, Call, Effect, Sleep
from corosm.core.futures import Future
from corosm.core.traps import Wait, WaitMode, suspend
from corosm.errors import EffectTimeout, UsageError

if TYPE_CHECKING:
    from corosm.core.stepper import Stepper

S = TypeVar("S")
T = TypeVar("T")


class Context(Generic[S]):
    """What a handler uses to read state and perform I/O."""

    __slots__ = ("_stepper",)

    def __init__(self, stepper: Stepper[S, Any, Any]) -> None:
        self._stepper = stepper

    @property
    def state(self) -> S:
        """The machine's state as it is now."""
        return self._stepper.state

    @state.setter
    def state(self, value: S) -> None:
        self._stepper.state = value

    def start(self, effect: Effect[T]) -> Future[T]:
        """Start ``effect`` without suspending; await the returned future later."""
        if not isinstance(effect, Effect):
            raise UsageError(f"ctx.start() takes a corosm Effect, not {effect!r}")
        return self._stepper.start_effect(effect)

    async def perform(self, effect: Effect[T]) -> T:
        """Start ``effect`` and wait for its result."""
        return await self.start(effect)

    # The built-in effects below skip start()'s isinstance check (an ABC-style
    # Generic check that costs about as much as building the effect itself).

    async def append(self, record: Any) -> None:
        """Append ``record`` to the journal; return once it is durable and applied."""
        await self._stepper.start_effect(Append(record))

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the blocking ``fn(*args)`` on a worker thread and return its result."""
        return await self._stepper.start_effect(Call(fn, args))

    async def sleep(self, seconds: float) -> None:
        """Suspend this handler for ``seconds`` of the host's clock."""
        await self._stepper.start_effect(Sleep(seconds))

    async def all(self, *futures: Future[Any]) -> list[Any]:
        """Wait for every future; return their results in order.

        Raises the error of the first future that fails, as soon as it fails;
        the others keep running.
        """
        pending = _check_futures("all", futures)
        if pending:
            await _Suspend(Wait(pending, WaitMode.ALL))
        for future in futures:
            if future.failed():
                future.result()  # raises its error
        return [f.result() for f in futures]

    async def any(self, *futures: Future[Any]) -> tuple[int, Any]:
        """Wait for the first future to finish; return ``(index, result)``.

        Raises that future's error if it failed. The others are cancelled,
        except journal appends, which always run to completion.
        """
        _check_futures("any", futures)
        if not any(f.done() for f in futures):
            await _Suspend(Wait(tuple(futures), WaitMode.ANY))
        for index, future in enumerate(futures):
            if future.done():
                self._stepper.cancel_futures(futures)
                return index, future.result()
        raise AssertionError("unreachable: a satisfied ANY wait has a finished future")

    async def timeout(self, future: Future[T], seconds: float) -> T:
        """Wait for ``future`` for at most ``seconds``; raise EffectTimeout after that."""
        _check_futures("timeout", (future,))
        timer = self.start(Sleep(seconds))
        index, value = await self.any(future, timer)
        if index == 1:
            raise EffectTimeout(f"{future.effect!r} did not finish within {seconds} s")
        result: T = value
        return result


class _Suspend:
    """Awaitable wrapper around the one trap, for waits on several futures."""

    __slots__ = ("_wait",)

    def __init__(self, wait: Wait) -> None:
        self._wait = wait

    def __await__(self) -> Any:
        return suspend(self._wait)


def _check_futures(name: str, futures: tuple[Future[Any], ...]) -> tuple[Future[object], ...]:
    """Validate a wait's arguments; return the futures that are still pending."""
    if not futures:
        raise UsageError(f"ctx.{name}() needs at least one future")
    for future in futures:
        if not isinstance(future, Future):
            raise UsageError(f"ctx.{name}() takes futures from ctx.start(), not {future!r}")
    return tuple(f for f in futures if not f.done())
