"""What the in-process profiles share: a fake transport and the command line.

``profile_http_path.py`` and ``profile_resp_path.py`` feed raw request bytes
to a front end's protocol object on a real loop, with :class:`CountingTransport`
in place of a socket, and report CPU microseconds per request:
:class:`ClosedLoop` drives the rounds (every connection sends, then every
reply is awaited, as wrk and redis-benchmark do), and :func:`main` is their
command line (scenarios, pipelining depths, ``--profile``,
``--only``), each script giving its own ``measure`` coroutine.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

from corosm.runtime import run

Measure = Callable[[str, int, int, int], Coroutine[Any, Any, float]]
"""``measure(kind, conns, pipeline, rounds)``: CPU microseconds per request."""


class CountingTransport:
    """Enough of an asyncio transport for a front end's protocol; hands on what is written."""

    def __init__(self, on_write: Callable[[bytes], None]) -> None:
        self._on_write = on_write

    def write(self, data: bytes) -> None:
        self._on_write(data)

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def write_eof(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True


class ClosedLoop:
    """Rounds of a closed loop over some connections, timed in CPU seconds.

    ``owed(data)`` says how much of a round's replies ``data`` carries (a
    count of replies, or of bytes): a round ends when ``per_round`` of it
    has been written back. Give each connection :meth:`transport`.
    """

    def __init__(self, owed: Callable[[bytes], int], per_round: int) -> None:
        self._owed = owed
        self._per_round = per_round
        self._left = 0
        self._done: asyncio.Future[None] | None = None

    def transport(self) -> CountingTransport:
        return CountingTransport(self._on_write)

    def _on_write(self, data: bytes) -> None:
        self._left -= self._owed(data)
        if self._left == 0 and self._done is not None and not self._done.done():
            self._done.set_result(None)

    async def cpu_seconds(self, connections: Sequence[Any], burst: bytes, rounds: int) -> float:
        """Feed ``burst`` to every connection, await every reply; ``rounds`` times."""
        loop = asyncio.get_running_loop()
        started = time.process_time()
        for _ in range(rounds):
            self._left = self._per_round
            self._done = loop.create_future()
            for conn in connections:
                conn.data_received(burst)
            if self._left:
                await self._done
        return time.process_time() - started


def main(doc: str, kinds: Iterable[str], measure: Measure, *, conns: int, unit: str) -> None:
    """The command line of an in-process profile (see the module docs)."""
    kinds = sorted(kinds)
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--conns", type=int, default=conns)
    ap.add_argument("--pipeline", type=int, nargs="*", default=[1, 16])
    ap.add_argument("--requests", type=int, default=64_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", choices=kinds)
    ap.add_argument("--only", choices=kinds, nargs="*", help="these scenarios alone")
    args = ap.parse_args()
    if args.profile:
        depth = args.pipeline[0]
        rounds = args.requests // (args.conns * depth)
        prof = cProfile.Profile()
        prof.enable()
        run(measure(args.profile, args.conns, depth, rounds))
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return
    for depth in args.pipeline:
        rounds = max(1, args.requests // (args.conns * depth))
        for kind in args.only or kinds:
            best = min(run(measure(kind, args.conns, depth, rounds)) for _ in range(args.repeat))
            print(f"{kind:6s} {args.conns} conns, pipeline {depth:2d}: {best:6.2f} us CPU/{unit}")
