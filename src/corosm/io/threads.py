"""Blocking calls on worker threads: the executor for ``Call`` effects.

Each ``Call(fn, args)`` runs on a thread of a bounded pool, through
:func:`run_call`, which refuses a result that is a coroutine or another
awaitable (the function was async after all). Completions are posted to the
sink one by one, but the runtime's sink wakes the loop only when its inbox
goes from empty to non-empty, so a burst of finished calls crosses to the
loop thread once. A call the pool refuses to take (no worker thread could be
started) fails alone, with the pool's error: ``submit`` raises only before
``start``, as the executor protocol asks.

Closing never waits for a call that is still running: a running Python
function cannot be interrupted, and one that never returns would hang
``Runtime.stop`` (and every ``async with`` exit built on it) for good. So
``close`` cancels the queued calls, joins the worker threads only when no call
is left running, and otherwise logs one warning naming the calls it abandons
and leaves their threads to finish on their own; their completions are
dropped. Such a thread still holds up interpreter exit until its call returns:
``concurrent.futures`` workers are not daemon threads, and an exit hook joins
them whatever ``shutdown(wait=False)`` was told.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable, Sequence
from types import CoroutineType
from typing import Any, Final, TypeVar

from corosm.core.effects import Call, Effect
from corosm.errors import HandlerMisuse, UsageError
from corosm.io.executor import CompletionSink

log: Final = logging.getLogger("corosm.runtime")

T = TypeVar("T")

# Request -> (its future, the function it runs). Worker threads remove their own
# entry when the call is done; each single dict operation is atomic under the GIL.
_Running = dict[int, tuple["concurrent.futures.Future[Any]", Callable[..., Any]]]


class ThreadPoolCallExecutor:
    """Runs ``Call`` effects on up to ``max_workers`` threads."""

    def __init__(self, max_workers: int = 16) -> None:
        if type(max_workers) is not int or max_workers < 1:
            raise UsageError(f"call threads must be an int of at least 1, got {max_workers!r}")
        self._max_workers = max_workers
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._sink: CompletionSink | None = None
        self._running: _Running = {}

    def start(self, sink: CompletionSink) -> None:
        self._sink = sink
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._max_workers, thread_name_prefix="corosm-call"
        )

    def submit(self, requests: Sequence[tuple[int, Effect[Any]]]) -> None:
        pool, sink = self._pool, self._sink
        if pool is None or sink is None:
            raise UsageError("ThreadPoolCallExecutor.submit() before start()")
        for request, effect in requests:
            if not isinstance(effect, Call):
                sink([(request, None, UsageError(f"{effect!r} is not a Call effect"))])
                continue
            try:
                future = pool.submit(run_call, effect)
            except Exception as exc:  # e.g. no thread could be started: this call alone fails
                sink([(request, None, exc)])
                continue
            self._running[request] = (future, effect.fn)
            future.add_done_callback(_poster(request, sink, self._running))

    def cancel(self, request: int) -> None:
        entry = self._running.get(request)
        if entry is not None:
            # A call that has not started is cancelled (its done callback forgets
            # it); one that has keeps its entry until it returns, so that close()
            # still knows it is running. Its late completion is ignored upstream.
            entry[0].cancel()

    def close(self) -> None:
        """Cancel queued calls and release the pool without waiting for running ones.

        The worker threads are joined when no call is running. Calls still
        running are named in one warning and abandoned: their threads finish
        on their own and their completions are dropped.
        """
        pool = self._pool
        if pool is None:
            return
        self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)  # nothing queued will start now
        running, self._running = self._running, {}
        abandoned = [fn for future, fn in running.copy().values() if not future.done()]
        running.clear()  # a late completion finds no entry and is dropped
        if not abandoned:
            pool.shutdown(wait=True)  # only idle threads are left: join them
            return
        log.warning(
            "closing with %d call(s) still running: %s; their worker threads are left "
            "to finish on their own (a running Python function cannot be interrupted)",
            len(abandoned),
            ", ".join(_name(fn) for fn in abandoned),
        )


def run_call(call: Call[T]) -> T:
    """Run ``call.fn(*call.args)`` here, on a worker thread, and return its value.

    A value that is a coroutine, or any other awaitable, would reach the
    handler unawaited: nothing on this thread runs it. A coroutine is closed
    without running (so Python does not warn that it was never awaited), and
    :class:`HandlerMisuse` is raised instead, naming the function.
    """
    value = call.fn(*call.args)
    # One lookup on the value's class: about 0.2 us, here on the worker thread.
    if getattr(type(value), "__await__", None) is None:
        return value
    if isinstance(value, CoroutineType):
        what = f"a coroutine of {value.__qualname__}() (closed without running)"
        value.close()
    else:
        what = f"an awaitable {type(value).__name__}"
    raise HandlerMisuse(
        f"Call ran {_name(call.fn)} on a worker thread and it returned {what}, which nothing "
        "there awaits: pass a plain blocking function that returns its result (an async "
        "helper that awaits only ctx effects is awaited in the handler itself)"
    )


def _poster(request: int, sink: CompletionSink, running: _Running) -> Any:
    def post(future: concurrent.futures.Future[Any]) -> None:
        if running.pop(request, None) is None or future.cancelled():
            return  # abandoned by close(), or cancelled before it ran
        error = future.exception()
        sink([(request, None if error is not None else future.result(), error)])

    return post


def _name(fn: Callable[..., Any]) -> str:
    """``module.Qualified.name`` of a function, or its repr (a partial, a callable object)."""
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(qualname, str):
        return repr(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{qualname}" if isinstance(module, str) else qualname
