"""The pure core: effects, futures, the handler context and the stepper.

Nothing in this package performs I/O, starts threads, reads clocks or imports
asyncio (a test checks its imports). Any host can drive it: the asyncio
runtime in :mod:`corosm.runtime`, or the simulator in :mod:`corosm.testing`.
"""

from corosm.core.context import Context
from corosm.core.effects import Append, Call, Effect, Sleep
from corosm.core.events import (
    Action,
    CancelIO,
    ClientId,
    Event,
    InputArrived,
    IOCompleted,
    Reply,
    ReplyError,
    StartIO,
)
from corosm.core.futures import Future, Group
from corosm.core.machine import Keys, Machine, Order, Policy
from corosm.core.stepper import Stepper

__all__ = [
    "Action",
    "Append",
    "Call",
    "CancelIO",
    "ClientId",
    "Context",
    "Effect",
    "Event",
    "Future",
    "Group",
    "IOCompleted",
    "InputArrived",
    "Keys",
    "Machine",
    "Order",
    "Policy",
    "Reply",
    "ReplyError",
    "Sleep",
    "StartIO",
    "Stepper",
]
