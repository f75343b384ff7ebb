"""Re-sharding: move a store's keys to another shard count, offline, into a new directory.

Theory of operation
-------------------
A key's shard is ``hash(key) % N``, so changing N moves most keys. No
generic machine can be split: corosm does not know which part of a state
belongs to which key. A machine that does know implements
:class:`Splittable`: ``state_items(state)`` lists the state as ``(key,
piece)`` pairs, under the same keys ``key(input)`` returns, and
``state_from_items(pairs)`` builds a state from some of them.
:class:`corosm.apps.kv.machine.KVMachine` is one.

:func:`reshard`, with every shard of the source stopped:

1. recovers each source shard (snapshot + journal, through ``apply``), one
   at a time, and deals its pairs out by the new count;
2. writes each new shard as a marker and one snapshot at LSN 0 (so it
   needs ``snapshot``/``restore``) with no journal;
3. writes the new manifest last: a target without one is an unfinished
   re-shard, and opening it is refused.

The source is left as it was (recovery may cut a torn tail, as any start
would). What it needs: the machine's split hooks and snapshots, the shards
stopped, every source shard's directory reachable from where it runs (on a
cluster, gather them first), and memory for the whole data set at once
(every pair is held until the new snapshots are written). An unsharded
``corosm.open`` directory is a valid source (one shard).

    python -m corosm.shards reshard --machine corosm.apps.kv.machine:KVMachine OLD NEW --shards 8
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from corosm.core.machine import Machine
from corosm.errors import CorosmError, UsageError
from corosm.io.journal import OSFileSystem, recover, write_snapshot
from corosm.shards.manifest import (
    Layout,
    check_shard,
    read_layout,
    shard_dir,
    write_layout,
)
from corosm.shards.routing import shard_of

S = TypeVar("S")


@runtime_checkable
class Splittable(Protocol):
    """A machine whose state splits by key (see the module docs)."""

    def state_items(self, state: Any) -> Iterable[tuple[Hashable, Any]]:
        """The state as ``(key, piece)`` pairs, keyed as ``key(input)`` keys inputs."""
        ...

    def state_from_items(self, items: Iterable[tuple[Hashable, Any]]) -> Any:
        """A state holding exactly ``items``."""
        ...


@dataclass(frozen=True, slots=True)
class ReshardReport:
    """What :func:`reshard` did."""

    source_shards: int
    target_shards: int
    items: tuple[int, ...]  # per target shard
    records_replayed: int
    seconds: float


def reshard(
    machine: Machine[Any, Any, Any],
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    shards: int,
) -> ReshardReport:
    """Copy ``source``'s state into ``target`` laid out as ``shards`` shards (module docs)."""
    t0 = time.perf_counter()
    if not isinstance(machine, Splittable):
        raise UsageError(
            f"{type(machine).__name__} cannot be re-sharded: it must define state_items() and "
            "state_from_items() (corosm.shards.reshard.Splittable) to say which key owns what"
        )
    if not machine.supports_snapshots():
        raise UsageError(f"{type(machine).__name__} cannot be re-sharded without snapshot()")
    target_dir = os.fspath(target)
    if os.path.exists(target_dir) and os.listdir(target_dir):
        raise UsageError(f"{target_dir} is not empty: re-shard into a new directory")
    buckets: list[list[tuple[Hashable, Any]]] = [[] for _ in range(shards)]
    replayed = 0
    sources = _source_dirs(os.fspath(source))
    for directory in sources:
        recovered = recover(directory, machine)
        replayed += recovered.report.records_replayed
        for key, piece in machine.state_items(recovered.state):
            buckets[shard_of(key, shards)].append((key, piece))
    layout = Layout(shards)
    fs = OSFileSystem()
    for index, bucket in enumerate(buckets):
        directory = check_shard(target_dir, index, layout, create=True)
        payload = machine.snapshot(machine.state_from_items(bucket))
        write_snapshot(fs, directory, 0, payload)
    write_layout(target_dir, layout)
    return ReshardReport(
        len(sources),
        shards,
        tuple(len(b) for b in buckets),
        replayed,
        time.perf_counter() - t0,
    )


def _source_dirs(source: str) -> list[str]:
    layout = read_layout(source)
    if layout is None:
        if not os.path.isdir(source):
            raise UsageError(f"{source} does not exist")
        return [source]  # an unsharded corosm.open directory
    for index in range(layout.shards):
        check_shard(source, index, layout, create=False)
    return [shard_dir(source, i) for i in range(layout.shards)]


def load_machine(spec: str) -> Machine[Any, Any, Any]:
    """``pkg.mod:Class`` -> an instance of that machine class."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise UsageError(
            f"--machine takes MODULE:CLASS, e.g. corosm.apps.kv.machine:KVMachine; got {spec!r}"
        )
    cls = getattr(importlib.import_module(module_name), name)
    machine = cls()
    if not isinstance(machine, Machine):
        raise UsageError(f"{spec} is not a corosm.Machine subclass")
    return machine


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m corosm.shards reshard``: see the module docs."""
    parser = argparse.ArgumentParser(
        prog="python -m corosm.shards reshard",
        description="Copy a (sharded or unsharded) corosm data directory into a new one "
        "with another shard count. Stop every shard first.",
    )
    parser.add_argument("--machine", required=True, help="MODULE:CLASS of a Splittable machine")
    parser.add_argument("source", help="the data directory to read (left unchanged)")
    parser.add_argument("target", help="a new, empty directory to write")
    parser.add_argument("--shards", type=int, required=True, help="the new shard count")
    args = parser.parse_args(argv)
    try:
        if args.shards < 1:
            raise UsageError(f"--shards must be at least 1, got {args.shards}")
        report = reshard(load_machine(args.machine), args.source, args.target, args.shards)
    except (CorosmError, ImportError, AttributeError) as exc:
        print(f"reshard: {exc}", file=sys.stderr)
        return 2
    print(
        f"re-sharded {report.source_shards} shard(s) into {report.target_shards} in "
        f"{report.seconds:.2f} s ({report.records_replayed} journal records replayed); "
        f"items per shard: {list(report.items)}"
    )
    return 0
