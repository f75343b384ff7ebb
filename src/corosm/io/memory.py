"""A journal that keeps nothing: appends complete at once, in order.

For machines that need no durability (examples, tests, benchmarks of the
machine alone). Every append completes with its log sequence number, in the
order submitted, exactly like the durable journal minus the disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from corosm.core.effects import Effect
from corosm.errors import UsageError
from corosm.io.executor import Completion, CompletionSink


class MemoryJournalExecutor:
    """Completes ``Append`` effects immediately, in order, with increasing LSNs."""

    def __init__(self) -> None:
        self._sink: CompletionSink | None = None
        self.next_lsn = 1

    def start(self, sink: CompletionSink) -> None:
        self._sink = sink

    def submit(self, requests: Sequence[tuple[int, Effect[Any]]]) -> None:
        if self._sink is None:
            raise UsageError("MemoryJournalExecutor.submit() before start()")
        completions: list[Completion] = []
        for request, _effect in requests:
            completions.append((request, self.next_lsn, None))
            self.next_lsn += 1
        self._sink(completions)

    def cancel(self, request: int) -> None:
        """Appends are never cancelled."""

    def close(self) -> None:
        self._sink = None
