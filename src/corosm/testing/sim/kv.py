"""The key-value machine's simulation spec: workload, reference model, observer.

Theory of operation
-------------------
Few keys and small integer values, so that clients collide: concurrent writes,
increments and deletes of the same key are what exposes ordering bugs. The
model is a plain sequential dict kept as a sorted tuple of items (hashable, as
the checker needs); ``observe`` turns a recovered :class:`KVState` into the
same form. ``KV_SPEC`` is what ``corosm sim`` runs by default.
"""

from __future__ import annotations

import random
from typing import Any

from corosm.apps.kv.inputs import Delete, IncrBy, Read, Write
from corosm.apps.kv.machine import KVMachine, KVState
from corosm.apps.kv.outputs import NOT_INTEGER, OK, Count, IntValue, Output, Value
from corosm.apps.kv.records import parse_int64
from corosm.errors import UsageError
from corosm.testing.sim.campaign import SimSpec

KEYS = (b"a", b"b")
ModelState = tuple[tuple[bytes, bytes], ...]


def kv_workload(rng: random.Random) -> Any:
    """One input: mostly writes, reads and increments on two keys."""
    key = rng.choice(KEYS)
    roll = rng.random()
    if roll < 0.35:
        return Write(key, b"x" if rng.random() < 0.1 else str(rng.randrange(10)).encode())
    if roll < 0.65:
        return Read(key)
    if roll < 0.9:
        return IncrBy(key, rng.randrange(1, 4))
    return Delete(key)


def kv_model_init() -> ModelState:
    return ()


def kv_model_step(state: ModelState, input: Any) -> tuple[ModelState, Output]:
    """The sequential key-value store, for the inputs :func:`kv_workload` makes."""
    data = dict(state)
    match input:
        case Write(key, value):
            data[key] = value
            return _freeze(data), OK
        case Read(key):
            return state, Value(data.get(key))
        case IncrBy(key, delta):
            old = data.get(key)
            current = 0 if old is None else parse_int64(old)
            if current is None:
                return state, NOT_INTEGER
            data[key] = str(current + delta).encode()
            return _freeze(data), IntValue(current + delta)
        case Delete(key):
            existed = data.pop(key, None) is not None
            return _freeze(data), Count(int(existed))
    raise UsageError(f"the simulation's key-value model does not take {input!r:.80}")


def kv_observe(state: KVState) -> ModelState:
    return _freeze(state.data)


def _freeze(data: dict[bytes, bytes]) -> ModelState:
    return tuple(sorted(data.items()))


KV_SPEC = SimSpec(
    machine_factory=KVMachine,
    model_init=kv_model_init,
    model_step=kv_model_step,
    workload=kv_workload,
    observe=kv_observe,
    name="corosm.testing.sim.kv:KV_SPEC",
)
