"""A user's first machine: a job queue with a limit, for ``--machine``.

Served by ``corosm serve --machine tests.machines.jobqueue:JobQueue`` (with
the repository's root on ``PYTHONPATH``). Written as a newcomer would after
reading docs/serving.md: frozen dataclasses for inputs and outputs, a float
and a free-form ``dict[str, Any]`` among the fields, a JSON journal record
per change, ``apply`` replaying it live and on recovery.

``PushThenFail`` is the probe of the failure paths: it journals a push like
``Push`` and then, after the append is durable, returns what the codec
cannot encode (``how``: ``"set"``, ``"object"``, ``"bytes"``, ``"nan"``) or
raises (anything else). The push must survive a restart all the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from corosm import Context, Machine, Order, Policy

Jobs = list[tuple[str, float]]


@dataclass(frozen=True)
class Push:
    name: str
    weight: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Pop:
    pass


@dataclass(frozen=True)
class Size:
    pass


@dataclass(frozen=True)
class PushThenFail:
    name: str
    how: str


@dataclass(frozen=True)
class Count:
    size: int


@dataclass(frozen=True)
class Job:
    name: str
    weight: float


@dataclass(frozen=True)
class Full:
    limit: int


@dataclass(frozen=True)
class Empty:
    pass


QueueInput = Push | Pop | Size | PushThenFail
QueueOutput = Count | Job | Full | Empty


class JobQueue(Machine[Jobs, QueueInput, QueueOutput]):
    # A pop reads the head, then journals: no other input in between.
    policy = Policy.EXCLUSIVE
    limit = 100

    def order(self, input: QueueInput) -> Order:
        return Order.READ if isinstance(input, Size) else Order.LOGGED

    def initial_state(self) -> Jobs:
        return []

    def apply(self, state: Jobs, record: bytes) -> Jobs:
        change = json.loads(record)
        if change[0] == "push":
            state.append((change[1], change[2]))
        else:
            del state[0]
        return state

    async def handle(self, ctx: Context[Jobs], input: QueueInput) -> QueueOutput:
        match input:
            case Push(name, weight):
                return await self._push(ctx, name, weight)
            case PushThenFail(name, how):
                await self._push(ctx, name, 1.0)
                return _fail(name, how)
            case Pop():
                if not ctx.state:
                    return Empty()
                name, weight = ctx.state[0]
                await ctx.append(b'["pop"]')
                return Job(name, weight)
            case Size():
                return Count(len(ctx.state))

    async def _push(self, ctx: Context[Jobs], name: str, weight: float) -> Count | Full:
        if len(ctx.state) >= self.limit:
            return Full(self.limit)
        await ctx.append(json.dumps(["push", name, weight]).encode())
        return Count(len(ctx.state))


def _fail(name: str, how: str) -> Any:
    unencodable: dict[str, Any] = {
        "set": {1, 2},
        "object": object(),
        "bytes": b"\xff",
        "nan": Job(name, float("nan")),
    }
    if how in unencodable:
        return unencodable[how]
    raise RuntimeError(f"failed after the append of {name}")
