"""The executor interface: how effects reach the code that carries them out.

An executor takes started effects from the loop thread and later reports
their completions. Executors that use threads (the journal, the thread pool)
must hand completions back through the ``sink`` in batches: one call per
batch of finished requests, never one per item, so that the loop thread is
woken once per batch. The sink is thread-safe.

Lifecycle: ``start(sink)`` once, then any number of ``submit`` and ``cancel``
calls from the loop thread, then ``close()``, which finishes (or fails) what
was submitted and joins any threads (except one still running a call that
cannot be interrupted: see :mod:`corosm.io.threads`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from corosm.core.effects import Effect

Completion = tuple[int, Any, BaseException | None]
"""``(request, value, error)``: ``error`` is None on success."""

CompletionSink = Callable[[Sequence[Completion]], None]
"""Posts a batch of completions to the loop thread. Safe to call from any thread."""


class Executor(Protocol):
    """Carries out one or more kinds of effect."""

    def start(self, sink: CompletionSink) -> None:
        """Begin accepting work; report completions through ``sink``."""

    def submit(self, requests: Sequence[tuple[int, Effect[Any]]]) -> None:
        """Start ``requests`` (called on the loop thread, once per loop iteration).

        All or nothing: a request that cannot be carried out (a wrong effect
        type, a record that does not encode, a thread that cannot start) gets
        an error completion through the sink, now or later, and the others go
        on; ``submit`` raises only having accepted none of ``requests`` (e.g.
        before ``start``). The host then fails every one of them with that
        error. An executor that raises after accepting some breaks this, and
        the host cannot tell which: it fails them all the same, and each
        request's handler sees whichever completion comes first (the other
        is ignored), so it may hear of a failure while its effect runs, or,
        for an ``Append``, a record may reach the journal that the live
        state never applies.
        """

    def cancel(self, request: int) -> None:
        """Best effort: stop ``request`` if it has not started. Its completion may still come."""

    def close(self) -> None:
        """Finish or fail everything submitted, then release threads and files."""
