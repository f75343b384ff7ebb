"""Micro-benchmark of the core stepper and the asyncio runtime. Prints figures, asserts nothing.

Usage::

    .venv/bin/python bench/core_bench.py            # all figures
    .venv/bin/python bench/core_bench.py --profile  # plus a cProfile of the hot paths

Stepper figures drive a bare :class:`Stepper` by hand (no loop, no threads):
(a) an input whose handler returns at once, (b) one suspension and resume
(a ``Call`` started, then completed), (c) one journal ``Append`` (started,
completed, applied). Runtime figures push inputs through :class:`Runtime`
with the in-memory journal (appends complete at once on the loop thread), from
1 submitter and from 1000 concurrent submitters.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from collections.abc import Callable
from typing import Any

from corosm.core import Context, InputArrived, IOCompleted, Machine, Stepper
from corosm.runtime import Runtime, run


def noop() -> None:
    """The 'blocking call' of benchmark (b); the stepper never runs it."""


class Bench(Machine[dict[int, int], tuple[str, int], int]):
    def initial_state(self) -> dict[int, int]:
        return {}

    async def handle(self, ctx: Context[dict[int, int]], input: tuple[str, int]) -> int:
        kind, n = input
        if kind == "call":
            await ctx.call(noop)
        elif kind == "append":
            await ctx.append((n & 1023, n))
        return n

    def apply(self, state: dict[int, int], record: Any) -> dict[int, int]:
        state[record[0]] = record[1]  # in place: a store's apply mutates its own state
        return state


def per_input_us(body: Callable[[int], None], n: int) -> float:
    body(min(n, 1000))  # warm up
    start = time.perf_counter()
    body(n)
    return (time.perf_counter() - start) / n * 1e6


def stepper_immediate(n: int) -> None:
    stepper = Stepper(Bench())
    for i in range(n):
        stepper.input(i, ("now", i))
        stepper.take_actions()


def stepper_suspend(kind: str) -> Callable[[int], None]:
    def body(n: int) -> None:
        stepper = Stepper(Bench())
        for i in range(n):
            [start] = stepper.feed(InputArrived(i, (kind, i)))
            stepper.feed(IOCompleted(start.request, i))  # type: ignore[union-attr]

    return body


async def runtime_throughput(submitters: int, total: int) -> float:
    per_submitter = total // submitters
    async with Runtime(Bench(), max_queue=100_000, max_inflight=100_000) as rt:

        async def submitter(base: int) -> None:
            for i in range(per_submitter):
                await rt.submit(("append", base + i))

        await asyncio.gather(*(submitter(s * per_submitter) for s in range(min(submitters, 10))))
        start = time.perf_counter()
        await asyncio.gather(*(submitter(s * per_submitter) for s in range(submitters)))
        elapsed = time.perf_counter() - start
        turns = rt.stats()["turns"]
    print(f"    ({turns:.0f} loop turns in total)")
    return per_submitter * submitters / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200_000, help="inputs per stepper figure")
    parser.add_argument("--runtime-n", type=int, default=100_000, help="inputs per runtime figure")
    parser.add_argument("--profile", action="store_true", help="cProfile the hot paths")
    args = parser.parse_args()

    print(f"stepper, {args.n} inputs each:")
    for label, body in (
        ("(a) returns at once", stepper_immediate),
        ("(b) one suspend + resume", stepper_suspend("call")),
        ("(c) one append + apply", stepper_suspend("append")),
    ):
        print(f"  {label:26s}{per_input_us(body, args.n):6.2f} us/input")
    print(f"runtime (uvloop when installed), in-memory journal, {args.runtime_n} appends each:")
    for submitters in (1, 1000):
        rate = run(runtime_throughput(submitters, args.runtime_n))
        print(f"  {submitters:4d} submitter(s)          {rate:9,.0f} inputs/s")

    if args.profile:
        for name, call in (
            ("stepper (b)", lambda: stepper_suspend("call")(args.n)),
            ("runtime, 1000 submitters", lambda: run(runtime_throughput(1000, args.runtime_n))),
        ):
            profiler = cProfile.Profile()
            profiler.runcall(call)
            print(f"\n--- profile: {name} (top 12 by own time) ---")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
