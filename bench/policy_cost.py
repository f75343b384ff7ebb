"""Writes per second through a bare Stepper with a fake journal whose fsync takes 1 ms.

The journal group-commits, as corosm's does: every append started while the
previous fsync ran goes into the next one. 64 clients in a closed loop each
send a read-modify-write increment (read, append, reply) of a random key as
soon as their previous one is answered. Wall-clock rate; one thread.

    .venv/bin/python bench/policy_cost.py [--seconds 2] [--fsync-ms 1]
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

from corosm.core import (
    Append,
    Context,
    InputArrived,
    Keys,
    Machine,
    Policy,
    Reply,
    StartIO,
    Stepper,
)


class Counters(Machine[dict[Any, int], tuple[Any, ...], int]):
    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def initial_state(self) -> dict[Any, int]:
        return {}

    def key(self, input: tuple[Any, ...]) -> Any:
        return input[0] if len(input) == 1 else Keys(*input)

    async def handle(self, ctx: Context[dict[Any, int]], input: tuple[Any, ...]) -> int:
        record = tuple((k, ctx.state.get(k, 0) + 1) for k in input)  # read every key ...
        await ctx.append(record)  # ... suspend, write what was read
        return record[0][1]

    def apply(self, state: dict[Any, int], record: Any) -> dict[Any, int]:
        state.update(record)
        return state


def run(
    policy: Policy, keys: int, per_input: int, seconds: float, fsync_s: float
) -> tuple[float, float, float]:
    rng = random.Random(1)
    stepper = Stepper(Counters(policy))

    def new_input() -> tuple[Any, ...]:
        if per_input == 1:
            return (rng.randrange(keys),)
        return tuple(rng.sample(range(keys), per_input))

    batch: list[int] = []
    actions = stepper.feed(*(InputArrived(client, new_input()) for client in range(64)))
    writes = fsyncs = 0
    cpu = 0.0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch.extend(a.request for a in actions if type(a) is StartIO and type(a.effect) is Append)
        actions = []
        time.sleep(fsync_s)  # the batch's one fsync
        fsyncs += 1
        done, batch = batch, []
        t0 = time.thread_time()
        for lsn, request in enumerate(done):
            stepper.complete(request, lsn, None)
        writes += len(done)
        for action in stepper.take_actions():
            if type(action) is Reply:  # the client sends its next write at once
                stepper.input(action.client, new_input())
            else:
                actions.append(action)
        actions += stepper.take_actions()
        cpu += time.thread_time() - t0
    elapsed = time.perf_counter() - start
    return writes / elapsed, writes / fsyncs, cpu / writes * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--fsync-ms", type=float, default=1.0)
    args = ap.parse_args()
    for label, policy, keys, per_input in (
        ("INTERLEAVE, 1000 keys", Policy.INTERLEAVE, 1000, 1),
        ("PER_KEY, 1000 keys", Policy.PER_KEY, 1000, 1),
        ("PER_KEY, Keys(a, b) of 1000", Policy.PER_KEY, 1000, 2),
        ("PER_KEY, one hot key", Policy.PER_KEY, 1, 1),
        ("EXCLUSIVE, 1000 keys", Policy.EXCLUSIVE, 1000, 1),
    ):
        rate, per_fsync, cpu_us = run(policy, keys, per_input, args.seconds, args.fsync_ms / 1000)
        print(
            f"{label:30s} {rate:9,.0f} writes/s  {per_fsync:5.1f} writes per fsync"
            f"  {cpu_us:5.1f} us CPU per write"
        )


if __name__ == "__main__":
    main()
