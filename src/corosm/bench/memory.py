"""Memory scenario: resident set size against keys and against suspended handlers.

Theory of operation
-------------------
Each figure is measured in a fresh process (``python -m corosm.bench.memory
keys N`` or ``... suspended N``), so one point's garbage does not inflate
the next. The process reports its VmRSS before and after building the load,
as one JSON line.

*Keys*: the key-value machine's state is built through ``apply`` (the code
recovery runs), with ``Put(b"k<i>", b"<i>")`` records as the seed's
``Write "k<i>" <i>`` makes them.

*Suspended handlers*: a :class:`~corosm.runtime.Runtime` runs a machine
whose handler awaits a ``Park`` effect; the benchmark's executor holds every
``Park`` until all N handlers are suspended (the runtime's ``suspended``
gauge says so), the RSS is read, then all are released and must answer.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from corosm.core.context import Context
from corosm.core.effects import Effect
from corosm.core.machine import Machine
from corosm.errors import UsageError
from corosm.io.executor import Completion, CompletionSink


def vm_rss_bytes() -> int:
    """This process's resident set size, from /proc/self/status."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise UsageError("/proc/self/status has no VmRSS line (not Linux?)")


def rss_with_keys(count: int) -> dict[str, float]:
    """RSS before and after the key-value state holds ``count`` keys."""
    from corosm.apps.kv.machine import KVMachine
    from corosm.apps.kv.records import Put

    machine = KVMachine()
    before = vm_rss_bytes()
    state = machine.initial_state()
    for i in range(count):
        state = machine.apply(state, Put(b"k%d" % i, b"%d" % i))
    after = vm_rss_bytes()
    return {"count": count, "rss_before": before, "rss_after": after}


@dataclass(frozen=True, slots=True)
class Park(Effect[int]):
    """Suspends its handler until the benchmark releases it."""


class ParkingMachine(Machine[int, int, int]):
    """Every input suspends once on ``Park`` and then returns its own number."""

    def initial_state(self) -> int:
        return 0

    async def handle(self, ctx: Context[int], input: int) -> int:
        await ctx.perform(Park())
        return input


class ParkingExecutor:
    """Holds every ``Park`` request until :meth:`release_all`."""

    def __init__(self) -> None:
        self._sink: CompletionSink | None = None
        self.held: list[int] = []

    def start(self, sink: CompletionSink) -> None:
        self._sink = sink

    def submit(self, requests: Sequence[tuple[int, Effect[Any]]]) -> None:
        self.held.extend(request for request, _ in requests)

    def cancel(self, request: int) -> None:
        """Parked handlers are never cancelled here."""

    def close(self) -> None:
        self.release_all()

    def release_all(self) -> None:
        """Complete every held request, in one batch."""
        if self._sink is not None and self.held:
            batch: list[Completion] = [(request, 0, None) for request in self.held]
            self.held = []
            self._sink(batch)


async def rss_with_suspended(count: int, timeout: float = 120.0) -> dict[str, float]:
    """RSS before and while ``count`` handlers are suspended on one runtime."""
    from corosm.runtime import Runtime

    executor = ParkingExecutor()
    runtime: Runtime[int, int, int] = Runtime(
        ParkingMachine(),
        executors={Park: executor},
        max_queue=count + 1,
        max_inflight=count + 1,
    )
    await runtime.start()
    before = vm_rss_bytes()
    futures = [runtime.submit_nowait(i) for i in range(count)]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while runtime.stats()["suspended"] < count:
        if loop.time() > deadline:
            raise UsageError(f"only {runtime.stats()['suspended']} of {count} handlers suspended")
        await asyncio.sleep(0.01)  # the runtime admits inputs over a few turns
    during = vm_rss_bytes()
    executor.release_all()
    answers = await asyncio.wait_for(asyncio.gather(*futures), timeout)
    await runtime.stop()
    if answers != list(range(count)):
        raise UsageError("released handlers answered wrongly")
    return {"count": count, "rss_before": before, "rss_after": during}


def main(argv: Sequence[str]) -> int:
    """``keys N`` or ``suspended N``: print one JSON line with the RSS figures."""
    if len(argv) != 2 or argv[0] not in {"keys", "suspended"} or not argv[1].isdigit():
        print("usage: python -m corosm.bench.memory keys|suspended N", file=sys.stderr)
        return 2
    count = int(argv[1])
    if argv[0] == "keys":
        result = rss_with_keys(count)
    else:
        from corosm.runtime import run

        result = run(rss_with_suspended(count))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
