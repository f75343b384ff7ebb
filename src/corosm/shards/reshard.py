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

1. locks every source directory (the ``LOCK`` a journal takes: a shard
   still running refuses the re-shard with :class:`DataDirInUse`, and none
   can start until it is over), then recovers each source shard (snapshot +
   journal, through ``apply``), one at a time, and deals its pairs out by
   the new count;
2. writes each new shard as one snapshot at LSN 0 (so it needs
   ``snapshot``/``restore``) with no journal, then its marker;
3. writes the new manifest last: a target without one is an unfinished
   re-shard, and opening it is refused.

The source is left as it was (recovery may cut a torn tail, as any start
would). A re-shard that fails removes what it wrote, so it can simply run
again; one that was killed leaves an unfinished target, which a new run
refuses by name (delete it first). What it needs: the machine's split hooks
and snapshots, the shards stopped, every source shard's directory reachable
from where it runs (on a cluster, gather them first), and memory for the
whole data set at once (every pair is held until the new snapshots are
written). An unsharded ``corosm.open`` directory is a valid source (one
shard); one shard's directory alone is not (the other shards' keys would be
missing), nor is a directory without corosm data. The same count as the
source's makes a compacted copy.

    python -m corosm.shards reshard --machine corosm.apps.kv.machine:KVMachine OLD NEW --shards 8
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from corosm.core.machine import Machine
from corosm.errors import CorosmError, UsageError
from corosm.io.journal import DirLock, OSFileSystem, recover, write_snapshot
from corosm.shards.errors import ShardLayoutMismatch
from corosm.shards.manifest import (
    MANIFEST,
    MARKER,
    Layout,
    check_shard,
    data_path,
    holds_journal,
    holds_shard_dirs,
    read_layout,
    shard_dir,
    write_layout,
    write_marker,
)
from corosm.shards.routing import check_machine, shard_of

S = TypeVar("S")

#: Exit codes of the command line: done, the data or the disk failed it, a usage error,
#: interrupted (SIGINT: the shell's convention).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

PROG = "python -m corosm.shards reshard"


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
    layout = Layout(shards)
    split = _splittable(machine)
    source_dir, target_dir = data_path(source, "source"), data_path(target, "target")
    _check_target(target_dir)
    sources = _source_dirs(source_dir)
    with contextlib.ExitStack() as locks:
        for directory in sources:  # before anything is read; held until the copy is whole
            locks.callback(DirLock.acquire(directory).release)
        buckets: list[list[tuple[Hashable, Any]]] = [[] for _ in range(shards)]
        replayed = 0
        for directory in sources:
            recovered = recover(directory, machine)
            replayed += recovered.report.records_replayed
            for key, piece in split.state_items(recovered.state):
                buckets[shard_of(key, shards)].append((key, piece))
        _write_target(machine, split, target_dir, layout, buckets)
    return ReshardReport(
        len(sources),
        shards,
        tuple(len(b) for b in buckets),
        replayed,
        time.perf_counter() - t0,
    )


def _splittable(machine: Machine[Any, Any, Any]) -> Splittable:
    """``machine``, if it can be re-sharded (else a UsageError saying what it lacks)."""
    check_machine(machine)
    if not isinstance(machine, Splittable):
        raise UsageError(
            f"{type(machine).__name__} cannot be re-sharded: it must define state_items() and "
            "state_from_items() (corosm.shards.reshard.Splittable) to say which key owns what"
        )
    if not machine.supports_snapshots():
        raise UsageError(f"{type(machine).__name__} cannot be re-sharded without snapshot()")
    return machine


