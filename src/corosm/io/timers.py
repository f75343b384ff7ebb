"""Timers on the event loop: the executor for ``Sleep`` effects.

A sleep needs no thread: ``loop.call_later`` completes it on the loop itself.
Cancelling a sleep (e.g. a timeout that lost an ``any``) cancels its handle.
A sleep longer than :data:`LONGEST` waits that long, which is forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from corosm.core.effects import Effect, Sleep
from corosm.errors import UsageError
from corosm.io.executor import CompletionSink

#: The longest delay a timer is armed for, in seconds (100 years, as uvloop does):
#: a longer sleep, ``math.inf`` too, never fires. asyncio's own loop raises
#: ``OverflowError`` on an int too large for a float.
LONGEST = 100 * 365 * 24 * 3600.0


class LoopTimerExecutor:
    """Completes ``Sleep(seconds)`` after ``seconds`` on the running loop's clock."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sink: CompletionSink | None = None
        self._handles: dict[int, asyncio.TimerHandle] = {}

    def start(self, sink: CompletionSink) -> None:
        self._loop = asyncio.get_running_loop()
        self._sink = sink

    def submit(self, requests: Sequence[tuple[int, Effect[Any]]]) -> None:
        loop, sink = self._loop, self._sink
        if loop is None or sink is None:
            raise UsageError("LoopTimerExecutor.submit() before start()")
        for request, effect in requests:
            if not isinstance(effect, Sleep):
                sink([(request, None, UsageError(f"{effect!r} is not a Sleep effect"))])
                continue
            delay = min(effect.seconds, LONGEST)  # Sleep checked it is a number >= 0
            self._handles[request] = loop.call_later(delay, self._fire, request)

    def _fire(self, request: int) -> None:
        self._handles.pop(request, None)
        assert self._sink is not None
        self._sink([(request, None, None)])

    def cancel(self, request: int) -> None:
        handle = self._handles.pop(request, None)
        if handle is not None:
            handle.cancel()

    def close(self) -> None:
        """Cancel pending timers; safe from any thread (the runtime closes off the loop)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._handles.clear()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._cancel_all()
        else:
            loop.call_soon_threadsafe(self._cancel_all)

    def _cancel_all(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()
