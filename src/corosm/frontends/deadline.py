"""One timer per connection, re-armed only when a deadline comes sooner.

Both front ends (HTTP and RESP) keep a single loop timer per connection for
all of its deadlines (request, response, idle): arming it for a later time
than it already has is a no-op, for an earlier one replaces it. When it
fires, the connection works out which deadline passed and arms the next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def rearm(
    timer: asyncio.TimerHandle | None,
    loop: asyncio.AbstractEventLoop,
    when: float,
    callback: Callable[[], None],
) -> asyncio.TimerHandle:
    """``timer`` if it fires no later than ``when``; else a new one at ``when``."""
    if timer is not None:
        if timer.when() <= when:
            return timer
        timer.cancel()
    return loop.call_at(when, callback)
