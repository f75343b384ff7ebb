"""Futures: the result of an effect that was started but may not be done.

``ctx.start(effect)`` returns a :class:`Future` at once; the I/O runs while the
handler goes on. Awaiting an unfinished future suspends the handler through
the one trap in :mod:`corosm.core.traps`; awaiting a finished one returns (or
raises) at once. Only the stepper completes futures.

``ctx.all(...)`` and ``ctx.any(...)`` return a :class:`Group`: futures awaited
together, as one value, so that ``ctx.timeout`` can wait on a group as it
waits on one future.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from corosm.core.traps import WAIT_ALL, Wait, WaitMode, suspend
from corosm.errors import InternalError, UsageError

if TYPE_CHECKING:
    from corosm.core.effects import Effect

T = TypeVar("T")

_PENDING: Any = object()


class Future(Generic[T]):
    """The eventual result of one started effect."""

    __slots__ = ("_error", "_value", "effect", "owner", "request", "waiter")

    def __init__(self, request: int, effect: Effect[T], owner: object) -> None:
        self.request = request
        self.effect = effect
        # The stepper that started it: only its handlers may await it, and only
        # it completes or cancels it (request numbers are per stepper).
        self.owner = owner
        self._value: T = _PENDING
        self._error: BaseException | None = None
        # The stepper's task that is suspended on this future, if any.
        self.waiter: object | None = None

    def done(self) -> bool:
        """True once the effect has completed, successfully or not."""
        return self._value is not _PENDING or self._error is not None

    def failed(self) -> bool:
        """True if the effect completed with an error."""
        return self._error is not None

    def result(self) -> T:
        """The effect's value; raises its error. Only valid once :meth:`done`."""
        if self._error is not None:
            raise self._error
        if self._value is _PENDING:
            raise InternalError(f"result() of unfinished future for {self.effect!r}")
        return self._value

    def set_result(self, value: T) -> None:
        """Complete with a value (the stepper's job)."""
        self._value = value

    def set_error(self, error: BaseException) -> None:
        """Complete with an error (the stepper's job)."""
        self._error = error

    def __await__(self) -> Generator[Wait, None, T]:
        if self._value is _PENDING and self._error is None:  # not done()
            yield from suspend(Wait((self,), WAIT_ALL))  # type: ignore[arg-type]
        return self.result()

    def __repr__(self) -> str:
        if self._error is not None:
            state = f"failed: {self._error!r}"
        elif self._value is not _PENDING:
            state = f"done: {self._value!r}"
        else:
            state = "pending"
        return f"<Future #{self.request} {self.effect!r} {state}>"


class Group(Generic[T]):
    """Futures awaited together: what ``ctx.all(...)`` and ``ctx.any(...)`` return.

    ``await group`` suspends until the group is :meth:`done`:

    * ``WaitMode.ALL``: every future is done, or one failed. The result is
      the list of values in argument order; a failure raises the error of the
      first failed future in argument order, and the others keep running.
    * ``WaitMode.ANY``: one future is done. The result is ``(index, value)``
      of the first done in argument order (or its error); the other futures
      are then cancelled through ``cancel``, except journal appends and
      futures another handler is awaiting.

    A group starts nothing itself: it is a wait, not an effect.
    """

    __slots__ = ("_cancel", "futures", "mode")

    def __init__(
        self,
        futures: tuple[Future[Any], ...],
        mode: WaitMode,
        cancel: Callable[[tuple[Future[Any], ...]], None],
    ) -> None:
        if not futures:
            raise UsageError(f"ctx.{mode.value}() needs at least one future")
        for future in futures:
            if not isinstance(future, Future):
                raise UsageError(
                    f"ctx.{mode.value}() takes futures from ctx.start(), not {future!r}"
                )
        self.futures = futures
        self.mode = mode
        self._cancel = cancel

    def done(self) -> bool:
        """True once awaiting the group would not suspend."""
        if self.mode is WAIT_ALL:
            return all(f.done() for f in self.futures) or any(f.failed() for f in self.futures)
        return any(f.done() for f in self.futures)

    def result(self) -> T:
        """The group's result (see the class docs); raises its error. Only valid once done."""
        futures = self.futures
        if self.mode is WAIT_ALL:
            for future in futures:
                if future.failed():
                    future.result()  # raises its error
            return cast(T, [f.result() for f in futures])
        for index, future in enumerate(futures):
            if future.done():
                self._cancel(futures)
                return cast(T, (index, future.result()))
        raise InternalError(f"result() of an unfinished {self!r}")

    def __await__(self) -> Generator[Wait, None, T]:
        if not self.done():
            pending = tuple(f for f in self.futures if not f.done())
            yield from suspend(Wait(pending, self.mode))
        return self.result()

    def __repr__(self) -> str:
        effects = ", ".join(repr(f.effect) for f in self.futures)
        return f"ctx.{self.mode.value}({effects})"
