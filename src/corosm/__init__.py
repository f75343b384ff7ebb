"""corosm: coroutine state machines.

A handler is written as straight-line code (``await ctx.append(record)``) but
suspends at every I/O request while one event loop keeps feeding other inputs
to the machine. See README.md for a tour and docs/semantics.md for the contract.
"""

from corosm.core import (
    Append,
    Call,
    Context,
    Effect,
    Future,
    Group,
    Keys,
    Machine,
    Order,
    Policy,
    Sleep,
    Stepper,
)
from corosm.errors import (
    CorosmError,
    CorruptJournal,
    DataDirInUse,
    DataError,
    EffectCancelled,
    EffectError,
    EffectTimeout,
    ForeignAwaitError,
    HandlerError,
    HandlerMisuse,
    InternalError,
    JournalClosed,
    JournalError,
    Overloaded,
    Stopped,
    UsageError,
)
from corosm.runtime.durable import DurableOptions, open, open_blocking

__version__ = "0.1.0"

__all__ = [
    "Append",
    "Call",
    "Context",
    "CorosmError",
    "CorruptJournal",
    "DataDirInUse",
    "DataError",
    "DurableOptions",
    "Effect",
    "EffectCancelled",
    "EffectError",
    "EffectTimeout",
    "ForeignAwaitError",
    "Future",
    "Group",
    "HandlerError",
    "HandlerMisuse",
    "InternalError",
    "JournalClosed",
    "JournalError",
    "Keys",
    "Machine",
    "Order",
    "Overloaded",
    "Policy",
    "Sleep",
    "Stepper",
    "Stopped",
    "UsageError",
    "__version__",
    "open",
    "open_blocking",
]
