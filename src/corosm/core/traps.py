"""The one place where a handler suspends.

Every suspension in corosm goes through :func:`suspend`: it yields a
:class:`Wait` value to whoever drives the handler's coroutine (the stepper).
The stepper resumes the coroutine, by ``send(None)``, once the wait is
satisfied; the awaiting code then reads its results from the futures. Any
other value that reaches the stepper came from a foreign awaitable (an asyncio
future, ``asyncio.sleep``) and is rejected there.
"""

from __future__ import annotations

import enum
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corosm.core.futures import Future


class WaitMode(enum.Enum):
    """When a :class:`Wait` is satisfied."""

    ALL = "all"  # every future is done, or one of them failed
    ANY = "any"  # one future is done (the others are cancelled)


# For the hot paths: in Python 3.11 ``WaitMode.ALL`` goes through the enum
# metaclass's ``__getattr__`` hook, about 900 instructions a lookup.
WAIT_ALL = WaitMode.ALL


@dataclass(slots=True)
class Wait:
    """Trap: suspend the handler until ``futures`` satisfy ``mode``.

    Made at every suspension, so not a frozen dataclass (three times the
    cost to construct); nothing changes it once made.
    """

    futures: tuple[Future[object], ...]
    mode: WaitMode


def suspend(wait: Wait) -> Generator[Wait, None, None]:
    """Yield ``wait`` to the stepper; return when it resumes the handler."""
    yield wait
