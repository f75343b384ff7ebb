"""The key-value machine's simulation spec: workload, reference model, observer.

Theory of operation
-------------------
The model is the KV engineer's sequential reference,
:func:`corosm.apps.kv.model.step` on :class:`~corosm.apps.kv.model.ModelState`
(hashable, as the checker needs), split per key by
:func:`~corosm.apps.kv.model.partition_key`. ``observe`` turns a recovered
:class:`KVState` into a ``ModelState`` so the checker can tell whether a
crash lost an acknowledged change.

The workload uses few keys and small values so that clients collide:
concurrent writes, increments, appends and conditional sets of the same key
are what exposes ordering bugs. It draws every input the model supports;
multi-key inputs (``Reset``, ``WriteMany``, ``DeleteMany``, ``Size``...) are
rare, because one of them makes the checker take the history whole instead of
key by key. ``KV_SPEC`` is what ``corosm sim`` runs by default.
"""

from __future__ import annotations

import random
from typing import Any

from corosm.apps.kv import inputs as kv
from corosm.apps.kv.machine import KVMachine
from corosm.apps.kv.model import EMPTY, ModelState, partition_key, step
from corosm.apps.kv.state import KVState
from corosm.testing.sim.campaign import SimSpec
from corosm.testing.sim.faults import FaultPlan

KEYS = (b"a", b"b")


def _value(rng: random.Random) -> bytes:
    # Mostly small integers (so IncrBy works), sometimes not (so it fails).
    return b"x" if rng.random() < 0.1 else str(rng.randrange(10)).encode()


def kv_workload(rng: random.Random) -> Any:
    """One input: mostly single-key writes, reads and updates on two keys."""
    key = rng.choice(KEYS)
    roll = rng.random()
    if roll < 0.25:
        return kv.Write(key, _value(rng))
    if roll < 0.45:
        return kv.Read(key)
    if roll < 0.6:
        return kv.IncrBy(key, rng.randrange(-2, 4))
    if roll < 0.68:
        return kv.Delete(key)
    if roll < 0.76:
        nx = rng.random() < 0.5
        return kv.SetIf(key, _value(rng), nx=nx, xx=not nx and rng.random() < 0.5, return_old=True)
    if roll < 0.83:
        return kv.AppendBytes(key, _value(rng))
    if roll < 0.88:
        return kv.StrLen(key)
    if roll < 0.91:
        return kv.Exists((key,))
    return _multi_key(rng)


def _multi_key(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.3:
        return kv.WriteMany(tuple((key, _value(rng)) for key in KEYS))
    if roll < 0.5:
        return kv.ReadMany(KEYS)
    if roll < 0.65:
        return kv.DeleteMany(KEYS)
    if roll < 0.8:
        return kv.Size()
    return kv.Reset()


def kv_model_init() -> ModelState:
    return EMPTY


def kv_observe(state: KVState) -> ModelState:
    return ModelState(state.data)


KV_SPEC = SimSpec(
    machine_factory=KVMachine,
    model_init=kv_model_init,
    model_step=step,
    workload=kv_workload,
    observe=kv_observe,
    partition=partition_key,
    # Fewer handlers in flight than clients: the host's admission bound is
    # exercised (and checked after every event) in every default run.
    faults=FaultPlan(max_inflight=2),
    name="corosm.testing.sim.kv:KV_SPEC",
)
