"""Sharded machines: one machine as N durable hosts, partitioned by a stable hash of its key.

A machine whose ``key()`` is defined can run as N shards, each a corosm host
with its own journal in ``DATA/shard-NNNN``; an input goes to the shard of
its key (:mod:`.routing`), and one whose keys span shards, or that has no
key, is refused. The layout is kept in ``DATA/shards.json`` (:mod:`.manifest`);
re-sharding is an offline copy for machines whose state splits by key
(:mod:`.reshard`).

Modules, inner to outer (none of them imports Ray except :mod:`.ray`):

=================  ===========================================================
``errors``         the exceptions, drawn as a tree
``routing``        the stable hash, the shard of a key, :class:`Router`
``manifest``       the layout on disk: manifest, shard directories, markers
``order``          a caller's batches in order, then its inputs in order per key
``host``           :class:`ShardHost`: one shard's recovery, runtime and ordering
``client``         :class:`ShardedClient`: routing, batching per shard, failures
``local``          the shards in this process (:func:`open_local`): tests, one core
``ray``            the shards as Ray actors (:func:`corosm.shards.ray.open`)
``reshard``        ``python -m corosm.shards reshard``: change the shard count offline
=================  ===========================================================

docs/scaling.md says which to pick when, what it costs, and what a lost node
loses.
"""

from corosm.shards.client import Limits, ShardedClient, Transport
from corosm.shards.errors import (
    CrossShardInput,
    OutcomeUnknown,
    ShardError,
    ShardFailed,
    ShardingError,
    ShardLayoutMismatch,
    ShardUnavailable,
    UnkeyedInput,
    UnshardableKey,
)
from corosm.shards.host import ShardHost, ShardSpec
from corosm.shards.local import open_local, start_local
from corosm.shards.manifest import Layout, check_layout, read_layout, shard_dir
from corosm.shards.reshard import Splittable, reshard
from corosm.shards.routing import HASH_NAME, Router, encode_key, shard_of, stable_hash

__all__ = [
    "HASH_NAME",
    "CrossShardInput",
    "Layout",
    "Limits",
    "OutcomeUnknown",
    "Router",
    "ShardError",
    "ShardFailed",
    "ShardHost",
    "ShardLayoutMismatch",
    "ShardSpec",
    "ShardUnavailable",
    "ShardedClient",
    "ShardingError",
    "Splittable",
    "Transport",
    "UnkeyedInput",
    "UnshardableKey",
    "check_layout",
    "encode_key",
    "open_local",
    "read_layout",
    "reshard",
    "shard_dir",
    "shard_of",
    "stable_hash",
    "start_local",
]