def _check_target(target: str) -> None:
    """The target must be new: missing, or an empty directory."""
    if not os.path.exists(target):
        return
    if not os.path.isdir(target):
        raise UsageError(f"target {target} is not a directory: re-shard into a new directory")
    names = os.listdir(target)
    if not names:
        return
    if MANIFEST in names:
        what = f"it holds a sharded store ({MANIFEST}): re-shard into a new directory"
    elif holds_shard_dirs(target):
        what = (
            f"it holds an unfinished re-shard (shard directories but no {MANIFEST}): delete "
            "it, then run again"
        )
    else:
        what = "re-shard into a new directory"
    raise UsageError(f"target {target} is not empty: {what}")


def _source_dirs(source: str) -> list[str]:
    """The directories to read: every shard of a sharded store, or one unsharded host's."""
    layout = read_layout(source)
    if layout is not None:
        for index in range(layout.shards):
            check_shard(source, index, layout, create=False)
        return [shard_dir(source, i) for i in range(layout.shards)]
    if not os.path.isdir(source):
        raise UsageError(f"source {source} does not exist (or is not a directory)")
    if os.path.exists(os.path.join(source, MARKER)):
        raise UsageError(
            f"source {source} is one shard of a store ({MARKER}): re-shard the store's "
            f"directory, {os.path.dirname(os.path.abspath(source))}, or the other shards' "
            "keys would be missing"
        )
    if holds_shard_dirs(source):
        raise ShardLayoutMismatch(
            f"source {source} holds shard directories but no {MANIFEST}: an unfinished "
            "re-shard or a damaged store, not one to read"
        )
    if not holds_journal(source):
        raise UsageError(
            f"source {source} holds no corosm data (no {MANIFEST}, journal or snapshot): "
            "nothing to re-shard"
        )
    return [source]  # an unsharded corosm.open directory


def _write_target(
    machine: Machine[Any, Any, Any],
    split: Splittable,
    target: str,
    layout: Layout,
    buckets: list[list[tuple[Hashable, Any]]],
) -> None:
    """Write the new shards, then the manifest; on any failure remove what was written."""
    made_target = not os.path.exists(target)
    made: list[str] = []
    fs = OSFileSystem()
    try:
        for index, bucket in enumerate(buckets):
            directory = shard_dir(target, index)
            os.makedirs(directory)  # the target was empty: nobody else's
            made.append(directory)
            write_snapshot(fs, directory, 0, machine.snapshot(split.state_from_items(bucket)))
            # The marker after the snapshot: a marker alone says "a new shard, nothing in it".
            write_marker(target, index, layout)
        write_layout(target, layout)
    except BaseException:
        for directory in made:
            shutil.rmtree(directory, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.remove(os.path.join(target, MANIFEST))
        if made_target:
            with contextlib.suppress(OSError):
                os.rmdir(target)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m corosm.shards reshard``: see the module docs."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Copy a (sharded or unsharded) corosm data directory into a new one "
        "with another shard count. Stop every shard first.",
        epilog="exit codes: 0 done; 1 the source's data, a source in use or the disk failed "
        "it (what it wrote is removed: run it again once that is fixed); 2 a usage error "
        "(bad arguments, a source that is not a store, a target that is not empty); 130 "
        "interrupted (what it wrote is removed)",
    )
    parser.add_argument("--machine", required=True, help="MODULE:CLASS of a Splittable machine")
    parser.add_argument("source", help="the data directory to read (left unchanged)")
    parser.add_argument("target", help="a new, empty directory to write")
    parser.add_argument("--shards", type=int, required=True, help="the new shard count")
    args = parser.parse_args(argv)
    from corosm.server import load_machine  # the CLI's one machine loader (and its messages)

    try:
        report = reshard(load_machine(args.machine, PROG), args.source, args.target, args.shards)
    except UsageError as exc:
        print(f"reshard: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (CorosmError, OSError) as exc:
        print(f"reshard: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("reshard: interrupted; what it wrote is removed", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(
        f"re-sharded {report.source_shards} shard(s) into {report.target_shards} in "
        f"{report.seconds:.2f} s ({report.records_replayed} journal records replayed); "
        f"items per shard: {list(report.items)}"
    )
    return EXIT_OK
