"""Blocking calls on worker threads: the executor for ``Call`` effects.

Each ``Call(fn, args)`` runs on a thread of a bounded pool. Completions are
posted to the sink one by one, but the runtime's sink wakes the loop only when
its inbox goes from empty to non-empty, so a burst of finished calls crosses
to the loop thread once.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence
from typing import Any

from corosm.core.effects import Call, Effect
from corosm.errors import UsageError
from corosm.io.executor import CompletionSink


class ThreadPoolCallExecutor:
    """Runs ``Call`` effects on up to ``max_workers`` threads."""

    def __init__(self, max_workers: int = 16) -> None:
        self._max_workers = max_workers
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._sink: CompletionSink | None = None
        self._running: dict[int, concurrent.futures.Future[Any]] = {}

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
            future = pool.submit(effect.fn, *effect.args)
            self._running[request] = future
            future.add_done_callback(_poster(request, sink, self._running))

    def cancel(self, request: int) -> None:
        future = self._running.pop(request, None)
        if future is not None:
            future.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _poster(
    request: int, sink: CompletionSink, running: dict[int, concurrent.futures.Future[Any]]
) -> Any:
    def post(future: concurrent.futures.Future[Any]) -> None:
        running.pop(request, None)
        if future.cancelled():
            return  # the stepper already forgot the request
        error = future.exception()
        sink([(request, None if error is not None else future.result(), error)])

    return post
