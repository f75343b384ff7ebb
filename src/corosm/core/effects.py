"""Effects: values that describe an I/O request.

A handler never performs I/O itself. It builds an effect (a frozen value that
says *what* should happen) and hands it to the context; the host that drives
the stepper decides *how*: a thread, the journal thread, a timer, or a
simulated world. Because effects are plain values, a run can be recorded,
compared and replayed.

The built-in effects are :class:`Append` (the journal), :class:`Call` (a
blocking function on a worker thread) and :class:`Sleep` (a timer). A user
defines a new kind by subclassing :class:`Effect` and registering an executor
for it with the runtime. The type parameter is the effect's result type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from inspect import CO_ASYNC_GENERATOR, CO_COROUTINE
from types import CodeType, FunctionType
from typing import Any, Final, Generic, TypeVar

from corosm.core.fields import slot_setter
from corosm.errors import HandlerMisuse, UsageError

T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True, slots=True)
class Effect(Generic[T_co]):
    """Base class of all effects. ``T_co`` is the type of the effect's result."""


@dataclass(frozen=True, slots=True, init=False)
class Append(Effect[None]):
    """Append ``record`` to the journal.

    Appends complete in the order they were started. When one completes, the
    machine's ``apply(state, record)`` runs on the state before any handler
    resumes: the same function recovery uses, so live state follows log order.
    Once started an append cannot be cancelled: it is, or will be, in the log.
    """

    record: Any

    def __init__(self, record: Any) -> None:
        # Built for every write: the field set by slot (see corosm.core.fields).
        set_append_record(self, record)


#: ``set_append_record(effect, record)``: the slot's own setter. The stepper
#: uses it too, to build a logged write's ``Append`` without this interpreted
#: ``__init__``.
set_append_record = slot_setter(Append, "record")


#: The code flags of an ``async def``: a coroutine function or an async generator.
_ASYNC: Final = CO_COROUTINE | CO_ASYNC_GENERATOR


@dataclass(frozen=True, slots=True)
class Call(Effect[T_co]):
    """Run the blocking callable ``fn(*args)`` on a worker thread; its result is the value.

    ``fn`` must not be an ``async def`` (nor a bound method or
    ``functools.partial`` of one, nor an object whose ``__call__`` is one):
    what it returns would never run on a worker thread, so it is refused
    here with :class:`HandlerMisuse`. A plain function that returns a
    coroutine or another awaitable all the same is caught when it returns:
    the executors that run a ``Call`` close the coroutine and fail the
    effect with :class:`HandlerMisuse` instead.
    """

    fn: Callable[..., T_co]
    args: tuple[Any, ...] = field(default=())

    def __post_init__(self) -> None:
        fn = self.fn
        if not callable(fn):
            raise UsageError(f"Call needs a callable, got {fn!r}")
        # What inspect.iscoroutinefunction() asks, at a tenth of its cost: a
        # function or a bound method has its code at hand, anything else is looked into.
        code = getattr(fn, "__code__", None)
        if code is None:
            code = _code_called(fn)
        if type(code) is CodeType and code.co_flags & _ASYNC:
            # The machine's own bug: the class the executors use when they find it later.
            made = "coroutine" if code.co_flags & CO_COROUTINE else "async generator"
            raise HandlerMisuse(
                f"Call runs a blocking function on a worker thread, and {fn!r} runs the "
                f"'async def' {code.co_qualname}(), whose {made} would never run there: pass "
                "a plain function (an async helper that awaits only ctx effects is awaited in "
                "the handler itself)"
            )
        if not isinstance(self.args, tuple):
            raise UsageError(f"Call args must be a tuple, got {self.args!r}")


def _code_called(fn: object) -> object:
    """The code that calling ``fn`` runs, for what has no ``__code__`` of its own.

    A ``functools.partial`` (of a partial...) runs its function's; an object
    runs its class's ``__call__``; a builtin runs none of Python's: None.
    """
    if isinstance(fn, partial):
        while isinstance(fn, partial):
            fn = fn.func
        code = getattr(fn, "__code__", None)
        if code is not None:
            return code
    # Looked up on the class, as a call does; a builtin's is a slot wrapper, without code.
    call = getattr(type(fn), "__call__", None)  # noqa: B004 (the method, not a callable() test)
    return call.__code__ if type(call) is FunctionType else None


@dataclass(frozen=True, slots=True)
class Sleep(Effect[None]):
    """Complete after ``seconds`` of the host's clock (virtual time in simulation).

    ``seconds`` is an int or a float >= 0: not a bool, not NaN; ``math.inf``
    is allowed (the runtime's timers then never fire).
    """

    seconds: float

    def __post_init__(self) -> None:
        seconds = self.seconds
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
            raise UsageError(f"Sleep needs a number of seconds >= 0, got {seconds!r}")
