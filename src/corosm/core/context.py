"""The handler's view of the machine: ``ctx``.

A handler receives one :class:`Context`. ``ctx.state`` is always the machine's
latest state, read at the moment it is used; after any ``await`` it may differ
from what it was before (other inputs ran meanwhile), unless the machine's
policy keeps them apart. Everything else on the context starts or awaits
effects, in pairs: each ``await ctx.X(...)`` that performs an effect has a
``ctx.start_X(...)`` twin taking the same arguments, which starts the effect
without suspending and returns its future (``perform``/``start`` for any
effect, ``append``/``start_append``, ``call``/``start_call``,
``sleep``/``start_sleep``). The awaiting methods stay coroutines, so a
forgotten ``await`` is flagged (Python's "never awaited" warning, mypy's
``unused-coroutine``) instead of quietly starting I/O that nobody waits for.

``all``, ``any`` and ``timeout`` wait; every wait suspends the handler at most
once per completion, through :mod:`corosm.core.traps`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from corosm.core.effects import Append, Call, Effect, Sleep
from corosm.core.futures import Future, Group
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
        if not self._stepper._in_handler:  # the state would part from the journal
            raise UsageError("ctx.state was set outside a running handler")
        self._stepper.state = value

    # -- start without suspending: each returns a future --------------------------

    def start(self, effect: Effect[T]) -> Future[T]:
        """Start ``effect`` without suspending; await the returned future later."""
        if not isinstance(effect, Effect):
            raise UsageError(f"ctx.start() takes a corosm Effect, not {effect!r}")
        return self._stepper.start_effect(effect)

    # The built-in effects below skip start()'s isinstance check (an ABC-style
    # Generic check that costs about as much as building the effect itself).

    def start_append(self, record: Any) -> Future[None]:
        """Start appending ``record`` (as :meth:`append`) without suspending."""
        return self._stepper.start_effect(Append(record))

    def start_call(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Start ``fn(*args)`` on a worker thread (as :meth:`call`) without suspending."""
        return self._stepper.start_effect(Call(fn, args))

    def start_sleep(self, seconds: float) -> Future[None]:
        """Start a timer of ``seconds`` (as :meth:`sleep`) without suspending."""
        return self._stepper.start_effect(Sleep(seconds))

    # -- start and wait -------------------------------------------------------------

    async def perform(self, effect: Effect[T]) -> T:
        """Start ``effect`` and wait for its result."""
        return await self.start(effect)

    async def append(self, record: Any) -> None:
        """Append ``record`` to the journal; return once it is durable and applied."""
        await self._stepper.start_effect(Append(record))

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the blocking ``fn(*args)`` on a worker thread and return its result."""
        return await self._stepper.start_effect(Call(fn, args))

    async def sleep(self, seconds: float) -> None:
        """Suspend this handler for ``seconds`` of the host's clock."""
        await self._stepper.start_effect(Sleep(seconds))

    # -- wait for started effects ------------------------------------------------------

    def all(self, *futures: Future[Any]) -> Group[list[Any]]:
        """Await every future; the result is their values, in argument order.

        Raises the error of the first future that fails, as soon as it fails;
        the others keep running.
        """
        return Group(futures, WaitMode.ALL, self._stepper.cancel_futures)

    def any(self, *futures: Future[Any]) -> Group[tuple[int, Any]]:
        """Await the first future to finish; the result is ``(index, value)``.

        Raises that future's error if it failed. The others are cancelled,
        except journal appends, which always run to completion, and futures
        another handler is awaiting (it gets their outcome).
        """
        return Group(futures, WaitMode.ANY, self._stepper.cancel_futures)

    async def timeout(self, waitable: Future[T] | Group[T], seconds: float) -> T:
        """Await a future, or a ``ctx.all``/``ctx.any`` group, for at most ``seconds``.

        Returns what awaiting ``waitable`` returns, and cancels the timer. If
        the timer finishes first, the unfinished futures are cancelled
        (journal appends excepted) and :class:`EffectTimeout` is raised. A
        wait that is refused (a future another handler awaits) cancels the
        timer too. ``seconds`` is a number >= 0 (``math.inf``: no limit).
        """
        if isinstance(waitable, Future):
            futures: tuple[Future[Any], ...] = (waitable,)
        elif isinstance(waitable, Group):
            futures = waitable.futures
        else:
            raise UsageError(
                "ctx.timeout() takes a future from ctx.start() or a group from "
                f"ctx.all()/ctx.any(), not {waitable!r}"
            )
        timer_effect = Sleep(seconds)  # checks seconds even when no timer is needed
        if waitable.done():
            return waitable.result()
        stepper = self._stepper
        timer = stepper.start_effect(timer_effect)
        try:
            while not waitable.done():
                # Wake on any progress, then look again: a group may need several completions.
                pending: tuple[Future[Any], ...] = (*(f for f in futures if not f.done()), timer)
                await _Suspend(Wait(pending, WaitMode.ANY))
                if timer.done() and not waitable.done():
                    stepper.cancel_futures(futures)
                    timer.result()  # a failed timer raises its own error
                    what = futures[0].effect if isinstance(waitable, Future) else waitable
                    raise EffectTimeout(f"{what!r} did not finish within {seconds} s")
        finally:  # done, timed out, or the wait refused: the timer is not needed any more
            stepper.cancel_futures((timer,))
        return waitable.result()


class _Suspend:
    """Awaitable wrapper around the one trap, for waits on several futures."""

    __slots__ = ("_wait",)

    def __init__(self, wait: Wait) -> None:
        self._wait = wait

    def __await__(self) -> Any:
        return suspend(self._wait)
