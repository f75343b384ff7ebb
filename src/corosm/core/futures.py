"""Futures: the result of an effect that was started but may not be done.

``ctx.start(effect)`` returns a :class:`Future` at once; the I/O runs while the
handler goes on. Awaiting an unfinished future suspends the handler through
the one trap in :mod:`corosm.core.traps`; awaiting a finished one returns (or
raises) at once. Only the stepper completes futures.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from corosm.core.traps import Wait, WaitMode, suspend
from corosm.errors import InternalError

if TYPE_CHECKING:
    from corosm.core.effects import Effect

T = TypeVar("T")

_PENDING: Any = object()


class Future(Generic[T]):
    """The eventual result of one started effect."""

    __slots__ = ("_error", "_value", "effect", "request", "waiter")

    def __init__(self, request: int, effect: Effect[T]) -> None:
        self.request = request
        self.effect = effect
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
            yield from suspend(Wait((self,), WaitMode.ALL))  # type: ignore[arg-type]
        return self.result()

    def __repr__(self) -> str:
        if self._error is not None:
            state = f"failed: {self._error!r}"
        elif self._value is not _PENDING:
            state = f"done: {self._value!r}"
        else:
            state = "pending"
        return f"<Future #{self.request} {self.effect!r} {state}>"
